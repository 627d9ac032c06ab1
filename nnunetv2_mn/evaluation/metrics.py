"""Overlap and surface-distance metrics for binary masks, identical to `medpy.metric.binary`.

Definitions (medpy 0.5.x, connectivity 1):

* Dice = 2|P∩R| / (|P|+|R|), Jaccard = |P∩R| / |P∪R|.
* surface(M) = M XOR binary_erosion(M, cross-shaped structuring element); voxels outside the
  image count as background, so a mask touching the image border has a surface there.
* d(P→R) = for every surface voxel of P, the Euclidean distance (scaled by `spacing`) to the
  nearest surface voxel of R.
* HD95 = 95th percentile of d(P→R) ∪ d(R→P) (medpy `hd95`).
* ASD = mean of d(P→R), prediction surface to reference surface (medpy `asd`, the directed one,
  not the symmetric `assd`).

Empty masks (medpy raises instead): both empty -> Dice = Jaccard = 1, HD95 = ASD = 0; exactly one
empty -> Dice = Jaccard = 0 and HD95 = ASD = `one_empty_distance` (default None -> NaN, which
`summarize` leaves out of the statistics and counts as excluded). Every result carries an
`empty` flag: "none", "both", "prediction" or "reference".
"""
from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from scipy.ndimage import binary_erosion, distance_transform_edt, generate_binary_structure

