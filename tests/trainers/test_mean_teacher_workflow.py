"""Issue 'plugin foundation': the whole workflow through the stock console scripts, Mean Teacher trainer.

plan/preprocess (nnU-Net) -> preprocess unlabelled (ours) -> nnUNetv2_train -tr nnUNetTrainerMeanTeacher_debug
-device cpu, killed after its first checkpoint and resumed with --c -> nnUNetv2_predict -> Dice on held-out cases.
"""
import re
import subprocess
import time
from pathlib import Path

import nnunetv2
import pytest
import torch

TRAINER = "nnUNetTrainerMeanTeacher_debug"
pytestmark = pytest.mark.slow


def _output_folder(ws):
    return next(Path(ws["results"]).glob(f"Dataset{ws['dataset_id']}_*")) / f"{TRAINER}__nnUNetPlans__3d_fullres" / "fold_all"


def _train_until_first_checkpoint_then_kill(ws, console):
    args = ["nnUNetv2_train", ws["dataset_id"], "3d_fullres", "all", "-tr", TRAINER, "-device", "cpu"]
    proc = subprocess.Popen(args, env=ws["env"], stdout=console.open("w"), stderr=subprocess.STDOUT)
    latest = None
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        out = _output_folder(ws) if any(Path(ws["results"]).iterdir()) else None
        if out is not None and (out / "checkpoint_latest.pth").is_file():
            latest = out / "checkpoint_latest.pth"
            break
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    assert latest is not None, f"no checkpoint_latest.pth before the end:\n{console.read_text()[-3000:]}"
    return latest


def test_meanteacher_train_kill_resume_predict(planned_synthetic, tmp_path, cli):
    ws = planned_synthetic
    latest = _train_until_first_checkpoint_then_kill(ws, tmp_path / "train_console.txt")
    ckpt = torch.load(latest, map_location="cpu", weights_only=False)
    killed_at = ckpt["current_epoch"]
    assert ckpt["trainer_name"] == TRAINER and "mt_teacher_weights" in ckpt and killed_at < 4

    cli(["nnUNetv2_train", ws["dataset_id"], "3d_fullres", "all", "-tr", TRAINER, "-device", "cpu", "--c"],
            ws["env"])
    out = _output_folder(ws)
    final = torch.load(out / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert final["current_epoch"] == 4
    # the resumed run continued the killed one: one logged value per epoch, b_l + b_u = B every epoch
    log = final["logging"]
    assert len(log["train_losses"]) == 4 and len(log["b_u"]) == 4
    assert all(b_l + b_u == 2 and b_u == 1 for b_l, b_u in zip(log["b_l"], log["b_u"]))
    assert final["mt_ema_step"] == 4 * 3  # 4 epochs x 3 iterations: the EMA counter survived the kill
    assert (out / "progress.png").is_file()
    logs = sorted(out.glob("training_log_*.txt"))
    resumed_log = logs[-1].read_text()
    assert len(logs) == 2 and re.search(rf": Epoch {killed_at} $", resumed_log, re.M)
    assert not re.search(r": Epoch 0 $", resumed_log, re.M) and re.search(r": Epoch 0 $", logs[0].read_text(), re.M)

    pred = tmp_path / "pred"
    cli(["nnUNetv2_predict", "-i", str(ws["raw"] / "imagesTs"), "-o", str(pred), "-d", ws["dataset_id"],
             "-c", "3d_fullres", "-tr", TRAINER, "-f", "all", "-device", "cpu", "--disable_tta", "-npp", "1",
             "-nps", "1"], ws["env"])
    from nnunetv2_mn.evaluation.evaluate import evaluate_folder
    summary = evaluate_folder(str(ws["raw"] / "labelsTs"), str(pred), str(ws["raw"] / "dataset.json"))
    assert len(summary["metric_per_case"]) == 2
    assert summary["mean"]["1"]["Dice"] > 0.1  # 12 tiny CPU iterations already find the large structure

    # nothing was copied into nnunetv2: nnU-Net found the trainer through nnUNet_extTrainer
    nnunet_dir = Path(nnunetv2.__file__).parent
    assert not any(TRAINER in p.read_text(errors="ignore") for p in nnunet_dir.rglob("*.py"))
