"""Paired comparison of two prediction folders scored on the same test cases.

Two rows of a benchmark differ by more than run-to-run noise only when the per-case differences
say so: `paired_difference` gives their mean, a percentile-bootstrap 95 % interval (resampling cases)
and the Wilcoxon signed-rank p-value. The benchmark report uses it to decide which setting wins.
"""
import math
import os
from typing import Dict, List, Optional, Sequence

import numpy as np


def case_foreground_mean(case: dict, metric: str) -> Optional[float]:
    """Mean of `metric` over the labels of one `metric_per_case` entry where it is finite; None if none is."""
    vals = [m[metric] for m in case["metrics"].values() if m[metric] is not None and math.isfinite(m[metric])]
    return float(np.mean(vals)) if vals else None


def per_case_foreground_mean(summary: dict, metric: str) -> Dict[str, float]:
    """{case: `case_foreground_mean`} from an `evaluate_folder` summary; cases with no finite value left out."""
    out = {}
    for case in summary["metric_per_case"]:
        value = case_foreground_mean(case, metric)
        if value is not None:
            out[os.path.basename(case["prediction_file"])] = value
    return out


def paired_difference(a: Sequence[float], b: Sequence[float], n_boot: int = 10000, seed: int = 0,
                      confidence: float = 0.95) -> dict:
    """Mean of a - b over paired cases, its bootstrap interval and the Wilcoxon signed-rank p-value."""
    from scipy.stats import wilcoxon

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.ndim != 1 or len(d) < 2:
        raise ValueError(f"need at least 2 paired cases, got {len(d)}")
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, len(d), (n_boot, len(d)))].mean(1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(boot, [tail, 100 - tail])
    p = 1.0 if not np.any(d) else float(wilcoxon(d).pvalue)
    return {"n": int(len(d)), "mean": float(d.mean()), "ci_low": float(low), "ci_high": float(high), "p_wilcoxon": p}


def compare_summaries(summary_a: dict, summary_b: dict, metric: str = "Dice",
                      higher_is_better: Optional[bool] = None, **kwargs) -> dict:
    """`paired_difference` of A - B over the cases both summaries score, plus a verdict: 'A', 'B' (the interval
    excludes 0 in that one's favour), 'unresolved', or 'n/a' when fewer than 2 cases have a finite value in both."""
    if higher_is_better is None:
        higher_is_better = metric in ("Dice", "Jaccard")
    a, b = per_case_foreground_mean(summary_a, metric), per_case_foreground_mean(summary_b, metric)
    cases: List[str] = sorted(set(a) & set(b))
    if len(cases) < 2:  # e.g. HD95 when one row predicts nothing: undefined, not a win for either side
        nan = float("nan")
        return {"n": len(cases), "mean": nan, "ci_low": nan, "ci_high": nan, "p_wilcoxon": nan,
                "verdict": "n/a", "metric": metric}
    out = paired_difference([a[c] for c in cases], [b[c] for c in cases], **kwargs)
    better_a = out["ci_low"] > 0 if higher_is_better else out["ci_high"] < 0
    better_b = out["ci_high"] < 0 if higher_is_better else out["ci_low"] > 0
    out["verdict"] = "A" if better_a else ("B" if better_b else "unresolved")
    out["metric"] = metric
    return out
