"""Batch composition rules: of a batch of B, how many samples are unlabelled (b_u) and labelled (b_l = B - b_u).

Each rule sees the same `ScheduleState` and returns b_u for the coming epoch. M&N's
learning-rate-guided rule is Eq. (10)-(11) of the paper; the linear ramp is what the official
M&N code does; fixed and uniform are the usual baselines (paper Table 4, row b).
"""
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ScheduleState:
    epoch: int
    num_epochs: int
    start_epoch: int  # first epoch in which unlabelled data may be used (end of a supervised stage)
    lr_init: float  # the current student's initial learning rate
    lr_now: float  # ... its learning rate in this epoch
    lr_final: float  # ... its learning rate at the end of the schedule
    num_labeled_cases: int
    num_unlabeled_cases: int


class SamplingRule:
    """Returns b_u, the number of unlabelled samples in a batch of `batch_size`."""

    name = "base"

    def fraction(self, s: ScheduleState) -> float:
        raise NotImplementedError

    def num_unlabeled(self, batch_size: int, s: ScheduleState) -> int:
        if s.epoch < s.start_epoch or s.num_unlabeled_cases == 0:
            return 0
        frac = min(max(self.fraction(s), 0.0), 1.0)
        return int(math.floor(frac * batch_size + 1e-9))


class FixedRatio(SamplingRule):
    """b_u = floor(ratio * B), from `start_epoch` on (UA-MT / Mean Teacher: half and half)."""

    name = "fixed"

    def __init__(self, ratio: float = 0.5):
        self.ratio = ratio

    def fraction(self, s):
        return self.ratio


class UniformSampling(SamplingRule):
    """Samples drawn uniformly from the pooled cases: b_u / B = n_u / (n_l + n_u) (paper Table 4, (b))."""

    name = "uniform"

    def fraction(self, s):
        return s.num_unlabeled_cases / max(1, s.num_labeled_cases + s.num_unlabeled_cases)


class LinearRamp(SamplingRule):
    """b_u grows linearly in the epoch from 0 at `start_epoch` to B at the end (official M&N code,
    `create_loaders`: floor((epoch - 500) / 3500 * B), which never reaches B)."""

    name = "ramp"

    def fraction(self, s):
        return (s.epoch - s.start_epoch) / max(1, s.num_epochs - s.start_epoch)


class LRGSampling(SamplingRule):
    """Learning-rate-guided sampling, Eq. (10): b_u = floor((lr_init - lr_now) / (lr_init - lr_final) * B)."""

    name = "lrg"

    def fraction(self, s):
        if s.lr_init == s.lr_final:
            raise ValueError("LRG sampling needs a decaying learning rate (lr_init == lr_final).")
        return (s.lr_init - s.lr_now) / (s.lr_init - s.lr_final)


SAMPLING_RULES = {r.name: r for r in (FixedRatio, UniformSampling, LinearRamp, LRGSampling)}


def build_sampling_rule(name: str, **kwargs) -> SamplingRule:
    if name not in SAMPLING_RULES:
        raise ValueError(f"Unknown sampling rule {name!r}; choose one of {sorted(SAMPLING_RULES)}.")
    return SAMPLING_RULES[name](**kwargs)
