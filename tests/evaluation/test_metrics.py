"""Metrics against medpy.metric.binary on random and hand-made masks, plus the empty-mask conventions."""
import math

import numpy as np
import pytest
from medpy.metric import binary as medpy_binary

from nnunetv2_mn.evaluation import metrics as M


def _medpy_all(pred, ref, spacing=None):
    return {"Dice": medpy_binary.dc(pred, ref), "Jaccard": medpy_binary.jc(pred, ref),
            "HD95": medpy_binary.hd95(pred, ref, voxelspacing=spacing),
            "ASD": medpy_binary.asd(pred, ref, voxelspacing=spacing)}


def _assert_matches_medpy(pred, ref, spacing=None):
    ours = M.binary_metrics(pred, ref, spacing)
    expected = _medpy_all(pred, ref, spacing)
    for name, value in expected.items():
        assert ours[name] == pytest.approx(value, rel=1e-12, abs=1e-12), name
    assert ours["empty"] == "none"
    assert ours["n_pred"] == pred.sum() and ours["n_ref"] == ref.sum()


def _blobby(rng, shape, p):
    """Random mask with a few compact blobs (smoothed noise) so surfaces are realistic."""
    from scipy.ndimage import uniform_filter
    noise = uniform_filter(rng.random(shape), size=3)
    return noise > np.quantile(noise, 1 - p)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ndim", [2, 3])
def test_random_masks_match_medpy(seed, ndim):
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in rng.integers(8, 24, ndim))
    pred, ref = _blobby(rng, shape, rng.uniform(0.05, 0.5)), _blobby(rng, shape, rng.uniform(0.05, 0.5))
    spacing = tuple(float(s) for s in rng.uniform(0.3, 4.0, ndim))
    _assert_matches_medpy(pred, ref)            # voxel units
    _assert_matches_medpy(pred, ref, spacing)   # anisotropic mm


def test_sparse_noise_touching_border_matches_medpy():
    rng = np.random.default_rng(42)
    pred, ref = rng.random((9, 11, 7)) < 0.3, rng.random((9, 11, 7)) < 0.6
    assert pred[0].any() and ref[:, :, -1].any()  # objects cut by the image border
    _assert_matches_medpy(pred, ref, (2.5, 0.7, 1.1))
    _assert_matches_medpy(pred, ref, 1.7)  # scalar spacing, like medpy


def test_shifted_cubes_known_overlap_and_medpy_distances():
    ref = np.zeros((16, 12, 12), bool)
    ref[4:8, 4:8, 4:8] = True
    pred = np.roll(ref, 3, axis=0)  # 1 slice of overlap
    assert M.dice(pred, ref) == pytest.approx(2 * 16 / 128)
    assert M.jaccard(pred, ref) == pytest.approx(16 / 112)
    # a pure translation: every surface voxel is at most 3 slices away
    spacing = (2.0, 0.5, 0.5)
    assert M.hd95(pred, ref, spacing) <= 3 * 2.0 + 1e-9
    _assert_matches_medpy(pred, ref, spacing)
    assert M.hd95(pred, ref, spacing) != pytest.approx(M.hd95(pred, ref, spacing[::-1]))


def test_single_voxels_spacing_follows_array_axes():
    pred, ref = np.zeros((6, 6, 6), bool), np.zeros((6, 6, 6), bool)
    pred[0, 0, 0] = True
    ref[1, 2, 4] = True
    spacing = (2.0, 1.0, 0.5)
    expected = math.sqrt((1 * 2.0) ** 2 + (2 * 1.0) ** 2 + (4 * 0.5) ** 2)
    assert M.hd95(pred, ref, spacing) == pytest.approx(expected)
    assert M.asd(pred, ref, spacing) == pytest.approx(expected)
    assert M.hd95(pred, ref) == pytest.approx(math.sqrt(1 + 4 + 16))


def test_asd_is_directed_prediction_to_reference():
    ref = np.zeros((11, 11, 11), bool)
    ref[2:9, 2:9, 2:9] = True   # 7-cube shell at 2 and 8
    pred = np.zeros_like(ref)
    pred[4:7, 4:7, 4:7] = True  # 3-cube: every surface voxel has a coordinate 4 or 6
    assert M.asd(pred, ref) == pytest.approx(2.0)
    assert M.asd(ref, pred) > 2.0  # the other direction (corners are farther)
    assert M.asd(pred, ref) == pytest.approx(medpy_binary.asd(pred, ref))
    assert M.asd(pred, ref) != pytest.approx(medpy_binary.assd(pred, ref))
    _assert_matches_medpy(pred, ref, (1.0, 3.0, 0.4))


def test_hd95_is_percentile_not_max():
    ref = np.zeros((40, 40), bool)
    ref[5:35, 5:35] = True
    pred = ref.copy()
    pred[0, 0] = True  # one far outlier voxel
    assert M.hd95(pred, ref) < medpy_binary.hd(pred, ref)
    assert M.hd95(pred, ref) == pytest.approx(medpy_binary.hd95(pred, ref))


