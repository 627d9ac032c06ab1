"""evaluate_folder on tiny NIfTI files written with SimpleITK, checked against medpy."""
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
from medpy.metric import binary as medpy_binary

from nnunetv2_mn.evaluation import evaluate as E

SITK_SPACING = (0.5, 0.8, 2.0)  # SimpleITK order (x, y, z); numpy arrays are (z, y, x)
ARRAY_SPACING = SITK_SPACING[::-1]
SHAPE = (6, 9, 10)
DATASET_JSON = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "anterior": 1, "posterior": 2},
                "numTraining": 3, "file_ending": ".nii.gz"}


def _write(path, arr, spacing=SITK_SPACING):
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))


def _random_seg(rng, shape=SHAPE):
    seg = np.zeros(shape, np.uint8)
    for label in (1, 2):
        z, y, x = (int(rng.integers(0, s - 3)) for s in shape)
        dz, dy, dx = (int(v) for v in rng.integers(2, 4, 3))
        seg[z:z + dz, y:y + dy, x:x + 2 * dx] = label
    return seg


@pytest.fixture
def folders(tmp_path):
    """3 cases; case_002's prediction misses label 2 entirely."""
    rng = np.random.default_rng(0)
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_dir.mkdir()
    pred_dir.mkdir()
    cases = {}
    for i in range(3):
        ref = _random_seg(rng)
        pred = np.roll(ref, int(rng.integers(-1, 2)), axis=int(rng.integers(0, 3)))
        pred[ref == 1] = np.where(rng.random(np.count_nonzero(ref == 1)) < 0.8, 1, 0)
        if i == 2:
            pred[pred == 2] = 0
        name = f"case_{i:03d}.nii.gz"
        _write(ref_dir / name, ref)
        _write(pred_dir / name, pred)
        cases[name] = (pred, ref)
    dj = tmp_path / "dataset.json"
    dj.write_text(json.dumps(DATASET_JSON))
    return ref_dir, pred_dir, dj, cases


def _expected(pred, ref, label, spacing):
    p, r = pred == label, ref == label
    if not p.any():
        return {"Dice": 0.0, "Jaccard": 0.0, "HD95": None, "ASD": None}
    return {"Dice": medpy_binary.dc(p, r), "Jaccard": medpy_binary.jc(p, r),
            "HD95": medpy_binary.hd95(p, r, voxelspacing=spacing), "ASD": medpy_binary.asd(p, r, voxelspacing=spacing)}


def _check_against_medpy(summary_file, cases, voxel_units):
    summary = json.loads(summary_file.read_text())  # strict JSON: NaN written as null
    assert len(summary["metric_per_case"]) == 3
    per_label = {"1": [], "2": []}
    for case in summary["metric_per_case"]:
        name = case["prediction_file"].split("/")[-1]
        assert case["reference_file"].endswith("ref/" + name)
        pred, ref = cases[name]
        # medpy gets SimpleITK's spacing as stored (float32 in NIfTI), reversed to numpy axis order
        spacing = None if voxel_units else sitk.ReadImage(case["reference_file"]).GetSpacing()[::-1]
        for key in ("1", "2"):
            got, exp = case["metrics"][key], _expected(pred, ref, int(key), spacing)
            for metric, value in exp.items():
                if value is None:
                    assert got[metric] is None, (name, key, metric)
                else:
                    assert got[metric] == pytest.approx(value, rel=1e-9), (name, key, metric)
            per_label[key].append(exp)
    assert summary["metric_per_case"][2]["metrics"]["2"]["empty"] == "prediction"
    for key, exps in per_label.items():
        for metric in ("Dice", "HD95", "ASD"):
            finite = [e[metric] for e in exps if e[metric] is not None]
            assert summary["mean"][key][metric] == pytest.approx(np.mean(finite), rel=1e-9)
            assert summary["std"][key][metric] == pytest.approx(np.std(finite), rel=1e-9, abs=1e-12)
    assert summary["n_excluded"]["2"]["HD95"] == 1 and summary["n_excluded"]["1"]["HD95"] == 0
    assert summary["foreground_mean"]["Dice"] == pytest.approx(
        (summary["mean"]["1"]["Dice"] + summary["mean"]["2"]["Dice"]) / 2)
    assert summary["labels"] == {"1": "anterior", "2": "posterior"}
    return summary


def test_evaluate_folder_mm_matches_medpy_and_writes_markdown(folders):
    ref_dir, pred_dir, dj, cases = folders
    returned = E.evaluate_folder(str(ref_dir), str(pred_dir), str(dj), num_processes=1)
    summary = _check_against_medpy(pred_dir / "summary_mn.json", cases, False)
    assert summary["settings"]["units"] == "mm" and returned["settings"]["n_cases"] == 3
    assert summary["metric_per_case"][0]["spacing"] == pytest.approx(ARRAY_SPACING, rel=1e-6)
    md = (pred_dir / "summary_mn.md").read_text()
    assert "| Label | Name | Dice | Jaccard | HD95 (mm) | ASD (mm) | Excluded |" in md
    assert f"| 1 | anterior | {summary['mean']['1']['Dice']:.4f} ± {summary['std']['1']['Dice']:.4f} |" in md
    assert "| case_002.nii.gz | 2 | prediction |" in md


