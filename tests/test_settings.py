"""nnunetv2_mn.settings: the contracts in one place, importable without torch; where the 2D model comes from."""
import subprocess
import sys

from nnunetv2_mn.settings import (DEFAULT_2D_MODEL, ENV_2D_MODEL, ENV_2D_WEIGHTS, PLANS_KEY_2D_MODEL,
                                  resolve_2d_source)


def test_settings_import_without_torch():
    code = "import sys, nnunetv2_mn.settings, nnunetv2_mn.cli.doctor; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_2d_source_order():
    plans = {PLANS_KEY_2D_MODEL: "/plans/model"}
    assert resolve_2d_source("segformer", DEFAULT_2D_MODEL, None, {}) == (DEFAULT_2D_MODEL, "the trainer.branch2d_source")
    assert resolve_2d_source("segformer", DEFAULT_2D_MODEL, plans, {})[0] == "/plans/model"
    assert resolve_2d_source("hf", DEFAULT_2D_MODEL, plans, {ENV_2D_MODEL: "/env"}) == ("/env", f"environment variable {ENV_2D_MODEL}")
    # a CNN never takes the Hugging Face variable or the plans key, only its own weights variable
    assert resolve_2d_source("effnet_lite0", None, plans, {ENV_2D_MODEL: "/env"}, owner="T") == (None, "T.branch2d_source")
    assert resolve_2d_source("resunet", None, plans, {ENV_2D_WEIGHTS: "/w.pth"})[0] == "/w.pth"


def test_the_trainer_planner_and_doctor_use_these_contracts():
    from nnunetv2_mn.cli import doctor, plan
    from nnunetv2_mn.trainers.mn import nnUNetTrainerMN

    assert nnUNetTrainerMN.branch2d_source == DEFAULT_2D_MODEL == plan.DEFAULT_2D_MODEL
    assert doctor.default_segformer_source({})[0] == DEFAULT_2D_MODEL
