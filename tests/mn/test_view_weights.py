"""Tri-planar view weighting (issue 13): the per-view Dice EMA and the fusion weights it gives (pure)."""
import math

import pytest
import torch

from nnunetv2_mn.mn.slicing import dice_view_weights, fuse_views, update_view_dice

NAN = float("nan")


def test_view_dice_is_smoothed_as_nnunets_pseudo_dice():
    first = update_view_dice([NAN, NAN, NAN], [0.5, NAN, 0.2])
    assert first[0] == 0.5 and math.isnan(first[1]) and first[2] == 0.2  # first measurement as is, NaN skipped
    second = update_view_dice(first, [1.0, 0.4, NAN])
    assert second == pytest.approx([0.9 * 0.5 + 0.1 * 1.0, 0.4, 0.2])
    with pytest.raises(ValueError):
        update_view_dice([NAN, NAN], [0.1, 0.2, 0.3])


def test_weights_follow_the_measured_dice():
    assert dice_view_weights([NAN, NAN, NAN]) is None  # before measurement: equal weights
    assert dice_view_weights([0.6, NAN, 0.3]) is None  # a view not measured yet: still equal
    assert dice_view_weights([0.0, 0.0, 0.0]) is None
    w = dice_view_weights([0.6, 0.3, 0.1])
    assert w == pytest.approx((0.6, 0.3, 0.1)) and w[0] > w[1] > w[2]
    assert sum(dice_view_weights([0.8, 0.7, 0.9])) == pytest.approx(1.0)


def test_weighted_fusion_is_a_distribution():
    torch.manual_seed(0)
    logits = [torch.randn(2, 3, 4, 5, 6) for _ in range(3)]
    w = dice_view_weights([0.9, 0.2, 0.4])
    fused = fuse_views(logits, w)
    torch.testing.assert_close(fused.sum(1), torch.ones(2, 4, 5, 6))
    expected = sum(wi * torch.softmax(l, 1) for wi, l in zip(w, logits))
    torch.testing.assert_close(fused, expected)
    torch.testing.assert_close(fuse_views(logits, None), sum(torch.softmax(l, 1) for l in logits) / 3)
