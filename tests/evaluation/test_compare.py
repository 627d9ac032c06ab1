"""Paired comparison of two scored prediction folders (benchmark verdicts)."""
import numpy as np
import pytest
from scipy.stats import wilcoxon

from nnunetv2_mn.evaluation.compare import compare_summaries, paired_difference, per_case_foreground_mean


def _summary(values, prefix="case"):
    """A summary shaped like evaluate_folder's: two labels per case."""
    return {"metric_per_case": [
        {"prediction_file": f"/x/{prefix}_{i:03d}.nii.gz",
         "metrics": {"1": {"Dice": v1, "HD95": 10 * (1 - v1)}, "2": {"Dice": v2, "HD95": 10 * (1 - v2)}}}
        for i, (v1, v2) in enumerate(values)]}


def test_per_case_mean_skips_non_finite_labels_and_empty_cases():
    s = _summary([(0.8, 0.6), (0.5, float("nan"))])
    s["metric_per_case"].append({"prediction_file": "/x/c.nii.gz",
                                 "metrics": {"1": {"Dice": float("nan")}, "2": {"Dice": None}}})
    assert per_case_foreground_mean(s, "Dice") == {"case_000.nii.gz": pytest.approx(0.7),
                                                   "case_001.nii.gz": pytest.approx(0.5)}


def test_paired_difference_matches_numpy_and_scipy():
    rng = np.random.default_rng(1)
    a = rng.uniform(0.5, 0.9, 40)
    b = a - 0.05 + rng.normal(0, 0.01, 40)
    r = paired_difference(a, b, n_boot=4000)
    assert r["n"] == 40 and r["mean"] == pytest.approx(np.mean(a - b))
    assert r["ci_low"] < r["mean"] < r["ci_high"] and r["ci_low"] > 0.04 and r["ci_high"] < 0.06
    assert r["p_wilcoxon"] == pytest.approx(wilcoxon(a - b).pvalue)
    assert paired_difference(a, a)["p_wilcoxon"] == 1.0
    with pytest.raises(ValueError):
        paired_difference([0.5], [0.4])


def test_verdicts_follow_the_interval_and_the_metric_direction():
    rng = np.random.default_rng(2)
    base = rng.uniform(0.5, 0.8, (40, 2))
    better = _summary(base + 0.1)
    worse = _summary(base)
    noisy = _summary(base + rng.normal(0, 0.05, (40, 2)))
    assert compare_summaries(better, worse)["verdict"] == "A"
    assert compare_summaries(worse, better)["verdict"] == "B"
    assert compare_summaries(noisy, worse)["verdict"] == "unresolved"
    hd = compare_summaries(better, worse, "HD95")  # lower is better: A has the smaller distances
    assert hd["mean"] < 0 and hd["verdict"] == "A"


def test_only_cases_scored_in_both_are_paired():
    a = _summary([(0.9, 0.9)] * 5)
    b = _summary([(0.8, 0.8)] * 3)
    assert compare_summaries(a, b)["n"] == 3


def test_too_few_finite_cases_give_no_verdict():
    nan = float("nan")
    a = _summary([(nan, nan)] * 4)  # e.g. HD95 of empty predictions
    r = compare_summaries(a, _summary([(0.8, 0.8)] * 4))
    assert r["verdict"] == "n/a" and r["n"] == 0 and np.isnan(r["mean"])
