"""MNConfig (issue 11): the M&N settings gathered from a trainer class, validated once, saved and compared (pure)."""
import dataclasses

import pytest

from nnunetv2_mn.mn.config import MNConfig, check_device, resume_mismatch_message
from nnunetv2_mn.trainers import (nnUNetTrainerMN, nnUNetTrainerMN_CPUbf16, nnUNetTrainerMN_PaperOptim,
                                  nnUNetTrainerMN_TriPlanar, nnUNetTrainerMN_TriPlanarDiceWeighted)


def _with(**changes):
    return type("Variant", (nnUNetTrainerMN,), changes)


def test_fields_have_no_defaults_and_come_from_the_trainer_attributes():
    assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
               for f in dataclasses.fields(MNConfig))
    config = MNConfig.from_trainer(nnUNetTrainerMN)
    for name in MNConfig.field_names():
        if name != "slice_axes":
            assert getattr(config, name) == getattr(nnUNetTrainerMN, name), name
    assert config.slice_axes == (nnUNetTrainerMN.slice_axis,)  # None resolves to the single axis
    assert MNConfig.from_trainer(nnUNetTrainerMN_TriPlanar).slice_axes == (0, 1, 2)
    assert MNConfig.from_trainer(nnUNetTrainerMN_TriPlanarDiceWeighted).view_weighting == "val_dice"
    assert MNConfig.from_trainer(nnUNetTrainerMN_CPUbf16).cpu_bf16_2d is True
    assert MNConfig.from_trainer(nnUNetTrainerMN_PaperOptim).optimizers == "paper"
    # every setting the trainer documents as an M&N class attribute is a field
    for name in ("stage2_students", "sampling", "sampling_kwargs", "sampling_rounding", "unlabeled_samples",
                 "stage1_fraction", "stage2_lr_restart", "co_training", "optimizers", "initial_lr_2d",
                 "branch2d_kind", "branch2d_source", "branch2d_config", "branch2d_finetune", "branch2d_kwargs",
                 "student2d_slice_fraction", "weight_kl", "weight_dice_unlabeled", "teacher_merge_lora",
                 "channels_last_2d", "cpu_bf16_2d", "view_weighting", "slice_axes"):
        assert name in MNConfig.field_names()


def test_config_is_frozen_and_does_not_alias_class_dicts():
    cls = _with(sampling_kwargs={"ratio": 0.5}, sampling="fixed")
    config = MNConfig.from_trainer(cls)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.weight_kl = 2.0
    config.sampling_kwargs["ratio"] = 0.9
    assert cls.sampling_kwargs == {"ratio": 0.5}


@pytest.mark.parametrize("changes, exc, match", [
    ({"optimizers": "sgd"}, ValueError, "optimizers must be 'nnunet' or 'paper'"),
    ({"optimizers": "paper", "stage2_lr_restart": False}, ValueError, "restarts at stage 2"),
    ({"student2d_slice_fraction": 0.0}, ValueError, "student2d_slice_fraction"),
    ({"slice_axes": (0, 0)}, ValueError, "slice_axes"),
    ({"slice_axes": (3,)}, ValueError, "slice_axes"),
    ({"view_weighting": "max"}, ValueError, r"view_weighting must be one of \('mean', 'val_dice'\)"),
    ({"stage1_fraction": 1.0}, ValueError, "stage1_fraction"),
    ({"stage2_students": "both"}, ValueError, "stage2_students"),
    ({"first_student": "4d"}, ValueError, "first_student"),
    ({"pseudo_mask_refresh_fraction": 0.0}, ValueError, "pseudo_mask_refresh_fraction"),
    ({"sampling": "sometimes"}, ValueError, "sampling rule"),
    ({"unlabeled_samples": "append"}, ValueError, "unlabeled_samples"),
    ({"branch2d_finetune": "head"}, ValueError, "fine-tuning strategy"),
    ({"unlabeled_foreground_bias": 1.5}, ValueError, "unlabeled_foreground_bias"),
    ({"weight_kl": -1.0}, ValueError, "weight_kl"),
    ({"initial_lr_2d": 0.0}, ValueError, "initial_lr_2d"),
    ({"teacher_slice_chunk": -1}, ValueError, "teacher_slice_chunk"),
    ({"co_training": "yes"}, ValueError, "co_training"),
])
def test_every_setting_is_checked_once(changes, exc, match):
    with pytest.raises(exc, match=match):
        MNConfig.from_trainer(_with(**changes))


def test_cpu_bf16_is_refused_on_a_gpu():
    check_device(True, "cpu", "X")
    check_device(False, "cuda", "X")
    with pytest.raises(ValueError, match="cpu_bf16_2d = True .* CPU only.*-device cpu"):
        check_device(True, "cuda", "nnUNetTrainerMN_CPUbf16")


def test_saved_dict_round_trip_and_differences():
    config = MNConfig.from_trainer(nnUNetTrainerMN_TriPlanar)
    saved = config.as_dict()
    assert saved["slice_axes"] == [0, 1, 2] and isinstance(saved["sampling_kwargs"], dict)
    assert MNConfig.from_dict(saved) == config
    assert config.differences(saved) == [] and config.missing_in(saved) == []
    other = MNConfig.from_trainer(type("V", (nnUNetTrainerMN_TriPlanar,), {"weight_kl": 0.5, "sampling": "ramp"}))
    assert sorted(other.differences(saved)) == [("sampling", "lrg", "ramp"), ("weight_kl", 1.0, 0.5)]
    # a setting the saved dict does not know (an older version) is not a difference, but is reported
    older = {k: v for k, v in saved.items() if k != "view_weighting"}
    assert config.differences(older) == [] and config.missing_in(older) == ["view_weighting"]
    message = resume_mismatch_message("nnUNetTrainerMN_X", "nnUNetTrainerMN", other.differences(saved))
    assert "weight_kl: checkpoint 1.0, this trainer 0.5" in message and "differs from this trainer" in message
    assert "-tr" not in message and "nnUNetTrainerMN)" in message and "without --c" in message


def test_describe_is_one_block_with_every_setting():
    text = MNConfig.from_trainer(nnUNetTrainerMN).describe("nnUNetTrainerMN")
    lines = text.splitlines()
    assert lines[0] == "M&N configuration of nnUNetTrainerMN:" and len(lines) == 1 + len(MNConfig.field_names())
    assert any(line.split()[0] == "stage2_students" and "'pair'" in line for line in lines[1:])