METRICS = ("Dice", "Jaccard", "HD95", "ASD")
DISTANCE_METRICS = ("HD95", "ASD")
LabelOrRegion = Union[int, Tuple[int, ...]]


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice coefficient of two binary masks (1.0 when both are empty)."""
    pred, ref = _as_bool(pred), _as_bool(ref)
    total = np.count_nonzero(pred) + np.count_nonzero(ref)
    return 1.0 if total == 0 else 2.0 * np.count_nonzero(pred & ref) / float(total)


def jaccard(pred: np.ndarray, ref: np.ndarray) -> float:
    """Jaccard index (IoU) of two binary masks (1.0 when both are empty)."""
    pred, ref = _as_bool(pred), _as_bool(ref)
    union = np.count_nonzero(pred | ref)
    return 1.0 if union == 0 else np.count_nonzero(pred & ref) / float(union)


def surface(mask: np.ndarray, connectivity: int = 1) -> np.ndarray:
    """One-voxel border of `mask`: mask XOR its erosion (outside the image is background)."""
    mask = _as_bool(mask)
    footprint = generate_binary_structure(mask.ndim, connectivity)
    return mask ^ binary_erosion(mask, structure=footprint, iterations=1)


def surface_distances(pred: np.ndarray, ref: np.ndarray, spacing: Optional[Sequence[float]] = None,
                      connectivity: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """Directed surface distances (pred→ref, ref→pred); both masks must be non-empty.

    `spacing` is per array axis (None = voxel units). The arrays are cropped to the union's
    bounding box plus a one-voxel margin, which leaves every surface and distance unchanged.
    """
    pred, ref = _as_bool(pred), _as_bool(ref)
    _check_same_shape(pred, ref)
    if not pred.any() or not ref.any():
        raise ValueError("surface distances need two non-empty masks")
    crop = _bbox_with_margin(pred | ref)
    sampling = _sampling(spacing, pred.ndim)
    pred_border = surface(pred[crop], connectivity)
    ref_border = surface(ref[crop], connectivity)
    pred_to_ref = distance_transform_edt(~ref_border, sampling=sampling)[pred_border]
    ref_to_pred = distance_transform_edt(~pred_border, sampling=sampling)[ref_border]
    return pred_to_ref, ref_to_pred


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Optional[Sequence[float]] = None,
         connectivity: int = 1) -> float:
    """95th percentile Hausdorff distance, medpy `hd95` (both masks non-empty)."""
    return _hd95(*surface_distances(pred, ref, spacing, connectivity))


def asd(pred: np.ndarray, ref: np.ndarray, spacing: Optional[Sequence[float]] = None,
        connectivity: int = 1) -> float:
    """Average surface distance from pred to ref, medpy `asd` (both masks non-empty)."""
    return float(surface_distances(pred, ref, spacing, connectivity)[0].mean())


def binary_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Optional[Sequence[float]] = None,
                   one_empty_distance: Optional[float] = None, connectivity: int = 1) -> dict:
    """Dice, Jaccard, HD95, ASD, voxel counts and the `empty` flag of one mask pair.

    See the module docstring for the empty-mask convention.
    """
    pred, ref = _as_bool(pred), _as_bool(ref)
    _check_same_shape(pred, ref)
    n_pred, n_ref = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
    result = {"Dice": dice(pred, ref), "Jaccard": jaccard(pred, ref),
              "n_pred": n_pred, "n_ref": n_ref, "empty": _empty_flag(n_pred, n_ref)}
    if result["empty"] == "none":
        pred_to_ref, ref_to_pred = surface_distances(pred, ref, spacing, connectivity)
        result.update(HD95=_hd95(pred_to_ref, ref_to_pred), ASD=float(pred_to_ref.mean()))
    elif result["empty"] == "both":
        result.update(HD95=0.0, ASD=0.0)
    else:
        penalty = float("nan") if one_empty_distance is None else float(one_empty_distance)
        result.update(HD95=penalty, ASD=penalty)
    return result


def label_mask(seg: np.ndarray, label_or_region: LabelOrRegion) -> np.ndarray:
    """Binary mask of one label (int) or one region (tuple of labels, nnU-Net style)."""
    if isinstance(label_or_region, (tuple, list)):
        return np.isin(seg, label_or_region)
    return seg == label_or_region


def multiclass_metrics(pred_seg: np.ndarray, ref_seg: np.ndarray, labels: Mapping[str, LabelOrRegion],
                       spacing: Optional[Sequence[float]] = None, ignore_label: Optional[int] = None,
                       one_empty_distance: Optional[float] = None) -> Dict[str, dict]:
    """`binary_metrics` for each entry of `labels` ({key: label or region}).

    Voxels where the reference equals `ignore_label` are removed from both masks.
    """
    _check_same_shape(pred_seg, ref_seg)
    keep = None if ignore_label is None else ref_seg != ignore_label
    results = {}
    for key, label_or_region in labels.items():
        pred, ref = label_mask(pred_seg, label_or_region), label_mask(ref_seg, label_or_region)
        if keep is not None:
            pred, ref = pred & keep, ref & keep
        results[key] = binary_metrics(pred, ref, spacing, one_empty_distance)
    return results


def summarize(per_case: Iterable[Mapping[str, Mapping[str, float]]], label_keys: Sequence[str],
              metrics: Sequence[str] = METRICS) -> dict:
    """Statistics over cases per label and metric, ignoring non-finite values.

    Returns {"mean", "std" (ddof 0), "median", "min", "max", "n_valid", "n_excluded"}, each
    {label: {metric: value}} (value None when no case is finite), and "foreground_mean"
    {metric: mean of the finite per-label means} as in nnU-Net's summary.json.
    """
    per_case = list(per_case)
    stats = {name: {} for name in ("mean", "std", "median", "min", "max", "n_valid", "n_excluded")}
    for key in label_keys:
        for name in stats:
            stats[name][key] = {}
        for metric in metrics:
            values = np.array([case[key][metric] for case in per_case], dtype=np.float64)
            for name, value in _describe(values).items():
                stats[name][key][metric] = value
    stats["foreground_mean"] = {m: _finite_mean([stats["mean"][k][m] for k in label_keys]) for m in metrics}
    return stats


def _describe(values: np.ndarray) -> dict:
    finite = values[np.isfinite(values)]
    n_excluded = int(values.size - finite.size)
    if finite.size == 0:
        return {"mean": None, "std": None, "median": None, "min": None, "max": None,
                "n_valid": 0, "n_excluded": n_excluded}
    return {"mean": float(finite.mean()), "std": float(finite.std()), "median": float(np.median(finite)),
            "min": float(finite.min()), "max": float(finite.max()),
            "n_valid": int(finite.size), "n_excluded": n_excluded}


def _finite_mean(values: Sequence[Optional[float]]) -> Optional[float]:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _hd95(pred_to_ref: np.ndarray, ref_to_pred: np.ndarray) -> float:
    return float(np.percentile(np.hstack((pred_to_ref, ref_to_pred)), 95))


def _empty_flag(n_pred: int, n_ref: int) -> str:
    if n_pred and n_ref:
        return "none"
    if not n_pred and not n_ref:
        return "both"
    return "prediction" if not n_pred else "reference"


def _as_bool(mask: np.ndarray) -> np.ndarray:
    return np.atleast_1d(np.asarray(mask).astype(bool))


def _check_same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if np.shape(a) != np.shape(b):
        raise ValueError(f"shape mismatch: prediction {np.shape(a)} vs reference {np.shape(b)}")


def _sampling(spacing: Optional[Sequence[float]], ndim: int) -> Optional[np.ndarray]:
    if spacing is None:
        return None
    sampling = np.asarray(spacing, dtype=np.float64).ravel()
    if sampling.size == 1:
        sampling = np.repeat(sampling, ndim)
    if sampling.size != ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match a {ndim}-D mask")
    if not np.all(sampling > 0):
        raise ValueError(f"spacing must be positive, got {tuple(spacing)}")
    return sampling


def _bbox_with_margin(mask: np.ndarray) -> Tuple[slice, ...]:
    crop = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other) if other else mask)
        crop.append(slice(max(int(idx[0]) - 1, 0), min(int(idx[-1]) + 2, mask.shape[axis])))
    return tuple(crop)
