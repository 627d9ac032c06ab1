"""Fixtures of the trainer tests: trainers built in Python on the session's planned synthetic dataset, random
batches for their steps, and the stock console-script workflow (train, kill, --c, predict)."""
import json
import subprocess
import time
from pathlib import Path

import pytest
import torch


@pytest.fixture
def make_trainer(planned_synthetic, tmp_path, monkeypatch):
    """make_trainer(cls, fold='all') -> an initialised trainer writing into a fresh results folder."""
    ws = planned_synthetic
    monkeypatch.setenv("nnUNet_raw", ws["env"]["nnUNet_raw"])
    monkeypatch.setenv("nnUNet_preprocessed", ws["env"]["nnUNet_preprocessed"])
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")

    def make(cls, fold="all", preprocessed=None):
        pre = preprocessed or ws["preprocessed"]
        plans = json.loads((pre / "nnUNetPlans.json").read_text())
        plans["continue_training"] = False
        dataset_json = json.loads((pre / "dataset.json").read_text())
        return cls(plans, "3d_fullres", fold, dataset_json, device=torch.device("cpu"))

    return make


@pytest.fixture
def make_stepping_trainer(make_trainer):
    """make_stepping_trainer(cls) -> make_trainer(cls), initialised, with b_u = 1: ready for one
    `semi_supervised_step` on a labelled and an unlabelled sample."""
    def make(cls):
        trainer = make_trainer(cls)
        trainer.initialize()
        trainer.b_u = 1
        return trainer

    return make


def _random_batch(trainer, b_l, b_u):
    """(data_l, target_l, data_u) in the trainer's patch size: b_l + b_u random one-channel patches, random labels
    0..2 for the b_l labelled ones (one target per deep-supervision output), data_u None when b_u is 0."""
    ps = trainer.configuration_manager.patch_size
    x = torch.randn(b_l + b_u, 1, *ps)
    outs = trainer.network(x[:1])
    target = [torch.randint(0, 3, (b_l, 1, *o.shape[2:])).float() for o in outs]
    return x[:b_l], target, x[b_l:] if b_u else None


@pytest.fixture
def random_batch():
    """`random_batch(trainer, b_l, b_u)` -> (data_l, target_l, data_u) for a trainer's steps."""
    return _random_batch


class StockWorkflow:
    """One trainer through the stock console scripts on a planned data set (`planned_synthetic`'s dict):
    nnUNetv2_train, killed after its first checkpoint, resumed with --c, nnUNetv2_predict on imagesTs."""

    def __init__(self, ws, cli, trainer, fold="all"):
        self.ws, self.cli, self.trainer, self.fold = ws, cli, trainer, str(fold)

    @property
    def output_folder(self) -> Path:
        dataset = next(Path(self.ws["results"]).glob(f"Dataset{self.ws['dataset_id']}_*"))
        return dataset / f"{self.trainer}__nnUNetPlans__3d_fullres" / f"fold_{self.fold}"

    def train_args(self, *extra):
        return ["nnUNetv2_train", self.ws["dataset_id"], "3d_fullres", self.fold, "-tr", self.trainer,
                "-device", "cpu", *extra]

    def train(self, *extra, check=True):
        return self.cli(self.train_args(*extra), self.ws["env"], check=check)

    def train_until_first_checkpoint_then_kill(self, console: Path, timeout=600) -> Path:
        """Start training and kill it as soon as checkpoint_latest.pth exists (written atomically by the trainers);
        returns its path. Fails, with the console's tail, when training ends or times out first."""
        proc = subprocess.Popen(self.train_args(), env=self.ws["env"], stdout=console.open("w"),
                                stderr=subprocess.STDOUT)
        pattern = (f"Dataset{self.ws['dataset_id']}_*/{self.trainer}__nnUNetPlans__3d_fullres/fold_{self.fold}/"
                   "checkpoint_latest.pth")
        latest, deadline = None, time.time() + timeout
        while time.time() < deadline and proc.poll() is None:
            candidates = list(Path(self.ws["results"]).glob(pattern))
            if candidates:
                latest = candidates[0]
                break
            time.sleep(0.2)
        proc.kill()
        proc.wait()
        assert latest is not None, f"no checkpoint_latest.pth before the end:\n{console.read_text()[-3000:]}"
        return latest

    def resume(self):
        """nnUNetv2_train ... --c until the end of the run."""
        return self.train("--c")

    def kill_and_resume(self, console: Path, state_key: str, epochs: int = 4):
        """Train, kill after the first checkpoint and check it (this trainer, `state_key` saved beside nnU-Net's
        state, an epoch before the last), resume with --c and check that the run ended after `epochs` epochs.
        Returns (the killed run's checkpoint, checkpoint_final)."""
        latest = self.train_until_first_checkpoint_then_kill(console)
        killed = torch.load(latest, map_location="cpu", weights_only=False)
        assert killed["trainer_name"] == self.trainer and state_key in killed and killed["current_epoch"] < epochs
        self.resume()
        final = torch.load(self.output_folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)
        assert final["current_epoch"] == epochs
        return killed, final

    def predict(self, out: Path) -> Path:
        """nnUNetv2_predict of the held-out imagesTs into `out` (no TTA, one worker each)."""
        self.cli(["nnUNetv2_predict", "-i", str(self.ws["raw"] / "imagesTs"), "-o", str(out),
                  "-d", self.ws["dataset_id"], "-c", "3d_fullres", "-tr", self.trainer, "-f", self.fold,
                  "-device", "cpu", "--disable_tta", "-npp", "1", "-nps", "1"], self.ws["env"])
        return out

    def evaluate(self, pred: Path) -> dict:
        """Dice & co. of the predictions against labelsTs."""
        from nnunetv2_mn.evaluation.evaluate import evaluate_folder
        raw = self.ws["raw"]
        return evaluate_folder(str(raw / "labelsTs"), str(pred), str(raw / "dataset.json"))


@pytest.fixture
def stock_workflow(cli):
    """`stock_workflow(ws, trainer, fold='all')` -> a `StockWorkflow` for that trainer on the data set `ws`."""
    return lambda ws, trainer, fold="all": StockWorkflow(ws, cli, trainer, fold)
