"""LRG sampling (Eq. 10-11) and the other batch-composition rules on known schedules."""
import math

import pytest

import numpy as np

from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2_mn.training.sampling import (ScheduleState, build_sampling_rule, foreground_forced,
                                           labeled_sample_indices)


def state(epoch, lr_now, lr_init=1e-2, start=0, num_epochs=100, n_l=8, n_u=32):
    return ScheduleState(epoch, num_epochs, start, lr_init, lr_now, 0.0, n_l, n_u)


def test_lrg_equation_10_values():
    rule = build_sampling_rule("lrg")
    B = 5
    assert rule.num_unlabeled(B, state(0, 1e-2)) == 0  # no decay yet: all labelled
    assert rule.num_unlabeled(B, state(50, 0.5e-2)) == 2  # floor(0.5 * 5)
    assert rule.num_unlabeled(B, state(90, 0.1e-2)) == 4  # floor(0.9 * 5)
    assert rule.num_unlabeled(B, state(99, 0.0)) == 5  # lr at its final value: all unlabelled
    # floor, not round: 0.79 * 5 = 3.95 -> 3
    assert rule.num_unlabeled(B, state(60, 0.21e-2)) == 3


def test_lrg_follows_nnunet_poly_schedule_and_grows_monotonically():
    import torch
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-2)
    sched = PolyLRScheduler(opt, 1e-2, 100)
    rule, B, b_u = build_sampling_rule("lrg"), 9, []
    for epoch in range(100):
        sched.step(epoch)
        lr = opt.param_groups[0]["lr"]
        b_u.append(rule.num_unlabeled(B, state(epoch, lr)))
        assert b_u[-1] == math.floor((1e-2 - lr) / 1e-2 * B + 1e-9)
    assert b_u == sorted(b_u) and b_u[0] == 0 and b_u[-1] == B - 1


def test_no_unlabelled_before_start_epoch_or_without_unlabelled_cases():
    for name in ("lrg", "ramp", "fixed", "uniform"):
        rule = build_sampling_rule(name)
        assert rule.num_unlabeled(4, state(10, 0.001, start=20)) == 0
        assert rule.num_unlabeled(4, state(50, 0.001, n_u=0)) == 0


def test_ramp_matches_official_code():
    """official create_loaders: floor((epoch - 500) / 3500 * 5) for 4000 epochs."""
    rule = build_sampling_rule("ramp")
    for epoch in (500, 1199, 1200, 1900, 2600, 3300, 3999):
        expected = math.floor((epoch - 500) / 3500 * 5)
        assert rule.num_unlabeled(5, state(epoch, 0, start=500, num_epochs=4000)) == expected


def test_fixed_and_uniform():
    assert build_sampling_rule("fixed", ratio=0.5).num_unlabeled(4, state(0, 1e-2)) == 2
    assert build_sampling_rule("uniform").num_unlabeled(5, state(0, 1e-2, n_l=8, n_u=32)) == 4  # 32/40 * 5


def test_unknown_rule_and_constant_lr_fail_clearly():
    with pytest.raises(ValueError, match="choose one of"):
        build_sampling_rule("nope")
    with pytest.raises(ValueError, match="decaying learning rate"):
        build_sampling_rule("lrg").num_unlabeled(4, ScheduleState(1, 10, 0, 1e-2, 1e-2, 1e-2, 1, 1))


def _poly_states(num_epochs=40, start=5, lr_init=1e-2):
    lrs = [lr_init * (1 - e / num_epochs) ** 0.9 for e in range(num_epochs)]
    return [state(e, lrs[e], lr_init=lr_init, start=start, num_epochs=num_epochs) for e in range(num_epochs)]


