"""Slicing 3D patches for the 2D model and stacking the predictions back (Eq. 2, 8)."""
import pytest
import torch

from nnunetv2_mn.mn.slicing import (predict_slices, sample_slice_index, slices_to_volume, take_slices,
                                    to_three_channels, volume_to_slices)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_round_trip(axis):
    x = torch.randn(2, 3, 5, 6, 7)
    s = volume_to_slices(x, axis)
    assert s.shape == (2 * x.shape[2 + axis], 3, *[n for i, n in enumerate(x.shape[2:]) if i != axis])
    torch.testing.assert_close(slices_to_volume(s, 2, axis), x)


def test_slices_are_the_volume_planes_in_order():
    x = torch.randn(2, 1, 4, 5, 6)
    s = volume_to_slices(x, 0)
    torch.testing.assert_close(s[0, 0], x[0, 0, 0])
    torch.testing.assert_close(s[3, 0], x[0, 0, 3])
    torch.testing.assert_close(s[4, 0], x[1, 0, 0])  # second volume follows the first
    s2 = volume_to_slices(x, 2)
    torch.testing.assert_close(s2[7, 0], x[1, 0, :, :, 1])


def test_three_channel_mapping():
    one = torch.randn(4, 1, 8, 8)
    assert torch.equal(to_three_channels(one)[:, 2], one[:, 0])
    two = torch.randn(4, 2, 8, 8)
    torch.testing.assert_close(to_three_channels(two)[:, 2], two.mean(1))
    five = torch.randn(4, 5, 8, 8)
    out = to_three_channels(five)
    torch.testing.assert_close(out[:, 1], five[:, [1, 4]].mean(1))
    assert out.shape == (4, 3, 8, 8)


@pytest.mark.parametrize("chunk", [0, 3, 100])
def test_predict_slices_is_slice_wise_and_chunking_changes_nothing(chunk):
    conv = torch.nn.Conv2d(3, 2, 3, padding=1)
    x = torch.randn(2, 1, 5, 8, 9)
    out = predict_slices(conv, x, axis=0, chunk_size=chunk)
    assert out.shape == (2, 2, 5, 8, 9)
    torch.testing.assert_close(out[1, :, 3], conv(x[1:2, :, 3].expand(-1, 3, -1, -1))[0])


@pytest.mark.parametrize("n,fraction,k", [(40, 0.25, 10), (7, 0.25, 2), (3, 0.01, 1)])
def test_sample_slice_index_draws_distinct_sorted_positions(n, fraction, k):
    seen = set()
    for _ in range(20):
        index = sample_slice_index(n, fraction)
        assert index.shape == (k,) and index.dtype == torch.long
        assert torch.equal(index, index.sort().values) and len(set(index.tolist())) == k
        assert 0 <= int(index.min()) and int(index.max()) < n
        seen.update(index.tolist())
    assert len(seen) > k  # a fresh subset each call


def test_sample_slice_index_all_slices_and_bad_fractions():
    assert sample_slice_index(40, 1.0) is None
    assert sample_slice_index(2, 0.9) is None  # rounds to every slice
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="slice fraction"):
            sample_slice_index(40, bad)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_take_slices_commutes_with_slice_wise_prediction(axis):
    conv = torch.nn.Conv2d(3, 2, 3, padding=1)
    x = torch.randn(2, 1, 5, 6, 7)
    index = torch.tensor([0, 3])
    sub = take_slices(x, index, axis)
    assert sub.shape[2 + axis] == 2 and torch.equal(sub.select(2 + axis, 1), x.select(2 + axis, 3))
    torch.testing.assert_close(predict_slices(conv, sub, axis), take_slices(predict_slices(conv, x, axis), index, axis))
    assert take_slices(x, None, axis) is x
