"""Evaluate a folder of predicted segmentations: Dice, Jaccard, HD95, ASD per foreground label.

Images are read with nnU-Net's reader/writer for the dataset (dataset.json `file_ending` /
`overwrite_image_reader_writer`). Results go to `summary_mn.json` (nnU-Net summary.json layout
plus std/median/min/max and excluded-case counts) and a Markdown table `summary_mn.md`.
Console script (nnunetv2_mn.cli.evaluate): `nnUNetv2_mn_evaluate -ref REF -pred PRED -djfile dataset.json`.
"""
import json
import math
import multiprocessing
import os
import warnings
from typing import Dict, List, Optional, Tuple

import numpy as np

from nnunetv2_mn.evaluation.metrics import METRICS, multiclass_metrics, summarize

SUMMARY_NAME = "summary_mn.json"


def load_labels(dataset_json: dict) -> Tuple[Dict[str, object], Dict[str, str], Optional[int]]:
    """Foreground labels/regions of dataset.json: ({key: label or region}, {key: name}, ignore label).

    Keys follow nnU-Net's summary.json: "1" for a label, "(1, 2)" for a region.
    """
    if "labels" not in dataset_json:
        raise KeyError("dataset.json has no 'labels' entry")
    labels, names, ignore_label = {}, {}, None
    for name, value in _nnunet_v2_labels(dataset_json["labels"]).items():
        if name == "ignore":
            ignore_label = int(value)
            continue
        if isinstance(value, (list, tuple)):
            value = tuple(int(v) for v in value)
            if len(value) == 1:
                value = value[0]
        else:
            value = int(value)
        if value == 0:
            continue
        key = str(value)
        labels[key], names[key] = value, name
    if not labels:
        raise ValueError("dataset.json 'labels' defines no foreground label")
    return labels, names, ignore_label


def _nnunet_v2_labels(raw: dict) -> dict:
    """{name: value}; a legacy MSD/nnU-Net v1 mapping {"1": "name"} is inverted."""
    if raw and all(isinstance(v, str) for v in raw.values()) and all(k.strip().isdigit() for k in raw):
        return {name: int(value) for value, name in raw.items()}
    return raw


def file_ending_of(dataset_json: dict) -> str:
    """dataset.json `file_ending`; legacy MSD files (no file_ending, a 'modality' entry) are .nii.gz."""
    if dataset_json.get("file_ending"):
        return dataset_json["file_ending"]
    if "modality" in dataset_json:
        return ".nii.gz"
    raise KeyError("dataset.json has no 'file_ending' (expected an nnU-Net v2 dataset.json)")


def find_case_pairs(ref_dir: str, pred_dir: str, file_ending: str,
                    allow_subset: bool = False) -> List[Tuple[str, str]]:
    """(prediction, reference) paths matched by file name; errors on missing or mismatched cases.

    With `allow_subset`, references without a prediction are skipped (nnU-Net's behaviour).
    """
    for label, folder in (("reference", ref_dir), ("prediction", pred_dir)):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{label} folder not found: {folder}")
    preds, refs = _list_cases(pred_dir, file_ending), _list_cases(ref_dir, file_ending)
    if not preds:
        raise FileNotFoundError(f"no '*{file_ending}' prediction files in {pred_dir}")
    no_ref = sorted(set(preds) - set(refs))
    if no_ref:
        raise FileNotFoundError(f"{len(no_ref)} prediction(s) without a reference in {ref_dir}: "
                                f"{_preview(no_ref)}")
    no_pred = sorted(set(refs) - set(preds))
    if no_pred and not allow_subset:
        raise ValueError(f"{len(no_pred)} reference case(s) have no prediction in {pred_dir}: "
                         f"{_preview(no_pred)} (use allow_subset / --subset to evaluate only predicted cases)")
    return [(os.path.join(pred_dir, f), os.path.join(ref_dir, f)) for f in sorted(preds)]


def read_segmentation(reader_writer, path: str) -> Tuple[np.ndarray, List[float]]:
    """Label map and spacing in array-axis order, as nnU-Net's reader returns them.

    nnU-Net's readers give (1, *spatial) arrays with spacing already reordered to the array axes
    (SimpleITK's (x, y, z) spacing reversed). A leading singleton spatial axis (nnU-Net's 2-D
    layout 1×Y×X, dummy spacing 999×) is dropped so that 2-D images are evaluated in 2-D.
    """
    seg, props = reader_writer.read_seg(path)
    seg = np.asarray(seg)[0]
    spacing = [float(s) for s in props["spacing"]]
    if seg.ndim == 3 and seg.shape[0] == 1:
        seg, spacing = seg[0], spacing[1:]
    return seg, spacing


def evaluate_case(pred_file: str, ref_file: str, reader_writer_class, labels: Dict[str, object],
                  ignore_label: Optional[int] = None, voxel_units: bool = False,
                  one_empty_distance: Optional[float] = None) -> dict:
    """Metrics of one case: {"prediction_file", "reference_file", "spacing", "metrics": {key: {...}}}."""
    rw = reader_writer_class()
    ref, ref_spacing = read_segmentation(rw, ref_file)
    pred, pred_spacing = read_segmentation(rw, pred_file)
    if pred.shape != ref.shape:
        raise ValueError(f"shape mismatch: prediction {os.path.basename(pred_file)} {pred.shape} vs "
                         f"reference {os.path.basename(ref_file)} {ref.shape}")
    if not np.allclose(pred_spacing, ref_spacing, rtol=1e-3, atol=0):
        warnings.warn(f"{os.path.basename(pred_file)}: prediction spacing {pred_spacing} differs from "
                      f"reference spacing {ref_spacing}; using the reference spacing")
    spacing = None if voxel_units else ref_spacing
    metrics = multiclass_metrics(pred, ref, labels, spacing, ignore_label, one_empty_distance)
    return {"prediction_file": pred_file, "reference_file": ref_file, "spacing": ref_spacing,
            "metrics": metrics}


