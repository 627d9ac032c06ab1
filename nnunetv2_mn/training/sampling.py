"""Batch composition: how many unlabelled samples (b_u, at most the plans' batch size B) a step takes, whether they
come on top of nnU-Net's whole labelled batch (b_l = B, the default 'add') or in place of labelled ones (b_l = B - b_u,
the paper's 'replace'), and which of nnU-Net's labelled samples are kept.

A `SamplingRule` gives the unlabelled share b_u / B of an epoch from a `ScheduleState`; its `rounding` turns
the share into b_u for each step:

* 'floor': b_u = floor(share * B), Eq. (10) as printed. At nnU-Net's small batches it is coarse: with B = 2 and
  the poly schedule, LRG gives b_u = 0 for the first ~54 % of training and never reaches 2, and with B = 1 (two
  GPUs at batch 2) b_u = 0 for the whole run;
* 'expected': stochastic rounding per step, b_u = floor(share * B) + Bernoulli(frac(share * B)), so that
  E[b_u] / B equals the share at any B (and equals 'floor' whenever share * B is a whole number).

M&N's learning-rate-guided share is Eq. (10)-(11) of the paper; the linear ramp is what the official M&N code
does; fixed and uniform are the usual baselines (paper Table 4, row b); the Dice-guided share follows the measured
quality of the teacher instead of the clock.
"""
import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import List, Sequence

import numpy as np
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader

ROUNDINGS = ("floor", "expected")
#: where the b_u unlabelled samples of a step go: on top of the whole labelled batch (the default of the trainers) or
#: in place of labelled ones (the paper)
UNLABELED_SAMPLES = ("replace", "add")


def check_unlabeled_samples(value: str, owner: str = "unlabeled_samples") -> None:
    """Refuse an `unlabeled_samples` setting that is not one of UNLABELED_SAMPLES."""
    if value not in UNLABELED_SAMPLES:
        raise ValueError(f"{owner} = {value!r} is not one of {UNLABELED_SAMPLES}: 'replace' (b_l = B - b_u, the "
                         f"paper) or 'add' (b_l = B).")


@dataclass(frozen=True)
class ScheduleState:
    epoch: int
    num_epochs: int
    start_epoch: int  # first epoch in which unlabelled data may be used (end of a supervised stage)
    lr_init: float  # the current student's learning rate at the start of its schedule (or of stage 2)
    lr_now: float  # ... its learning rate in this epoch
    lr_final: float  # ... its learning rate at the end of the schedule
    num_labeled_cases: int
    num_unlabeled_cases: int
    #: the teacher's validation pseudo Dice, smoothed (NaN: not measured yet or not available)
    teacher_dice: float = float("nan")


class SamplingRule:
    """The unlabelled share of an epoch (`share`) and b_u for one step (`num_unlabeled`)."""

    name = "base"
    #: whether the share follows from the schedule alone (so the trainer can read it before training)
    predictable = True

    def __init__(self, rounding: str = "floor"):
        if rounding not in ROUNDINGS:
            raise ValueError(f"Unknown rounding {rounding!r} of the sampling rule; choose one of {ROUNDINGS}.")
        self.rounding = rounding

    @property
    def description(self) -> str:
        return f"{self.name} ({self.rounding} rounding)"

    def fraction(self, s: ScheduleState) -> float:
        raise NotImplementedError

    def share(self, s: ScheduleState) -> float:
        """b_u / B of the epoch in [0, 1]; 0 before `start_epoch` or without unlabelled cases."""
        if s.epoch < s.start_epoch or s.num_unlabeled_cases == 0:
            return 0.0
        return min(max(self.fraction(s), 0.0), 1.0)

    def round(self, share: float, batch_size: int, rng=np.random) -> int:
        """b_u of one step for an epoch share (floor: Eq. 10; expected: stochastic rounding)."""
        x = share * batch_size
        low = int(math.floor(x + 1e-9))
        if self.rounding == "floor" or low >= batch_size:
            return low
        return low + int(rng.uniform() < x - low)

    def num_unlabeled(self, batch_size: int, s: ScheduleState, rng=np.random) -> int:
        return self.round(self.share(s), batch_size, rng)

    def max_num_unlabeled(self, batch_size: int, states: Sequence[ScheduleState]) -> int:
        """The largest b_u this rule can give in any of `states` (0: it never samples unlabelled data)."""
        shares = [self.share(s) for s in states] or [0.0]
        if self.rounding == "floor":
            return max(int(math.floor(x * batch_size + 1e-9)) for x in shares)
        return max(int(math.ceil(x * batch_size - 1e-9)) for x in shares)


