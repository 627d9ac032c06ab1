"""nnUNetv2_mn_demo: helpers (fast) and the whole demo with a short M&N schedule that learns (slow)."""
import json
import os
import re
import sys
from pathlib import Path

import pytest

from nnunetv2_mn.cli import demo


def test_workdir_refuses_foreign_folders_and_reuses_its_own(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("x")
    with pytest.raises(SystemExit, match="not written by the demo"):
        demo.prepare_workdir(str(foreign))
    assert (foreign / "precious.txt").is_file()

    own = tmp_path / "own"
    (own / "nnUNet_results").mkdir(parents=True)
    (own / demo.MARKER).write_text("")
    (own / "nnUNet_results" / "old.pth").write_text("")
    (own / "notes.txt").write_text("")
    assert demo.prepare_workdir(str(own)) == str(own)
    assert not (own / "nnUNet_results").exists() and (own / "notes.txt").is_file()

    temporary = demo.prepare_workdir(None)
    assert os.path.isdir(temporary) and "nnunetv2_mn_demo_" in temporary
    os.rmdir(temporary)


def test_env_points_nnunet_into_the_workdir(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_raw", "/somewhere/else")
    monkeypatch.setenv("NNUNETV2_MN_NO_HOOK", "1")
    monkeypatch.delenv("nnUNet_extTrainer", raising=False)
    env = demo.demo_env(str(tmp_path))
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        assert env[name] == str(tmp_path / name) and (tmp_path / name).is_dir()
    assert env["nnUNet_n_proc_DA"] != "0"  # nnU-Net's planner rejects 0
    from nnunetv2_mn.trainers import discovery
    assert discovery.LOOKUP_DIR in env["nnUNet_extTrainer"].split(os.pathsep)
    assert os.environ["nnUNet_raw"] == "/somewhere/else"  # only the subprocesses see the demo's folders


def test_failed_step_names_the_step_and_shows_its_output(tmp_path, capsys):
    d = demo.Demo(str(tmp_path), demo.DEFAULT_TRAINER, "cpu")
    d.run("a step that works", [sys.executable, "-c", "print('hello')"])
    with pytest.raises(demo.DemoStepFailed) as err:
        d.run("a step that fails", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"])
    message = str(err.value)
    assert "step 2/" in message and "a step that fails" in message and "exited with code 3" in message
    assert "boom" in message and os.path.isfile(message.rsplit("Full output: ", 1)[1].strip())
    assert f"$ {sys.executable} -c" in capsys.readouterr().out  # the command is printed before it runs


def test_main_reports_the_failing_step_and_keeps_the_workdir(tmp_path, monkeypatch, capsys):
    def failing_planning(self):
        self.run("nnU-Net planning", [sys.executable, "-c", "import sys; sys.exit('planner exploded')"])

    monkeypatch.setattr(demo.Demo, "plan_and_preprocess", failing_planning)
    workdir = tmp_path / "w"
    assert demo.main(["--workdir", str(workdir), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "nnUNetv2_mn_demo FAILED: step 2/6 (nnU-Net planning) failed" in err and "planner exploded" in err
    assert (workdir / "nnUNet_raw" / "Dataset987_MNDemo" / "imagesUnlabeled").is_dir()


def test_model2d_from_the_training_log(tmp_path):
    assert demo.model2d_from_logs(str(tmp_path)) is None
    (tmp_path / "training_log_2026_1_1_00_00_00.txt").write_text(
        "2026-01-01 00:00:01.000000: Epoch 0\n"
        "2026-01-01 00:00:00.100000: M&N 2D model: effnet_lite0 (whole): 3,832,530 parameters; weights from None\n")
    assert demo.model2d_from_logs(str(tmp_path)).startswith("effnet_lite0 (whole)")


def test_training_progress_folds_each_epoch_into_one_line():
    lines = ["Trainer 'nnUNetTrainerMN_debug' not found in nnunetv2.training.nnUNetTrainer.",
             "2026-11-22 12:44:16.676921: Epoch 4",
             "2026-11-22 12:44:16.676999: Current learning rate: 0.005",
             "2026-11-22 12:44:16.680163: M&N stage 2, student: 2D (teacher: 3D)",
             "2026-11-22 12:44:29.846333: train_loss 0.686",
             "2026-11-22 12:44:29.846400: val_loss 0.5",
             "2026-11-22 12:44:29.846487: Pseudo dice [np.float32(0.8546), np.float32(0.0)]",
             "2026-11-22 12:44:29.846569: Epoch time: 13.17 s",
             "2026-11-22 12:48:26.189792: Mean Validation Dice:  0.43"]
    progress = demo.TrainingProgress()
    shown = [s for s in map(progress, lines) if s is not None]
    assert shown == ["Epoch 4 | M&N stage 2, student: 2D (teacher: 3D) | train_loss 0.686 | "
                     "Pseudo dice [0.8546, 0.0] | 13.17 s", "Mean Validation Dice:  0.43"]


def test_dice_lines():
    summary = {"labels": {"1": "structure", "2": "core"},
               "mean": {"1": {"Dice": 0.9}, "2": {"Dice": None}}, "std": {"1": {"Dice": 0.01}, "2": {"Dice": None}},
               "foreground_mean": {"Dice": 0.9}}
    lines = demo.dice_lines(summary)
    assert re.search(r"Dice label 1 structure\s+0\.9000 ± 0\.0100", lines[0])
    assert lines[1].endswith("n/a") and lines[2].strip().startswith("Dice foreground mean")


def constant_prediction_dice(reference_folder) -> float:
    """The best mean foreground Dice a constant prediction reaches on these references (an untrained network
    predicts about one class everywhere): label k everywhere scores 2|R_k| / (|R_k| + N) for k and 0 for the rest."""
    import SimpleITK as sitk

    per_label = {}
    for path in sorted(Path(reference_folder).glob("*.nii.gz")):
        ref = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        for k in (1, 2):
            per_label.setdefault(k, []).append(2 * (ref == k).sum() / ((ref == k).sum() + ref.size))
    return max(sum(v) / len(v) for v in per_label.values()) / len(per_label)


@pytest.mark.slow
def test_demo_end_to_end_learns_with_the_default_rules(tmp_path, cli):
    """The real console script, all steps, with M&N's default stage 2 (both students every iteration, LRG with
    the expected share) on a short schedule: the held-out Dice is far above what an untrained network reaches."""
    workdir = tmp_path / "demo"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    trainer = "nnUNetTrainerMN_debugLearn"
    proc = cli(["nnUNetv2_mn_demo", "--workdir", str(workdir), "--trainer", trainer, "--device", "cpu"], env,
               timeout=1500)
    out = proc.stdout
    for command in ("nnUNetv2_plan_and_preprocess -d 987", "nnUNetv2_mn_preprocess_unlabeled -d 987",
                    f"nnUNetv2_train 987 3d_fullres all -tr {trainer} -device cpu", "nnUNetv2_predict -i"):
        assert f"$ {command}" in out
    assert re.search(r"Dice label 1 structure\s+\d\.\d{4} ± \d\.\d{4}", out)
    assert re.search(r"Dice label 2 core\s+\d\.\d{4} ± \d\.\d{4}", out)
    summary = json.loads((workdir / "predictions" / "summary_mn.json").read_text())
    bound = constant_prediction_dice(workdir / "nnUNet_raw" / "Dataset987_MNDemo" / "labelsTs")
    assert summary["foreground_mean"]["Dice"] > bound + 0.2, (summary["foreground_mean"], bound)
    log = next((workdir / "nnUNet_results").rglob("training_log_*.txt")).read_text()
    assert "then 2D (teacher: 3D), in every iteration" in log and "lrg (expected rounding)" in log
    assert "2D model: segformer" in out and "Next, on your own data" in out
    predictions = sorted(p.name for p in (workdir / "predictions").glob("*.nii.gz"))
    references = sorted(p.name for p in (workdir / "nnUNet_raw" / "Dataset987_MNDemo" / "labelsTs").iterdir())
    assert predictions == references and len(predictions) == demo.SYNTHETIC["num_test"]
    assert (workdir / "predictions" / "summary_mn.json").is_file()