def test_surface_connectivity_one_and_image_border():
    cube = np.zeros((5, 5, 5), bool)
    cube[1:4, 1:4, 1:4] = True
    assert M.surface(cube).sum() == 26
    full = np.ones((4, 4, 4), bool)
    assert M.surface(full).sum() == 64 - 8  # outside the image counts as background
    cross = np.zeros((5, 5), bool)
    cross[2, 1:4] = cross[1:4, 2] = True
    assert M.surface(cross).sum() == 4  # 4-neighbourhood erosion keeps the centre inside


def test_empty_conventions():
    empty, blob = np.zeros((6, 6, 6), bool), np.zeros((6, 6, 6), bool)
    blob[2:4, 2:4, 2:4] = True
    both = M.binary_metrics(empty, empty, (1.0, 2.0, 3.0))
    assert (both["Dice"], both["Jaccard"], both["HD95"], both["ASD"], both["empty"]) == (1.0, 1.0, 0.0, 0.0, "both")
    # (medpy 0.5.2 returns NaN with a RuntimeWarning for dc/jc of two empty masks)
    for pred, ref, flag in ((empty, blob, "prediction"), (blob, empty, "reference")):
        with pytest.raises(RuntimeError):
            medpy_binary.hd95(pred, ref)  # medpy has no convention: it raises
        res = M.binary_metrics(pred, ref)
        assert (res["Dice"], res["Jaccard"], res["empty"]) == (0.0, 0.0, flag)
        assert math.isnan(res["HD95"]) and math.isnan(res["ASD"])
        penalised = M.binary_metrics(pred, ref, one_empty_distance=50.0)
        assert (penalised["HD95"], penalised["ASD"]) == (50.0, 50.0)
    with pytest.raises(ValueError):
        M.hd95(empty, blob)


def test_shape_and_spacing_errors():
    a = np.ones((3, 3), bool)
    with pytest.raises(ValueError, match="shape mismatch"):
        M.binary_metrics(a, np.ones((3, 4), bool))
    with pytest.raises(ValueError, match="spacing"):
        M.hd95(a, a, (1.0, 1.0, 1.0))


def test_multiclass_regions_and_ignore_label_match_medpy():
    rng = np.random.default_rng(3)
    pred, ref = rng.integers(0, 4, (10, 9, 8)), rng.integers(0, 4, (10, 9, 8))
    spacing = (3.0, 0.8, 0.8)
    labels = {"1": 1, "2": 2, "(1, 2)": (1, 2)}
    res = M.multiclass_metrics(pred, ref, labels, spacing)
    for key, lab in labels.items():
        p, r = np.isin(pred, lab), np.isin(ref, lab)
        for name, value in _medpy_all(p, r, spacing).items():
            assert res[key][name] == pytest.approx(value, rel=1e-12), (key, name)
    ignored = M.multiclass_metrics(pred, ref, {"1": 1}, spacing, ignore_label=3)
    keep = ref != 3
    expected = _medpy_all((pred == 1) & keep, (ref == 1) & keep, spacing)
    assert ignored["1"]["Dice"] == pytest.approx(expected["Dice"])
    assert ignored["1"]["HD95"] == pytest.approx(expected["HD95"])
    assert ignored["1"]["Dice"] != pytest.approx(res["1"]["Dice"])


def test_summarize_excludes_non_finite_and_counts_them():
    nan = float("nan")
    cases = [{"1": {"Dice": 0.8, "HD95": 2.0}, "2": {"Dice": 0.0, "HD95": nan}},
             {"1": {"Dice": 0.6, "HD95": 4.0}, "2": {"Dice": 0.5, "HD95": 3.0}},
             {"1": {"Dice": 1.0, "HD95": 0.0}, "2": {"Dice": 0.0, "HD95": nan}}]
    s = M.summarize(cases, ["1", "2"], metrics=("Dice", "HD95"))
    assert s["mean"]["1"]["Dice"] == pytest.approx(0.8)
    assert s["std"]["1"]["Dice"] == pytest.approx(np.std([0.8, 0.6, 1.0]))
    assert s["mean"]["2"]["HD95"] == pytest.approx(3.0)
    assert (s["n_valid"]["2"]["HD95"], s["n_excluded"]["2"]["HD95"]) == (1, 2)
    assert s["n_excluded"]["2"]["Dice"] == 0 and s["mean"]["2"]["Dice"] == pytest.approx(0.5 / 3)
    assert s["foreground_mean"]["HD95"] == pytest.approx((2.0 + 3.0) / 2)
    assert (s["median"]["1"]["HD95"], s["min"]["1"]["HD95"], s["max"]["1"]["HD95"]) == (2.0, 0.0, 4.0)
    all_nan = M.summarize([{"1": {"HD95": nan}}], ["1"], metrics=("HD95",))
    assert all_nan["mean"]["1"]["HD95"] is None and all_nan["foreground_mean"]["HD95"] is None
