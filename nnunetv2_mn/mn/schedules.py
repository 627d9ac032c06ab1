"""Learning-rate schedules of the M&N trainer, stepped once per epoch like nnU-Net's PolyLRScheduler."""
import math

from torch.optim.lr_scheduler import _LRScheduler


class StagedCosineLR(_LRScheduler):
    """The paper's schedule (Sec. 3.1; official code `SequentialLR`): linear warm-up from 1 % of the
    initial LR over `warmup_epochs`, cosine to 0 at the end of stage 1, then a restart at the initial LR
    and cosine to 0 at `max_epochs` (stage 2)."""

    def __init__(self, optimizer, initial_lr: float, stage1_epochs: int, max_epochs: int, warmup_epochs: int,
                 current_step: int = None):
        self.optimizer = optimizer
        self.initial_lr = initial_lr
        self.stage1_epochs, self.max_epochs, self.warmup_epochs = stage1_epochs, max_epochs, warmup_epochs
        self.ctr = 0
        super().__init__(optimizer, current_step if current_step is not None else -1)

    def lr_at(self, epoch: int) -> float:
        if epoch < self.warmup_epochs:
            return self.initial_lr * (0.01 + 0.99 * epoch / self.warmup_epochs)
        if epoch < self.stage1_epochs:
            t = (epoch - self.warmup_epochs) / max(1, self.stage1_epochs - self.warmup_epochs)
        else:
            t = (epoch - self.stage1_epochs) / max(1, self.max_epochs - self.stage1_epochs)
        return 0.5 * self.initial_lr * (1 + math.cos(math.pi * min(t, 1.0)))

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
