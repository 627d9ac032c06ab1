"""Issue 'nnUNetTrainerMN': the stock console scripts through both M&N stages, a kill in stage 2, --c, predict.

nnUNetv2_train D 3d_fullres 0 -tr nnUNetTrainerMN_debug -device cpu (tiny SegFormer from a config: stage 1,
then 3D / 2D / 3D student epochs), killed while stage 2 runs, resumed with --c, then nnUNetv2_predict.
"""
import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import torch

TRAINER = "nnUNetTrainerMN_debug"
pytestmark = pytest.mark.slow


def _has_epoch(log_text, epoch):
    """nnU-Net's log line for the start of an epoch: '<timestamp>: Epoch N '."""
    return re.search(rf": Epoch {epoch} $", log_text, re.M) is not None


def _output_folder(ws):
    return next(Path(ws["results"]).glob(f"Dataset{ws['dataset_id']}_*")) / f"{TRAINER}__nnUNetPlans__3d_fullres" / "fold_0"


def _kill_when_stage2_checkpoint_exists(ws, console):
    """Start training; kill it once checkpoint_latest holds a stage-2 epoch (the log shows 'Epoch 2')."""
    args = ["nnUNetv2_train", ws["dataset_id"], "3d_fullres", "0", "-tr", TRAINER, "-device", "cpu"]
    proc = subprocess.Popen(args, env=ws["env"], stdout=console.open("w"), stderr=subprocess.STDOUT)
    deadline, killed = time.time() + 900, False
    while time.time() < deadline and proc.poll() is None:
        logs = list(_output_folder(ws).glob("training_log_*.txt")) if any(Path(ws["results"]).iterdir()) else []
        if logs and _has_epoch(logs[0].read_text(), 2):
            proc.kill()
            killed = True
            break
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    assert killed, f"training ended or timed out before reaching epoch 2:\n{console.read_text()[-3000:]}"


def test_mn_both_stages_kill_resume_predict(planned_synthetic, tmp_path, cli):
    ws = planned_synthetic
    _kill_when_stage2_checkpoint_exists(ws, tmp_path / "train_console.txt")
    out = _output_folder(ws)
    ckpt = torch.load(out / "checkpoint_latest.pth", map_location="cpu", weights_only=False)
    assert ckpt["current_epoch"] == 2 and ckpt["mn_phase"] == "3d" and ckpt["mn_branch2d"]

    cli(["nnUNetv2_train", ws["dataset_id"], "3d_fullres", "0", "-tr", TRAINER, "-device", "cpu", "--c"], ws["env"])
    final = torch.load(out / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    log = final["logging"]
    assert final["current_epoch"] == 4 and len(log["stage"]) == 4
    assert log["stage"] == [1, 2, 2, 2] and log["trains_3d"] == [1, 1, 0, 1] and log["trains_2d"] == [1, 0, 1, 0]
    assert log["b_u"] == [0, 1, 1, 1] and all(0 <= a <= 1 for a in log["agreement"][1:])
    assert all(v == v for v in log["loss_u_3d"][1:2] + log["loss_u_2d"][2:3])  # L_u logged where it was trained
    resumed_log = sorted(out.glob("training_log_*.txt"))[-1].read_text()
    assert _has_epoch(resumed_log, 2) and not _has_epoch(resumed_log, 1)
    assert "M&N stage 2, student: 2D (teacher: 3D)" in resumed_log
    assert (out / "progress.png").is_file() and (out / "validation" / "summary.json").is_file()
    splits = json.loads((ws["preprocessed"] / "splits_final.json").read_text())
    unlabelled = {p.name.split("_0000")[0] for p in (ws["raw"] / "imagesUnlabeled").iterdir()}
    assert unlabelled.isdisjoint(splits[0]["train"] + splits[0]["val"])

    pred = tmp_path / "pred"
    cli(["nnUNetv2_predict", "-i", str(ws["raw"] / "imagesTs"), "-o", str(pred), "-d", ws["dataset_id"],
         "-c", "3d_fullres", "-tr", TRAINER, "-f", "0", "-device", "cpu", "--disable_tta", "-npp", "1", "-nps", "1"],
        ws["env"])
    assert sorted(p.name for p in pred.glob("*.nii.gz")) == sorted(p.name for p in (ws["raw"] / "labelsTs").iterdir())