class FixedRatio(SamplingRule):
    """b_u / B = ratio from `start_epoch` on (UA-MT / Mean Teacher: half and half)."""

    name = "fixed"

    def __init__(self, ratio: float = 0.5, rounding: str = "floor"):
        super().__init__(rounding)
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
    """Learning-rate-guided sampling, Eq. (10): b_u / B = (lr_init - lr_now) / (lr_init - lr_final)."""

    name = "lrg"

    def fraction(self, s):
        if s.lr_init == s.lr_final:
            raise ValueError("LRG sampling needs a decaying learning rate (lr_init == lr_final).")
        return (s.lr_init - s.lr_now) / (s.lr_init - s.lr_final)


class DiceGuidedSampling(SamplingRule):
    """The unlabelled share rises with the teacher's measured quality rather than with the clock: its validation
    pseudo Dice d (an exponential moving average, as nnU-Net smooths its own), mapped linearly from 0 at
    `dice_low` to `max_share` at `dice_high`: b_u / B = max_share * clip((d - dice_low) / (dice_high - dice_low)).
    No unlabelled samples before the teacher has been measured."""

    name = "dice_guided"
    predictable = False

    def __init__(self, dice_low: float = 0.5, dice_high: float = 0.9, max_share: float = 1.0,
                 rounding: str = "floor"):
        super().__init__(rounding)
        if not 0.0 <= dice_low < dice_high <= 1.0 or not 0.0 < max_share <= 1.0:
            raise ValueError(f"dice_guided sampling needs 0 <= dice_low < dice_high <= 1 and 0 < max_share <= 1, "
                             f"not {dice_low}, {dice_high}, {max_share}")
        self.dice_low, self.dice_high, self.max_share = dice_low, dice_high, max_share

    def fraction(self, s):
        if not math.isfinite(s.teacher_dice):
            return 0.0
        return self.max_share * (s.teacher_dice - self.dice_low) / (self.dice_high - self.dice_low)


SAMPLING_RULES = {r.name: r for r in (FixedRatio, UniformSampling, LinearRamp, LRGSampling, DiceGuidedSampling)}


def smoothed(values: Sequence[float], momentum: float = 0.9) -> float:
    """Exponential moving average of a per-epoch series, NaNs skipped (nnU-Net's ema_fg_dice: 0.9 / 0.1)."""
    ema = float("nan")
    for v in values:
        if v is None or not math.isfinite(v):
            continue
        ema = v if not math.isfinite(ema) else momentum * ema + (1 - momentum) * v
    return ema


def build_sampling_rule(name: str, rounding: str = "floor", **kwargs) -> SamplingRule:
    if name not in SAMPLING_RULES:
        raise ValueError(f"Unknown sampling rule {name!r}; choose one of {sorted(SAMPLING_RULES)}.")
    return SAMPLING_RULES[name](rounding=rounding, **kwargs)


# ---------------------------------------------------------------------------------------------- labelled samples
def foreground_forced(batch_size: int, oversample_foreground_percent: float) -> List[bool]:
    """Which samples of a batch nnU-Net's loader forces to contain foreground (its own rule,
    `nnUNetDataLoader._oversample_last_XX_percent`: the last ones)."""
    loader = SimpleNamespace(batch_size=batch_size, oversample_foreground_percent=oversample_foreground_percent)
    return [bool(nnUNetDataLoader._oversample_last_XX_percent(loader, i)) for i in range(batch_size)]


def labeled_sample_indices(b_l: int, forced: Sequence[bool], rng=np.random) -> List[int]:
    """Which b_l samples of nnU-Net's labelled batch to keep so that the share of foreground-forced samples
    stays nnU-Net's: the batch's forced share times b_l of them are forced ones (stochastically rounded, so the
    expected share is exact at any b_l), taken from the end of the batch, the rest from its start. With
    b_l = B this is the whole batch, as nnU-Net trains it."""
    batch_size, n_forced = len(forced), int(sum(forced))
    if not 0 <= b_l <= batch_size:
        raise ValueError(f"b_l={b_l} must lie in [0, {batch_size}]")
    x = n_forced / max(1, batch_size) * b_l
    keep_forced = int(math.floor(x + 1e-9))
    keep_forced += int(keep_forced < x - 1e-9 and rng.uniform() < x - keep_forced)
    keep_forced = min(max(keep_forced, b_l - (batch_size - n_forced)), n_forced, b_l)
    unforced = [i for i, f in enumerate(forced) if not f][:b_l - keep_forced]
    chosen = [i for i, f in enumerate(forced) if f][n_forced - keep_forced:]
    return sorted(unforced + chosen)
