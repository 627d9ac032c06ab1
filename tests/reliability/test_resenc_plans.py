"""nnU-Net's ResEnc presets share the default plans' data folder (issue 10, item 10): the unlabelled cases
preprocessed with nnUNetPlans serve nnUNetResEncUNetMPlans too, and M&N trains with -p nnUNetResEncUNetMPlans."""
import glob
import json
import os

import pytest

from nnunetv2_mn.cli.preprocess_unlabeled import main as preprocess_main
from nnunetv2_mn.data.unlabeled import preprocess_unlabeled

DID = "940"  # tests/reliability/conftest.py
RESENC = "nnUNetResEncUNetMPlans"


@pytest.fixture
def resenc(planned):
    from nnunetv2.experiment_planning.plan_and_preprocess_api import plan_experiments
    preprocess_unlabeled(DID, num_processes=1, verbose=False)  # the usual commands, default plans
    plan_experiments([int(DID)], "nnUNetPlannerResEncM")
    plans = json.loads((planned["preprocessed"] / f"{RESENC}.json").read_text())
    assert plans["configurations"]["3d_fullres"]["data_identifier"] == "nnUNetPlans_3d_fullres"  # shared folder
    return planned


def test_unlabelled_cases_of_the_default_plans_serve_the_resenc_plans(resenc, new_trainer, capsys):
    manifest = resenc["unlabeled_out"] / "unlabeled_manifest.json"
    before = json.loads(manifest.read_text())["plans_fingerprint"]
    assert new_trainer(resenc["preprocessed"], plans_name=RESENC).check_unlabeled_data() == ["case_004", "case_005"]
    preprocess_main(["-d", DID, "-p", RESENC, "-np", "1"])  # nothing to redo, nothing overwritten
    assert "0 preprocessed, 2 unchanged, 0 removed" in capsys.readouterr().out
    assert json.loads(manifest.read_text())["plans_fingerprint"] == before


@pytest.mark.slow
def test_mn_trains_with_resenc_m_plans(resenc, cli):
    env = {**os.environ, "nnUNet_n_proc_DA": "0", "nnUNet_def_n_proc": "1", "OMP_NUM_THREADS": "1"}
    cli(["nnUNetv2_train", DID, "3d_fullres", "all", "-tr", "nnUNetTrainerMN_debug", "-p", RESENC, "-device", "cpu"],
        env)
    out = glob.glob(str(resenc["results"] / "Dataset940_*" / f"nnUNetTrainerMN_debug__{RESENC}__3d_fullres"
                        / "fold_all"))
    assert len(out) == 1 and os.path.isfile(os.path.join(out[0], "checkpoint_final.pth"))
    import torch  # a checkpoint of a real run loads with the safe unpickler (item 6)
    checkpoint = torch.load(os.path.join(out[0], "checkpoint_final.pth"), map_location="cpu", weights_only=True)
    assert checkpoint["current_epoch"] == 4 and type(checkpoint["_best_ema"]) is float
