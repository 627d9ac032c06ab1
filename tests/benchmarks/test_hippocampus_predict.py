"""benchmarks/hippocampus_predict.py: the ranking statistics of the uncertainty check and the report."""
import pytest

from benchmarks.hippocampus_predict import dice_by_case_id, markdown, ranking_agreement


def test_a_score_that_orders_the_cases_by_dice_ranks_them_perfectly():
    dice = {f"c{i}": 0.5 + 0.04 * i for i in range(10)}
    perfect = ranking_agreement({c: 1 - d for c, d in dice.items()}, dice, k=3)
    assert perfect["spearman_rho"] == pytest.approx(-1.0) and perfect["worst_k_among_most_uncertain_k"] == 3
    assert perfect["expected_by_chance"] == pytest.approx(0.9) and perfect["n"] == 10
    backwards = ranking_agreement(dict(dice), dice, k=3)  # most uncertain = best cases
    assert backwards["spearman_rho"] == pytest.approx(1.0) and backwards["worst_k_among_most_uncertain_k"] == 0


def test_cases_without_a_score_are_left_out():
    dice = {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.6, "e": 0.5}
    r = ranking_agreement({"a": 0.1, "b": None, "c": 0.3, "d": float("nan"), "e": 0.9, "f": 1.0}, dice, k=5)
    assert r["n"] == 3 and r["k"] == 3 and r["spearman_rho"] == pytest.approx(-1.0)


def test_too_few_cases_raise():
    with pytest.raises(ValueError, match="at least 3"):
        ranking_agreement({"a": 0.1, "b": None, "c": 0.3}, {"a": 0.9, "b": 0.8, "c": 0.7}, k=2)


def test_dice_by_case_id_strips_the_file_ending():
    summary = {"metric_per_case": [
        {"prediction_file": "/x/hippocampus_001.nii.gz", "metrics": {"1": {"Dice": 0.8}, "2": {"Dice": 0.6}}},
        {"prediction_file": "/x/hippocampus_002.nii.gz", "metrics": {"1": {"Dice": None}, "2": {"Dice": 0.5}}}]}
    assert dice_by_case_id(summary) == {"hippocampus_001": pytest.approx(0.7), "hippocampus_002": 0.5}


def test_report_lists_every_weight_and_score():
    diff = {"mean": 0.01, "ci_low": -0.002, "ci_high": 0.02, "p_wilcoxon": 0.1}
    agreement = {"spearman_rho": -0.4, "p": 0.01, "k": 10, "worst_k_among_most_uncertain_k": 6,
                 "expected_by_chance": 2.5}
    results = [{"row": "mn", "num_labeled": 8, "model2d": "EffNet", "stock_dice": 0.81,
                "ensemble": [{"weight_2d": w, "dice": 0.82, "wall_s": 60.0, "vs_stock_dice": diff,
                              "vs_stock_hd95": diff} for w in (0.25, 0.5)],
                "uncertainty": {"dice": 0.815, "mean_uncertainty_foreground": agreement}}]
    md = markdown(results, "python -m benchmarks.hippocampus_predict --rows mn")
    assert md.count("| mn | 8 | EffNet | 0.810 |") == 2 and "| 0.25 |" in md and "| 0.5 |" in md
    assert "| mn | 0.815 | mean_uncertainty_foreground | -0.40 | 0.01 | 6 of 10 | 2.5 |" in md
    assert "mean_disagreement_foreground" not in md.split("## Uncertainty")[1].split("|---|")[-1]
