"""The trainer's MNConfig (issue 11): built once, logged at the start of training, saved in the checkpoint, and on
--c compared with the saved one (a changed setting refused with its name, an older checkpoint accepted)."""
import pytest
import torch

from nnunetv2_mn.mn.config import CHECKPOINT_KEY, MNConfig
from nnunetv2_mn.trainers import nnUNetTrainerMN_debug


class _Changed(nnUNetTrainerMN_debug):
    weight_kl = 0.5
    sampling_kwargs = {"ratio": 0.25}


def _saved(make_trainer, tmp_path, cls=nnUNetTrainerMN_debug):
    trainer = make_trainer(cls)
    trainer.initialize()
    path = str(tmp_path / "ckpt.pth")
    trainer.save_checkpoint(path)
    return trainer, path


def test_trainer_builds_its_config_once(make_trainer):
    trainer = make_trainer(nnUNetTrainerMN_debug)
    assert trainer.mn_config == MNConfig.from_trainer(nnUNetTrainerMN_debug)
    assert trainer.slice_axes == trainer.mn_config.slice_axes == (trainer.slice_axis,)


def test_config_is_logged_and_saved_as_a_plain_dict(make_trainer, tmp_path):
    trainer, path = _saved(make_trainer, tmp_path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert checkpoint[CHECKPOINT_KEY] == trainer.mn_config.as_dict()
    assert MNConfig.from_dict(checkpoint[CHECKPOINT_KEY]) == trainer.mn_config
    logged = []
    trainer.print_to_log_file = lambda *args, **kwargs: logged.append(" ".join(map(str, args)))
    trainer.on_train_start()
    try:
        block = next(text for text in logged if text.startswith("M&N configuration of nnUNetTrainerMN_debug:"))
        assert "weight_kl" in block and "stage2_students" in block and "'epochs'" in block
    finally:
        trainer.on_train_end()


def test_resume_with_the_same_settings(make_trainer, tmp_path):
    trainer, path = _saved(make_trainer, tmp_path)
    make_trainer(nnUNetTrainerMN_debug).load_checkpoint(path)


def test_resume_with_changed_settings_is_refused_naming_each_key(make_trainer, tmp_path):
    _, path = _saved(make_trainer, tmp_path)
    with pytest.raises(RuntimeError) as info:
        make_trainer(_Changed).load_checkpoint(path)
    message = str(info.value)
    assert "weight_kl: checkpoint 1.0, this trainer 0.5" in message
    assert "sampling_kwargs: checkpoint {'ratio': 0.5}, this trainer {'ratio': 0.25}" in message
    assert "nnUNetTrainerMN_debug" in message and "without --c" in message
    assert "stage1_fraction" not in message  # only what differs


def test_old_checkpoint_without_config_is_accepted(make_trainer, tmp_path):
    _, path = _saved(make_trainer, tmp_path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    del checkpoint[CHECKPOINT_KEY]
    torch.save(checkpoint, path)
    resumed = make_trainer(_Changed)  # nothing to compare with: resumes with its own settings
    logged = []
    resumed.print_to_log_file = lambda *args, **kwargs: logged.append(" ".join(map(str, args)))
    resumed.load_checkpoint(path)
    assert any("holds no M&N configuration" in line for line in logged)
