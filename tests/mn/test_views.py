"""Multi-view (tri-planar) 2D prediction: per-view shapes, the fused pseudo-mask, the weights (issue 13)."""
import pytest
import torch
from torch import nn

from nnunetv2_mn.mn.slicing import check_slice_axes, fuse_views, predict_slices, predict_views, view_weights


class _Tiny2D(nn.Module):
    """A 2D model whose output depends on the in-plane neighbourhood, so that the views differ."""

    def __init__(self, k=3):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, k, 3, padding=1)
        self.calls = []

    def forward(self, x):
        self.calls.append(tuple(x.shape))
        return self.conv(x)


def test_per_view_shapes_and_fused_mean_of_softmaxes():
    model, x = _Tiny2D(), torch.randn(2, 1, 4, 5, 6)
    fused, logits = predict_views(model, x, (0, 1, 2))
    assert len(logits) == 3 and all(l.shape == (2, 3, 4, 5, 6) for l in logits)
    # each view is the 2D model on that axis' slices: B*S_axis slices of the other two sides
    assert model.calls == [(8, 3, 5, 6), (10, 3, 4, 6), (12, 3, 4, 5)]
    for axis, l in enumerate(logits):
        torch.testing.assert_close(l, predict_slices(model, x, axis))
    expected = sum(torch.softmax(l, 1) for l in logits) / 3
    torch.testing.assert_close(fused, expected)
    torch.testing.assert_close(fused.sum(1), torch.ones(2, 4, 5, 6))
    assert not torch.allclose(logits[0], logits[1])  # the views are different predictions


def test_one_view_is_the_single_axis_prediction():
    model, x = _Tiny2D(), torch.randn(1, 2, 3, 5, 6)
    fused, logits = predict_views(model, x, (2,), chunk_size=4)
    torch.testing.assert_close(logits[0], predict_slices(model, x, 2))
    torch.testing.assert_close(fused, torch.softmax(logits[0], 1))


def test_weighted_fusion():
    a, b = torch.randn(1, 2, 2, 2, 2), torch.randn(1, 2, 2, 2, 2)
    torch.testing.assert_close(fuse_views([a, b], [3.0, 1.0]), 0.75 * torch.softmax(a, 1) + 0.25 * torch.softmax(b, 1))
    torch.testing.assert_close(view_weights(3), torch.full((3,), 1 / 3))
    for bad in ([1.0], [0.0, 0.0], [-1.0, 2.0], [float("nan"), 1.0]):
        with pytest.raises(ValueError, match="view weights"):
            view_weights(2, bad)


def test_slice_axes_are_checked():
    assert check_slice_axes(None, 2) == (2,)
    assert check_slice_axes([0, 1, 2]) == (0, 1, 2)
    for bad in ((), (0, 0), (3,), (0, -1)):
        with pytest.raises(ValueError, match="slice_axes"):
            check_slice_axes(bad)
