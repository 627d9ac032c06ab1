"""nnUNetv2_mn_doctor: the check functions alone (fast) and the console script as a user runs it (slow)."""
import os

import pytest

from nnunetv2_mn.cli import doctor
from nnunetv2_mn.trainers import discovery


# ------------------------------------------------------------------------------------------- check functions
def test_path_var_unset_missing_and_ok(tmp_path):
    unset = doctor.check_path_var("nnUNet_raw", environ={})
    assert unset.failed and "export nnUNet_raw=" in unset.fix and "setting_up_paths.md" in unset.fix
    missing = doctor.check_path_var("nnUNet_raw", environ={"nnUNet_raw": str(tmp_path / "nope")})
    assert missing.failed and "does not exist" in missing.message and "mkdir -p" in missing.fix
    ok = doctor.check_path_var("nnUNet_raw", environ={"nnUNet_raw": str(tmp_path)})
    assert ok.status == doctor.OK and not ok.fix


def test_ext_trainer_check():
    folder = discovery.LOOKUP_DIR
    ok = doctor.check_ext_trainer(environ={"nnUNet_extTrainer": os.pathsep.join(["/elsewhere", folder])})
    assert ok.status == doctor.OK
    off = doctor.check_ext_trainer(environ={"NNUNETV2_MN_NO_HOOK": "1"})
    assert off.failed and "NNUNETV2_MN_NO_HOOK" in off.message and off.fix == discovery.EXPORT_LINE
    assert doctor.check_ext_trainer(environ={"nnUNet_extTrainer": "/elsewhere"}).failed


def test_unknown_dataset_is_one_failed_check_naming_it(tmp_path, monkeypatch):
    from nnunetv2_mn.cli.doctor_dataset import dataset_checks

    monkeypatch.setenv("nnUNet_raw", str(tmp_path))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path))
    checks = dataset_checks("999")
    assert len(checks) == 1
    result = checks[0]()
    assert result.failed and "999" in result.name + result.message


def test_nnunet_version():
    result = doctor.check_nnunet_version()
    assert result.status == doctor.OK, result
    assert doctor._version_tuple("2.8.1") == (2, 8, 1) and doctor._version_tuple("2.9.0rc1") == (2, 9, 0)


def test_torchvision_mismatch_gets_the_matching_pair_fix(monkeypatch):
    def fake_import(name):
        if name == "torchvision":
            raise RuntimeError("operator torchvision::nms does not exist")
        return "1.0"

    monkeypatch.setattr(doctor, "_import_version", fake_import)
    result = doctor.check_torch_stack()
    assert result.failed and "torchvision" in result.message and "pip install torch==" in result.fix


def test_2d_model_spec_and_unknown_kind():
    assert doctor.parse_2d_model("segformer:/models/b2") == ("segformer", "/models/b2")
    assert doctor.parse_2d_model("effnet_lite0") == ("effnet_lite0", None)
    result = doctor.check_2d_model("no_such_kind", None, required=True)
    assert result.failed and "no_such_kind" in result.message


def test_default_segformer_source_follows_the_trainer(monkeypatch):
    from nnunetv2_mn.settings import DEFAULT_2D_MODEL, ENV_2D_MODEL
    from nnunetv2_mn.trainers.mn import nnUNetTrainerMN

    assert doctor.default_segformer_source({})[0] == DEFAULT_2D_MODEL == nnUNetTrainerMN.branch2d_source
    assert doctor.default_segformer_source({ENV_2D_MODEL: "/m"}) == ("/m", f"from {ENV_2D_MODEL}")


def test_missing_segformer_is_a_warning_with_the_download_fix(tmp_path):
    missing = str(tmp_path / "no_model_here")
    warn = doctor.check_2d_model("segformer", missing, required=False)
    assert warn.status == doctor.WARN and not warn.failed
    assert "hf download nvidia/segformer-b2-finetuned-ade-512-512 --local-dir DIR" in warn.fix
    assert "huggingface-cli download" in warn.fix and "export nnUNet_MN_2d_model=DIR" in warn.fix
    assert "nnUNetTrainerMN_EffNetLite0" in warn.fix
    assert doctor.check_2d_model("segformer", missing, required=True).failed


def test_format_shows_the_fix_only_for_problems():
    text = doctor.format_result(doctor.CheckResult("x", doctor.FAIL, "broken", "line one\nline two"))
    assert text.splitlines() == ["[FAIL] x: broken", "       fix: line one", "            line two"]
    assert "fix" not in doctor.format_result(doctor.CheckResult("x", doctor.OK, "fine", "unused"))


# ------------------------------------------------------------------------------------------- console script
def _env(tmp_path, **changes):
    env = dict(os.environ)
    for name in doctor.PATH_VARS:
        (tmp_path / name).mkdir(exist_ok=True)
        env[name] = str(tmp_path / name)
    env.pop("nnUNet_MN_2d_model", None)
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


@pytest.mark.slow
def test_doctor_all_ok(tmp_path, cli):
    proc = cli(["nnUNetv2_mn_doctor"], _env(tmp_path))
    out = proc.stdout
    for trainer in doctor.DEFAULT_TRAINERS:
        assert f"[OK  ] trainer {trainer}: {trainer} found by nnU-Net's lookup (nnunetv2_mn." in out
    assert "[OK  ] nnUNet_extTrainer" in out and "[OK  ] 2D model effnet_lite0" in out
    assert "[FAIL]" not in out and "All checks passed" in out
    # SegFormer is not in the (offline) cache here: a warning, not a failure
    assert ("[WARN] 2D model segformer" in out) or ("[OK  ] 2D model segformer" in out)
    assert "Searching in" not in out  # nnU-Net's lookup chatter is suppressed


@pytest.mark.slow
def test_doctor_unset_raw_fails_with_the_fix(tmp_path, cli):
    proc = cli(["nnUNetv2_mn_doctor", "--trainer", "nnUNetTrainerMN", "--2d_model", "effnet_lite0"],
               _env(tmp_path, nnUNet_raw=None), check=False)
    assert proc.returncode != 0, proc.stdout
    assert "[FAIL] nnUNet_raw: nnUNet_raw is not set" in proc.stdout
    assert "fix: export nnUNet_raw=" in proc.stdout and "setting_up_paths.md" in proc.stdout
    assert "1 check(s) FAILED: nnUNet_raw" in proc.stdout


@pytest.mark.slow
def test_doctor_without_hook_fails_the_trainer_lookup_with_the_export_line(tmp_path, cli):
    proc = cli(["nnUNetv2_mn_doctor", "--trainer", "nnUNetTrainerMN", "--2d_model", "effnet_lite0"],
               _env(tmp_path, NNUNETV2_MN_NO_HOOK="1", nnUNet_extTrainer=None), check=False)
    out = proc.stdout
    assert proc.returncode != 0, out
    assert "[FAIL] nnUNet_extTrainer" in out and "[FAIL] trainer nnUNetTrainerMN: nnU-Net's trainer lookup" in out
    assert out.count(discovery.EXPORT_LINE) >= 2  # for the variable and for the trainer


@pytest.mark.slow
def test_doctor_explicit_missing_2d_model_fails(tmp_path, cli):
    proc = cli(["nnUNetv2_mn_doctor", "--trainer", "nnUNetTrainerMN", "--2d_model",
                f"segformer:{tmp_path / 'missing'}"], _env(tmp_path), check=False)
    assert proc.returncode != 0 and "[FAIL] 2D model segformer" in proc.stdout
