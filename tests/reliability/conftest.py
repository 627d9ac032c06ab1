"""A tiny planned synthetic data set per module, copied into fresh nnU-Net folders for each test."""
import json
import os
import shutil

import pytest
import torch

DID = 940
NAME = "Dataset940_MNSynthetic"
UNLABELED = "nnUNetPlans_3d_fullres_unlabeled"


@pytest.fixture(scope="module")
def planned_template(tmp_path_factory, plan_in_process):
    """4 labelled (case_000-003), 2 unlabelled (case_004, case_005) 16x32x32 cases (the tiny SegFormer needs >= 32
    in-plane), planned and preprocessed (3d_fullres) by nnU-Net in this process; the unlabelled cases are not
    preprocessed."""
    from nnunetv2_mn.data.synthetic import make_synthetic_dataset

    return plan_in_process(tmp_path_factory.mktemp("reliability"), DID, lambda: make_synthetic_dataset(
        DID, num_labeled=4, num_unlabeled=2, num_test=0, shape=(16, 32, 32)))


@pytest.fixture
def planned(planned_template, nnunet_dirs):
    """A private copy in this test's nnU-Net folders: {'raw', 'preprocessed', 'unlabeled_out'}."""
    for n in ("nnUNet_raw", "nnUNet_preprocessed"):
        shutil.copytree(planned_template / n, nnunet_dirs[n], dirs_exist_ok=True)
    pre = nnunet_dirs["nnUNet_preprocessed"] / NAME
    return {"raw": nnunet_dirs["nnUNet_raw"] / NAME, "preprocessed": pre, "unlabeled_out": pre / UNLABELED,
            "results": nnunet_dirs["nnUNet_results"]}


def make_trainer(preprocessed, cls=None, plans_name="nnUNetPlans"):
    """A CPU trainer on the copied data set (not initialised; enough for the start-up checks)."""
    if cls is None:
        from nnunetv2_mn.trainers import nnUNetTrainerMeanTeacher_debug as cls
    plans = json.loads((preprocessed / f"{plans_name}.json").read_text())
    plans["continue_training"] = False
    dataset_json = json.loads((preprocessed / "dataset.json").read_text())
    trainer = cls(plans, "3d_fullres", "all", dataset_json, device=torch.device("cpu"))
    trainer.num_input_channels = 1
    return trainer


@pytest.fixture(scope="session")
def new_trainer():
    """new_trainer(preprocessed, cls=None, plans_name='nnUNetPlans'): see `make_trainer`."""
    return make_trainer


@pytest.fixture
def trainer_refuses():
    """trainer_refuses(preprocessed, match): the trainer's start-up check stops with a message matching `match`."""
    from nnunetv2_mn.data.unlabeled import UnlabeledDataError

    def check(preprocessed, match=None):
        trainer = make_trainer(preprocessed)
        with pytest.raises(UnlabeledDataError, match=match) as info:
            trainer.check_unlabeled_data()
        return str(info.value)

    return check


@pytest.fixture
def trainer_accepts():
    def check(preprocessed):
        return make_trainer(preprocessed).check_unlabeled_data()

    return check


def cli_error(main, argv):
    """Run a console script's main in-process; return the text of its `SystemExit('ERROR: ...')` (exit status 1)."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert isinstance(info.value.code, str) and info.value.code.startswith("ERROR: "), info.value.code
    return info.value.code


@pytest.fixture(scope="session")
def expect_cli_error():
    return cli_error


def nifti_path(folder, case):
    return os.path.join(folder, f"{case}_0000.nii.gz")
