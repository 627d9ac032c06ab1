"""MNConfig: the settings of an M&N trainer gathered into one validated, frozen object (in the spirit of peft's
`LoraConfig`).

nnU-Net style, the settings themselves stay class attributes of `nnUNetTrainerMN` (the one place for their defaults),
which variants override in a line or two. `MNConfig.from_trainer(trainer_or_class)` reads them all, and
`__post_init__` checks every one of them once, so a bad variant fails when the trainer is built, with the same
messages the trainer gave before. The trainer builds it once (`self.mn_config`), logs it at the start of training
(`describe`), saves it in its checkpoints (`as_dict`, a plain dict) and on `--c` refuses a checkpoint written with other
settings (`differences`). The Hippocampus benchmark uses its field names to tell rows apart.

The fields have no defaults on purpose: a config is always gathered from a trainer class (or rebuilt from a saved
dict), never from a second set of defaults that could drift from the trainer's.
"""
import dataclasses
import json
import math
from typing import Any, Dict, List, Optional, Tuple

from nnunetv2_mn.mn.cotraining import CoTrainingSchedule
from nnunetv2_mn.mn.slicing import VIEW_WEIGHTINGS, check_slice_axes, check_slice_fraction

OPTIMIZERS = ("nnunet", "paper")
#: the checkpoint key the trainer saves `as_dict()` under
CHECKPOINT_KEY = "mn_config"