def test_voxel_units_custom_output_two_processes(folders, tmp_path):
    ref_dir, pred_dir, dj, cases = folders
    out = tmp_path / "out" / "eval.json"
    E.evaluate_folder(str(ref_dir), str(pred_dir), str(dj), str(out), voxel_units=True, num_processes=2)
    summary = _check_against_medpy(out, cases, True)
    assert summary["settings"]["units"] == "voxel"
    assert "HD95 (voxel)" in (tmp_path / "out" / "eval.md").read_text()
    assert not (pred_dir / "summary_mn.json").exists()


def test_one_empty_distance_penalty(folders):
    ref_dir, pred_dir, dj, _ = folders
    summary = E.evaluate_folder(str(ref_dir), str(pred_dir), str(dj), num_processes=1, one_empty_distance=99.0)
    assert summary["metric_per_case"][2]["metrics"]["2"]["HD95"] == 99.0
    assert summary["n_excluded"]["2"]["HD95"] == 0
    assert summary["settings"]["one_empty_distance"] == 99.0


def test_reader_spacing_order_matches_simpleitk(tmp_path):
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    seg = np.zeros(SHAPE, np.uint8)
    seg[1:4, 2:5, 3:9] = 1
    _write(tmp_path / "a.nii.gz", seg)
    arr, spacing = E.read_segmentation(SimpleITKIO(), str(tmp_path / "a.nii.gz"))
    img = sitk.ReadImage(str(tmp_path / "a.nii.gz"))
    assert np.array_equal(arr, sitk.GetArrayFromImage(img))
    assert spacing == pytest.approx(img.GetSpacing()[::-1])


def test_2d_images_are_evaluated_in_2d(tmp_path):
    ref, pred = np.zeros((12, 14), np.uint8), np.zeros((12, 14), np.uint8)
    ref[2:8, 3:10], pred[3:9, 2:8] = 1, 1
    (tmp_path / "r").mkdir()
    (tmp_path / "p").mkdir()
    _write(tmp_path / "r" / "x.nii.gz", ref, (0.7, 1.9))
    _write(tmp_path / "p" / "x.nii.gz", pred, (0.7, 1.9))
    dj = tmp_path / "dataset.json"
    dj.write_text(json.dumps({**DATASET_JSON, "labels": {"background": 0, "fg": 1}}))
    summary = E.evaluate_folder(str(tmp_path / "r"), str(tmp_path / "p"), str(dj), num_processes=1)
    got = summary["metric_per_case"][0]["metrics"]["1"]
    spacing = sitk.ReadImage(str(tmp_path / "r" / "x.nii.gz")).GetSpacing()[::-1]  # (y, x)
    assert got["HD95"] == pytest.approx(medpy_binary.hd95(pred, ref, voxelspacing=spacing), rel=1e-9)
    assert got["ASD"] == pytest.approx(medpy_binary.asd(pred, ref, voxelspacing=spacing), rel=1e-9)
    assert got["ASD"] != pytest.approx(medpy_binary.asd(pred, ref, voxelspacing=spacing[::-1]), rel=1e-3)


def test_regions_and_ignore_label_from_dataset_json():
    labels, names, ignore = E.load_labels({"labels": {"background": 0, "whole": [1, 2], "core": [2],
                                                      "ignore": 3}})
    assert labels == {"(1, 2)": (1, 2), "2": 2} and names["(1, 2)"] == "whole" and ignore == 3
    msd = {"modality": {"0": "MRI"}, "labels": {"0": "background", "1": "Anterior", "2": "Posterior"}}
    labels, names, ignore = E.load_labels(msd)  # legacy MSD layout {"value": "name"}
    assert labels == {"1": 1, "2": 2} and names == {"1": "Anterior", "2": "Posterior"} and ignore is None
    assert E.file_ending_of(msd) == ".nii.gz" and E.file_ending_of(DATASET_JSON) == ".nii.gz"
    with pytest.raises(KeyError, match="file_ending"):
        E.file_ending_of({"labels": {"background": 0, "a": 1}})
    with pytest.raises(ValueError, match="no foreground"):
        E.load_labels({"labels": {"background": 0}})


def test_clear_errors(folders, tmp_path):
    ref_dir, pred_dir, dj, _ = folders
    with pytest.raises(FileNotFoundError, match="dataset.json not found"):
        E.evaluate_folder(str(ref_dir), str(pred_dir), str(tmp_path / "nope.json"), num_processes=1)
    (pred_dir / "case_001.nii.gz").unlink()
    with pytest.raises(ValueError, match="case_001.nii.gz"):
        E.evaluate_folder(str(ref_dir), str(pred_dir), str(dj), num_processes=1)
    subset = E.evaluate_folder(str(ref_dir), str(pred_dir), str(dj), num_processes=1, allow_subset=True)
    assert subset["settings"]["n_cases"] == 2
    _write(pred_dir / "extra.nii.gz", np.zeros(SHAPE))
    with pytest.raises(FileNotFoundError, match="extra.nii.gz"):
        E.evaluate_folder(str(ref_dir), str(pred_dir), str(dj), num_processes=1, allow_subset=True)
    (pred_dir / "extra.nii.gz").unlink()
    _write(pred_dir / "case_000.nii.gz", np.zeros((6, 9, 11)))
    with pytest.raises(ValueError, match=r"shape mismatch.*\(6, 9, 11\)"):
        E.evaluate_folder(str(ref_dir), str(pred_dir), str(dj), num_processes=1, allow_subset=True)
    with pytest.raises(FileNotFoundError, match="no '\\*.nii.gz' prediction"):
        E.evaluate_folder(str(ref_dir), str(tmp_path), str(dj), num_processes=1)
    assert not math.isnan(subset["mean"]["1"]["Dice"])