def test_floor_rule_degenerates_at_nnunet_batch_sizes():
    """Eq. 10 as printed, B = 2 with nnU-Net's poly: b_u = 0 for the first ~54 % of training, never 2; B = 1
    (two GPUs at batch 2): never an unlabelled sample."""
    rule, states = build_sampling_rule("lrg", "floor"), _poly_states()
    b_u = [rule.num_unlabeled(2, s) for s in states]
    first = b_u.index(1)
    assert 0.5 < first / len(states) < 0.6 and max(b_u) == 1
    assert rule.max_num_unlabeled(1, states[5:]) == 0
    assert build_sampling_rule("lrg", "expected").max_num_unlabeled(1, states[5:]) == 1


def test_expected_rounding_keeps_eq10_share_at_any_batch_size():
    rng = np.random.default_rng(0)
    rule = build_sampling_rule("lrg", "expected")
    for batch_size in (1, 2, 3):
        for share in (0.0, 0.1, 0.37, 0.5, 0.99, 1.0):
            draws = [rule.round(share, batch_size, rng) for _ in range(4000)]
            assert set(draws) <= {int(np.floor(share * batch_size)), int(np.ceil(share * batch_size))}
            assert np.mean(draws) / batch_size == pytest.approx(share, abs=0.03)
    # a whole number of samples is not randomised: the same as Eq. 10's floor
    assert {rule.round(0.5, 2, rng) for _ in range(50)} == {1}
    with pytest.raises(ValueError, match="rounding"):
        build_sampling_rule("lrg", "ceil")


def test_foreground_forced_is_nnunets_rule():
    """nnU-Net forces foreground in the last round(B * p) samples: B = 2, p = 0.33 -> the second one."""
    assert foreground_forced(2, 0.33) == [False, True]
    assert foreground_forced(3, 0.33) == [False, False, True]
    assert foreground_forced(1, 0.33) == [False]


def test_labelled_samples_keep_nnunets_foreground_share():
    """The kept b_l samples hold nnU-Net's share of foreground-forced patches: all of the batch at b_l = B (as
    nnU-Net), and at B = 2, b_l = 1 the forced sample in half of the batches (it was never kept before)."""
    rng = np.random.default_rng(0)
    forced = foreground_forced(2, 0.33)
    assert labeled_sample_indices(2, forced, rng) == [0, 1]
    assert labeled_sample_indices(0, forced, rng) == []
    kept = [labeled_sample_indices(1, forced, rng) for _ in range(4000)]
    assert {tuple(k) for k in kept} == {(0,), (1,)}
    assert np.mean([forced[k[0]] for k in kept]) == pytest.approx(0.5, abs=0.03)
    forced6 = foreground_forced(6, 0.33)  # two forced of six
    kept = [labeled_sample_indices(3, forced6, rng) for _ in range(4000)]
    assert np.mean([sum(forced6[i] for i in k) / 3 for k in kept]) == pytest.approx(2 / 6, abs=0.03)


def test_dice_guided_share_follows_the_teachers_measured_quality():
    from nnunetv2_mn.training.sampling import smoothed

    rule = build_sampling_rule("dice_guided", "floor")
    base = state(10, 1e-2)
    assert not rule.predictable
    assert rule.share(base) == 0.0  # not measured yet: labelled only
    for dice, share in ((0.3, 0.0), (0.5, 0.0), (0.7, 0.5), (0.9, 1.0), (0.97, 1.0)):
        assert rule.share(ScheduleState(*list(base.__dict__.values())[:-1], teacher_dice=dice)) == pytest.approx(share)
    capped = build_sampling_rule("dice_guided", dice_low=0.6, dice_high=0.8, max_share=0.5)
    assert capped.share(ScheduleState(*list(base.__dict__.values())[:-1], teacher_dice=0.7)) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="dice_low < dice_high"):
        build_sampling_rule("dice_guided", dice_low=0.9, dice_high=0.5)
    # nnU-Net's smoothing of its pseudo Dice: 0.9 * ema + 0.1 * new, NaNs (epochs without a value) skipped
    assert smoothed([0.5, float("nan"), 1.0]) == pytest.approx(0.9 * 0.5 + 0.1 * 1.0)
    assert np.isnan(smoothed([]))
