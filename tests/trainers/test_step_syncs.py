"""A training step reads its logged values from the device once (issue #12: no host sync in the hot path)."""
import traceback

import numpy as np
import pytest
import torch


class _SyncCounter:
    """While installed, counts each copy of a tensor to the host (`.cpu()`) and each read of a tensor's value into
    Python (`.item()`, `bool(t)`, ...): on a GPU each waits for the device. Not counted: reads of the optimizers'
    step counters (`torch/optim`, host tensors on a GPU too), the augmentation of the unlabelled batch (host tensors,
    in the loader's worker processes outside the debug trainers) and the read of `to_host`'s one copy."""
    READS = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__")
    NOT_COUNTED = ("torch/optim/", "batchgeneratorsv2/", "nnunetv2_mn/training/step_results.py")

    def __init__(self, monkeypatch):
        self.reads, self.transfers = [], 0
        for name in self.READS:
            monkeypatch.setattr(torch.Tensor, name, self._wrap(name, getattr(torch.Tensor, name)))
        cpu = torch.Tensor.cpu

        def counted_cpu(t, *a, **k):
            self.transfers += 1
            return cpu(t, *a, **k)
        monkeypatch.setattr(torch.Tensor, "cpu", counted_cpu)

    def _wrap(self, name, original):
        def wrapper(t, *a, **k):  # the caller: the innermost frame outside torch (np.asarray -> Tensor.__array__)
            caller = next(f for f in reversed(traceback.extract_stack()[:-1]) if "/torch/" not in f.filename
                          or "/torch/optim/" in f.filename)
            if not any(part in caller.filename for part in self.NOT_COUNTED):
                self.reads.append(f"{name} at {caller.filename}:{caller.lineno}")
            return original(t, *a, **k)
        return wrapper


@pytest.mark.parametrize("name", ["nnUNetTrainerMN_debugPair", "nnUNetTrainerMN_debug", "nnUNetTrainerMeanTeacher_debug",
                                  "nnUNetTrainerUAMT_debug"])
def test_a_training_step_reads_the_device_once(make_trainer, monkeypatch, name):
    """Every step kind of M&N (stage 1; stage 2 as a pair of students, and by epoch: the 3D and the 2D student)
    and of Mean Teacher and UA-MT, with b_u = 1 unlabelled sample, copies its losses, agreement and shares to the
    host once, and reads no tensor's value before that (as nnU-Net's own train_step)."""
    import nnunetv2_mn.trainers as trainers

    trainer = make_trainer(getattr(trainers, name))
    trainer.on_train_start()
    try:
        epochs = [0]
        if name.startswith("nnUNetTrainerMN"):
            epochs = [0, trainer.unlabeled_start_epoch, trainer.unlabeled_start_epoch + 1]
        for epoch in epochs:
            trainer.current_epoch = epoch
            trainer.on_train_epoch_start()
            trainer.unlabeled_shares = {model: 0.5 for model in trainer.unlabeled_shares}  # b_u = 1 of B = 2
            batch = next(trainer.dataloader_train)
            counter = _SyncCounter(monkeypatch)
            out = trainer.train_step(batch)
            monkeypatch.undo()
            assert counter.reads == [] and counter.transfers == 1, (epoch, counter.reads, counter.transfers)
            assert all(not isinstance(v, torch.Tensor) for v in out.values())
            assert np.isfinite(out["loss"]) or (epoch and getattr(trainer, "phase", None) == "2d")
            if epoch:
                assert out["b_u"] == 1 and 0.0 <= out["agreement"] <= 1.0 or np.isnan(out["agreement"])
    finally:
        trainer.on_train_end()