def evaluate_folder(ref_dir: str, pred_dir: str, dataset_json_path: str, output_file: Optional[str] = None,
                    voxel_units: bool = False, num_processes: int = 2, *,
                    one_empty_distance: Optional[float] = None, allow_subset: bool = False) -> dict:
    """Evaluate every prediction in `pred_dir` against `ref_dir`; write JSON + Markdown; return the summary.

    `output_file` defaults to `pred_dir/summary_mn.json`; the Markdown table goes next to it
    (`.md`). Distances are in the images' physical units (mm) or, with `voxel_units`, in voxels.
    `one_empty_distance`: HD95/ASD when exactly one mask is empty (None -> NaN, excluded from the
    statistics and counted in `n_excluded`; stored as null in the JSON).
    """
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

    dataset_json = _load_json(dataset_json_path)
    file_ending = file_ending_of(dataset_json)
    labels, names, ignore_label = load_labels(dataset_json)
    pairs = find_case_pairs(ref_dir, pred_dir, file_ending, allow_subset)
    rw_class = determine_reader_writer_from_dataset_json({**dataset_json, "file_ending": file_ending}, pairs[0][1],
                                                         verbose=False)
    args = [(p, r, rw_class, labels, ignore_label, voxel_units, one_empty_distance) for p, r in pairs]
    per_case = _run(args, num_processes)
    summary = _build_summary(per_case, labels, names, ignore_label, voxel_units, one_empty_distance,
                             rw_class.__name__, ref_dir, pred_dir)
    output_file = output_file or os.path.join(pred_dir, SUMMARY_NAME)
    write_summary(summary, output_file)
    return summary


def write_summary(summary: dict, output_file: str) -> Tuple[str, str]:
    """Write the summary as strict JSON (NaN -> null) and as Markdown next to it; return both paths."""
    os.makedirs(os.path.dirname(os.path.abspath(output_file)), exist_ok=True)
    with open(output_file, "w", encoding="utf-8") as f:
        json.dump(_json_safe(summary), f, indent=2, allow_nan=False)
    md_file = os.path.splitext(output_file)[0] + ".md"
    with open(md_file, "w", encoding="utf-8") as f:
        f.write(markdown_table(summary))
    return output_file, md_file


def markdown_table(summary: dict) -> str:
    """Readable Markdown: mean ± std per label and metric, foreground mean, empty-mask cases."""
    unit = summary["settings"]["units"]
    header = ["Label", "Name", "Dice", "Jaccard", f"HD95 ({unit})", f"ASD ({unit})", "Excluded"]
    lines = [f"# Evaluation: {summary['settings']['n_cases']} cases", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, name in summary["labels"].items():
        cells = [_mean_std(summary["mean"][key][m], summary["std"][key][m]) for m in METRICS]
        excluded = max(summary["n_excluded"][key][m] for m in METRICS)
        lines.append("| " + " | ".join([key, name, *cells, str(excluded)]) + " |")
    fg = [_fmt(summary["foreground_mean"][m]) for m in METRICS]
    lines.append("| " + " | ".join(["fg", "foreground mean", *fg, ""]) + " |")
    lines += ["", "Mean ± std (ddof 0) over cases; 'Excluded' = cases with a non-finite value "
              "(exactly one mask empty), left out of the statistics."]
    empty = [(os.path.basename(c["prediction_file"]), key, m["empty"])
             for c in summary["metric_per_case"] for key, m in c["metrics"].items() if m["empty"] != "none"]
    if empty:
        lines += ["", "## Empty masks", "", "| Case | Label | Empty |", "|---|---|---|"]
        lines += [f"| {case} | {key} | {which} |" for case, key, which in empty]
    return "\n".join(lines) + "\n"


def _run(args: List[tuple], num_processes: int) -> List[dict]:
    if num_processes <= 1 or len(args) == 1:
        return [evaluate_case(*a) for a in args]
    with multiprocessing.get_context("spawn").Pool(min(num_processes, len(args))) as pool:
        return pool.starmap(evaluate_case, args)


def _build_summary(per_case, labels, names, ignore_label, voxel_units, one_empty_distance,
                   reader_writer, ref_dir, pred_dir) -> dict:
    stats = summarize([c["metrics"] for c in per_case], list(labels))
    settings = {"units": "voxel" if voxel_units else "mm", "one_empty_distance": one_empty_distance,
                "surface_connectivity": 1, "hd_percentile": 95, "asd": "directed prediction->reference (medpy asd)",
                "ignore_label": ignore_label, "reader_writer": reader_writer, "n_cases": len(per_case),
                "reference_folder": os.path.abspath(ref_dir), "prediction_folder": os.path.abspath(pred_dir)}
    return {"metric_per_case": per_case, "mean": stats["mean"], "foreground_mean": stats["foreground_mean"],
            **{k: stats[k] for k in ("std", "median", "min", "max", "n_valid", "n_excluded")},
            "labels": names, "settings": settings}


def _list_cases(folder: str, file_ending: str) -> List[str]:
    return [f for f in os.listdir(folder) if f.endswith(file_ending) and os.path.isfile(os.path.join(folder, f))]


def _preview(names: List[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (f", ... (+{len(names) - n})" if len(names) > n else "")


def _load_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"dataset.json not found: {path}")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _fmt(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _mean_std(mean: Optional[float], std: Optional[float]) -> str:
    return "n/a" if mean is None else f"{mean:.4f} ± {std:.4f}"

