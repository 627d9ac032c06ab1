"""Learning-rate schedules of the M&N trainers, stepped once per epoch like nnU-Net's PolyLRScheduler.

Each schedule is a pure function of the epoch (`lr_at`), so the trainer can read a whole schedule before
training (`planned_lrs`: does the sampling rule ever give an unlabelled sample?) without stepping the real one.
"""
import math
from typing import Callable, List

import torch
from torch.optim.lr_scheduler import _LRScheduler


class _EpochFunctionLR(_LRScheduler):
    """Sets every group's learning rate to `lr_at(epoch)`; `step()` without an epoch counts up."""

    def __init__(self, optimizer, current_step: int = None):
        self.optimizer = optimizer
        self.ctr = 0
        super().__init__(optimizer, current_step if current_step is not None else -1)

    def lr_at(self, epoch: int) -> float:
        raise NotImplementedError

    def step(self, current_step=None):
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        lr = self.lr_at(current_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self):
        return self._last_lr


class StagedPolyLR(_EpochFunctionLR):
    """nnU-Net's poly decay (exponent 0.9) run once per stage: from `initial_lr` to 0 over the stage-1 epochs,
    then again from `initial_lr` to 0 over stage 2 (a restart at stage 2, as the paper's schedule restarts, so
    that LRG's Eq. 10 starts from 0 in stage 2)."""

    def __init__(self, optimizer, initial_lr: float, stage1_epochs: int, max_epochs: int, exponent: float = 0.9,
                 current_step: int = None):
        self.initial_lr, self.stage1_epochs, self.max_epochs, self.exponent = \
            initial_lr, stage1_epochs, max_epochs, exponent
        super().__init__(optimizer, current_step)

    def lr_at(self, epoch: int) -> float:
        start, length = (0, self.stage1_epochs) if epoch < self.stage1_epochs else \
            (self.stage1_epochs, self.max_epochs - self.stage1_epochs)
        return self.initial_lr * (1 - (epoch - start) / max(1, length)) ** self.exponent


class StagedCosineLR(_EpochFunctionLR):
    """The paper's schedule (Sec. 3.1; official code `SequentialLR`): linear warm-up from 1 % of the
    initial LR over `warmup_epochs`, cosine to 0 at the end of stage 1, then a restart at the initial LR
    and cosine to 0 at `max_epochs` (stage 2)."""

    def __init__(self, optimizer, initial_lr: float, stage1_epochs: int, max_epochs: int, warmup_epochs: int,
                 current_step: int = None):
        self.initial_lr = initial_lr
        self.stage1_epochs, self.max_epochs, self.warmup_epochs = stage1_epochs, max_epochs, warmup_epochs
        super().__init__(optimizer, current_step)

    def lr_at(self, epoch: int) -> float:
        if epoch < self.warmup_epochs:
            return self.initial_lr * (0.01 + 0.99 * epoch / self.warmup_epochs)
        if epoch < self.stage1_epochs:
            t = (epoch - self.warmup_epochs) / max(1, self.stage1_epochs - self.warmup_epochs)
        else:
            t = (epoch - self.stage1_epochs) / max(1, self.max_epochs - self.stage1_epochs)
        return 0.5 * self.initial_lr * (1 + math.cos(math.pi * min(t, 1.0)))


def planned_lrs(make_scheduler: Callable, initial_lr: float, num_epochs: int) -> List[float]:
    """The learning rate of every epoch under `make_scheduler(optimizer)`, read from a scheduler on a dummy
    optimizer (the real one is not stepped)."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=initial_lr)
    scheduler = make_scheduler(optimizer)
    lrs = []
    for epoch in range(num_epochs):
        scheduler.step(epoch)
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs
