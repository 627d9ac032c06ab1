"""Issue 'plugin foundation': the whole workflow through the stock console scripts, Mean Teacher trainer.

plan/preprocess (nnU-Net) -> preprocess unlabelled (ours) -> nnUNetv2_train -tr nnUNetTrainerMeanTeacher_debug
-device cpu, killed after its first checkpoint and resumed with --c -> nnUNetv2_predict -> Dice on held-out cases.
"""
import re
from pathlib import Path

import nnunetv2
import pytest

TRAINER = "nnUNetTrainerMeanTeacher_debug"
pytestmark = pytest.mark.slow


def test_meanteacher_train_kill_resume_predict(planned_synthetic, tmp_path, stock_workflow):
    wf = stock_workflow(planned_synthetic, TRAINER)
    killed, final = wf.kill_and_resume(tmp_path / "train_console.txt", "mt_teacher_weights")
    killed_at = killed["current_epoch"]
    out = wf.output_folder
    # the resumed run continued the killed one: one logged value per epoch, the whole labelled batch (B = 2) and one
    # unlabelled sample on top in every epoch (unlabeled_samples='add')
    log = final["logging"]
    assert len(log["train_losses"]) == 4 and len(log["b_u"]) == 4
    assert log["b_l"] == [2] * 4 and log["b_u"] == [1] * 4
    assert final["mt_ema_step"] == 4 * 3  # 4 epochs x 3 iterations: the EMA counter survived the kill
    assert (out / "progress.png").is_file()
    logs = sorted(out.glob("training_log_*.txt"))
    resumed_log = logs[-1].read_text()
    assert len(logs) == 2 and re.search(rf": Epoch {killed_at} $", resumed_log, re.M)
    assert not re.search(r": Epoch 0 $", resumed_log, re.M) and re.search(r": Epoch 0 $", logs[0].read_text(), re.M)

    summary = wf.evaluate(wf.predict(tmp_path / "pred"))
    assert len(summary["metric_per_case"]) == 2
    assert summary["mean"]["1"]["Dice"] > 0.1  # 12 tiny CPU iterations already find the large structure

    # nothing was copied into nnunetv2: nnU-Net found the trainer through nnUNet_extTrainer
    nnunet_dir = Path(nnunetv2.__file__).parent
    assert not any(TRAINER in p.read_text(errors="ignore") for p in nnunet_dir.rglob("*.py"))