@dataclasses.dataclass(frozen=True)
class MNConfig:
    # ---- the 2D model f and how it sees nnU-Net's patches
    branch2d_kind: str
    branch2d_source: Optional[str]
    branch2d_config: Optional[dict]
    branch2d_kwargs: dict  # the 2D branch's own settings, e.g. its LoRA rank (lora_r, lora_alpha, lora_dropout)
    branch2d_finetune: str
    slice_axes: Tuple[int, ...]  # resolved: the class's slice_axes, else (slice_axis,) (plans key mn_slice_axis)
    view_weighting: str
    teacher_slice_chunk: int
    student2d_slice_fraction: float
    # ---- how the 2D model's passes run (cost)
    teacher_merge_lora: bool
    channels_last_2d: bool
    cpu_bf16_2d: bool
    # ---- who learns when
    stage1_fraction: float
    stage2_students: str
    first_student: str
    co_training: bool
    # ---- batch composition
    sampling: str
    sampling_kwargs: dict
    sampling_rounding: str
    unlabeled_samples: str
    # ---- pseudo-foreground crops of unlabelled cases
    unlabeled_foreground_bias: float
    pseudo_mask_refresh_fraction: float
    pseudo_mask_locations_per_class: int
    # ---- losses
    weight_kl: float
    weight_dice_unlabeled: float
    # ---- optimisers and learning rates
    optimizers: str
    stage2_lr_restart: bool
    initial_lr_2d: float
    initial_lr_3d_paper: float
    weight_decay_adamw: float
    warmup_fraction: float

    def __post_init__(self):
        # normalised copies, so that the config neither aliases nor lets anyone change a class's dicts
        for name in ("branch2d_kwargs", "sampling_kwargs"):
            object.__setattr__(self, name, dict(getattr(self, name) or {}))
        if self.branch2d_config is not None:
            object.__setattr__(self, "branch2d_config", dict(self.branch2d_config))
        object.__setattr__(self, "slice_axes", check_slice_axes(self.slice_axes))
        self._validate()

    # ------------------------------------------------------------------ checks (one place)
    def _validate(self) -> None:
        from nnunetv2_mn.models2d.base import FINETUNE_STRATEGIES
        from nnunetv2_mn.training.sampling import build_sampling_rule, check_unlabeled_samples

        if self.branch2d_finetune not in FINETUNE_STRATEGIES:
            raise ValueError(f"Unknown fine-tuning strategy {self.branch2d_finetune!r}; choose one of "
                             f"{FINETUNE_STRATEGIES}.")
        if self.view_weighting not in VIEW_WEIGHTINGS:
            raise ValueError(f"view_weighting must be one of {VIEW_WEIGHTINGS} ('mean': equal weights; 'val_dice': "
                             f"each view weighted by its smoothed validation Dice), not {self.view_weighting!r}")
        if not isinstance(self.teacher_slice_chunk, int) or self.teacher_slice_chunk < 0:
            raise ValueError(f"teacher_slice_chunk must be a whole number >= 0 (0 = all slices at once), not "
                             f"{self.teacher_slice_chunk!r}")
        check_slice_fraction(self.student2d_slice_fraction, "student2d_slice_fraction")
        for name in ("teacher_merge_lora", "channels_last_2d", "cpu_bf16_2d", "co_training", "stage2_lr_restart"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, not {getattr(self, name)!r}")
        # stage1_fraction, stage2_students, first_student, pseudo_mask_refresh_fraction (the schedule's own checks)
        CoTrainingSchedule(1, self.stage1_fraction, self.stage2_students, self.first_student, self.co_training,
                           self.pseudo_mask_refresh_fraction)
        build_sampling_rule(self.sampling, self.sampling_rounding, **self.sampling_kwargs)
        check_unlabeled_samples(self.unlabeled_samples)
        if not 0.0 <= self.unlabeled_foreground_bias <= 1.0:
            raise ValueError(f"unlabeled_foreground_bias must lie in [0, 1], not {self.unlabeled_foreground_bias}")
        if not isinstance(self.pseudo_mask_locations_per_class, int) or self.pseudo_mask_locations_per_class < 1:
            raise ValueError(f"pseudo_mask_locations_per_class must be a whole number >= 1, not "
                             f"{self.pseudo_mask_locations_per_class!r}")
        for name in ("weight_kl", "weight_dice_unlabeled", "weight_decay_adamw"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, not {getattr(self, name)!r}")
        for name in ("initial_lr_2d", "initial_lr_3d_paper"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be a finite number > 0, not {getattr(self, name)!r}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must lie in [0, 1), not {self.warmup_fraction}")
        if self.optimizers not in OPTIMIZERS:
            raise ValueError(f"optimizers must be 'nnunet' or 'paper', not {self.optimizers!r}")
        if self.optimizers == "paper" and not self.stage2_lr_restart:
            raise ValueError("optimizers='paper' is the paper's schedule, which restarts at stage 2: set "
                             "stage2_lr_restart = True (or use optimizers='nnunet').")

    # ------------------------------------------------------------------ building
    @classmethod
    def field_names(cls) -> Tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_trainer(cls, trainer) -> "MNConfig":
        """The settings of an M&N trainer instance or class (its attributes; `slice_axes` None resolves to
        `(slice_axis,)`, which an instance has already read from the plans)."""
        values = {name: getattr(trainer, name) for name in cls.field_names()}
        if values["slice_axes"] is None:
            values["slice_axes"] = (int(getattr(trainer, "slice_axis", 0)),)
        return cls(**values)

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "MNConfig":
        """A config from `as_dict()` (lists back to tuples); validated like any other."""
        return cls(**{**values, "slice_axes": tuple(values["slice_axes"])})

    # ------------------------------------------------------------------ saving, comparing, logging
    def as_dict(self) -> Dict[str, Any]:
        """Plain JSON-like values (tuples as lists): what the checkpoint holds."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def differences(self, saved: Dict[str, Any]) -> List[Tuple[str, Any, Any]]:
        """(key, saved value, this config's value) of every setting that differs from a saved `as_dict()`. Keys that
        only one side has (a setting added or removed by a newer version of the package) are not compared."""
        mine = self.as_dict()
        saved = json.loads(json.dumps(saved))
        return [(k, saved[k], mine[k]) for k in mine if k in saved and saved[k] != mine[k]]

    def missing_in(self, saved: Dict[str, Any]) -> List[str]:
        """This config's settings that a saved `as_dict()` lacks (written by an older version)."""
        return [k for k in self.field_names() if k not in saved]

    def describe(self, owner: str = "") -> str:
        """One readable block: a line per setting."""
        width = max(map(len, self.field_names()))
        lines = [f"M&N configuration{' of ' + owner if owner else ''}:"]
        lines += [f"    {name.ljust(width)} = {getattr(self, name)!r}" for name in self.field_names()]
        return "\n".join(lines)


def check_device(cpu_bf16_2d: bool, device_type: str, owner: str) -> None:
    """`cpu_bf16_2d` is for CPU training only: on a GPU nnU-Net's fp16 autocast already runs the 2D model in half
    precision and a CPU bf16 setting would silently do nothing, so it is an error there."""
    if cpu_bf16_2d and device_type != "cpu":
        raise ValueError(f"{owner}: cpu_bf16_2d = True runs the 2D model under bf16 autocast on "
                         f"the CPU only; on device '{device_type}' nnU-Net's autocast already covers it. Train "
                         f"with -device cpu, or use a trainer with cpu_bf16_2d = False (e.g. nnUNetTrainerMN).")


def resume_mismatch_message(owner: str, checkpoint_trainer: Optional[str],
                            differences: List[Tuple[str, Any, Any]]) -> str:
    """Why a checkpoint written with other M&N settings cannot be resumed, and what to do instead."""
    lines = [f"Cannot resume: the checkpoint's M&N configuration differs from this trainer's ({owner}):"]
    lines += [f"    {key}: checkpoint {old!r}, this trainer {new!r}" for key, old, new in differences]
    written = f" ({checkpoint_trainer})" if checkpoint_trainer else ""
    lines.append(f"Resume with the trainer (variant) that wrote the checkpoint{written} and its settings unchanged, or "
                 f"start fresh: train without --c (nnU-Net then starts from epoch 0 and overwrites the checkpoints "
                 f"of this output folder).")
    return "\n".join(lines)
