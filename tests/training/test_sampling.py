"""LRG sampling (Eq. 10-11) and the other batch-composition rules on known schedules."""
import math

import pytest

from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2_mn.training.sampling import ScheduleState, build_sampling_rule


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
