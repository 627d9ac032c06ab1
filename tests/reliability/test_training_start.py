"""Bad labelled data and errors at training start (issue 10, items 5, 6, 9): the trainer names the case and value
before training, the error reaches the training log as one paragraph, and checkpoints load with weights_only=True."""
import glob
import os

import numpy as np
import pytest
import torch

from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
from nnunetv2_mn.data.unlabeled import UnlabeledDataError, preprocess_unlabeled

DID = "940"  # tests/reliability/conftest.py


@pytest.fixture
def ready(planned, new_trainer):
    """The copied data set with its unlabelled cases preprocessed."""
    preprocess_unlabeled(DID, num_processes=1, verbose=False)
    return {**planned, "trainer": lambda cls=None: new_trainer(planned["preprocessed"], cls)}


def _set_label(preprocessed, case, value):
    folder = str(preprocessed / "nnUNetPlans_3d_fullres")
    data, seg, _, props = nnUNetDatasetBlosc2(folder).load_case(case)
    seg = np.array(seg[:])
    seg[0, 0, 0, 0] = value
    os.remove(os.path.join(folder, case + "_seg.b2nd"))
    os.remove(os.path.join(folder, case + ".b2nd"))
    nnUNetDatasetBlosc2.save_case(np.array(data[:]), seg, props, os.path.join(folder, case))


def _log_text(results):
    logs = glob.glob(str(results / "**" / "training_log_*.txt"), recursive=True)
    assert len(logs) == 1, logs
    return open(logs[0]).read()


# ---------------------------------------------------------------- 5 + 9: out-of-range label, through nnUNetv2_train
@pytest.mark.slow
def test_out_of_range_label_stops_before_training_with_case_and_value(ready, cli):
    _set_label(ready["preprocessed"], "case_002", 7)
    env = {**os.environ, "nnUNet_n_proc_DA": "0", "OMP_NUM_THREADS": "1"}
    proc = cli(["nnUNetv2_train", DID, "3d_fullres", "all", "-tr", "nnUNetTrainerMeanTeacher_debug", "-device", "cpu"],
               env, check=False)
    assert proc.returncode == 1
    expected = "hold label values that"
    assert expected in proc.stderr and "case_002: [7]" in proc.stderr and "allowed: [0, 1, 2]" in proc.stderr
    log = _log_text(ready["results"])
    error_lines = [line for line in log.splitlines() if "ERROR: Training stopped: LabeledDataError" in line]
    assert len(error_lines) == 1 and "case_002: [7]" in error_lines[0]  # one paragraph, in the log
    assert not glob.glob(str(ready["results"] / "**" / "checkpoint_*.pth"), recursive=True)


def test_label_check_accepts_the_labels_of_dataset_json(ready):
    ready["trainer"]().check_labeled_data()


# ---------------------------------------------------------------- 9: start-up errors in the log (in-process)
def test_start_up_error_is_written_to_the_training_log(ready, monkeypatch):
    import shutil
    shutil.rmtree(ready["unlabeled_out"])
    trainer = ready["trainer"]()
    with pytest.raises(UnlabeledDataError, match="does not exist"):
        trainer.run_training()
    log = _log_text(ready["results"])
    line = next(line for line in log.splitlines() if "ERROR: Training stopped" in line)
    assert "UnlabeledDataError: No preprocessed unlabelled data" in line
    assert "nnUNetv2_mn_preprocess_unlabeled -d" in line  # the fix command, on the same line


# ---------------------------------------------------------------- 6: checkpoints load with weights_only=True
def _mn_debug():
    from nnunetv2_mn.trainers import nnUNetTrainerMN_debug
    return nnUNetTrainerMN_debug


def _mean_teacher_debug():
    from nnunetv2_mn.trainers import nnUNetTrainerMeanTeacher_debug
    return nnUNetTrainerMeanTeacher_debug


@pytest.mark.parametrize("trainer_class", [_mn_debug, _mean_teacher_debug])
def test_checkpoint_loads_with_weights_only(ready, tmp_path, trainer_class):
    trainer = ready["trainer"](trainer_class())
    trainer.initialize()
    trainer.logger.log("mean_fg_dice", np.float64(0.25), 0)  # nnU-Net logs numpy values
    trainer.logger.log("dice_per_class_or_region", [np.float64(0.2), np.float32(0.3)], 0)
    trainer._best_ema = np.float64(0.25)
    locations = {"case_004": {1: np.arange(8, dtype=np.int16).reshape(2, 4)}}
    if hasattr(trainer, "pseudo_class_locations"):
        trainer.pseudo_class_locations = locations
    path = str(tmp_path / "checkpoint_latest.pth")
    trainer.save_checkpoint(path)

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert type(checkpoint["_best_ema"]) is float and checkpoint["_best_ema"] == 0.25
    assert all(type(v) is float for v in checkpoint["logging"]["dice_per_class_or_region"][0])

    resumed = ready["trainer"](trainer_class())
    resumed.load_checkpoint(path)
    assert resumed._best_ema == 0.25 and resumed.current_epoch == 1
    assert resumed.logger.get_value("mean_fg_dice", step=0) == 0.25
    for a, b in zip(resumed.network.state_dict().values(), trainer.network.state_dict().values()):
        torch.testing.assert_close(a, b)
    if hasattr(trainer, "pseudo_class_locations"):
        loaded = resumed.pseudo_class_locations["case_004"][1]
        assert isinstance(loaded, np.ndarray) and loaded.dtype == np.int16
        np.testing.assert_array_equal(loaded, locations["case_004"][1])


def test_old_checkpoint_with_numpy_values_still_resumes_and_says_so(ready, tmp_path):
    trainer = ready["trainer"]()
    trainer.initialize()
    path = str(tmp_path / "old.pth")
    trainer.save_checkpoint(path)
    old = torch.load(path, map_location="cpu", weights_only=True)
    old["_best_ema"] = np.float64(0.5)  # as written before this package saved plain numbers
    torch.save(old, path)
    with pytest.raises(Exception):
        torch.load(path, map_location="cpu", weights_only=True)
    resumed = ready["trainer"]()
    resumed.load_checkpoint(path)
    assert resumed._best_ema == 0.5
    assert "written by an older nnunetv2-mn" in open(resumed.log_file).read()
