"""MNExperimentPlanner: the GPU memory split, the plans it makes, and what it refuses to overwrite."""
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_mn.plans.planner import MemoryBudgetError, MNExperimentPlanner, budget_3d_target


def _write(array, spacing_zyx, filename):
    img = sitk.GetImageFromArray(array)
    img.SetSpacing([float(s) for s in spacing_zyx[::-1]])
    sitk.WriteImage(img, filename)


def _raw_dataset(raw, dataset_id, name, shape, spacing, n):
    """Labelled cases in nnU-Net's raw layout: noise with a brighter labelled box."""
    folder = os.path.join(raw, f"Dataset{dataset_id:03d}_{name}")
    for sub in ("imagesTr", "labelsTr"):
        os.makedirs(os.path.join(folder, sub))
    rng = np.random.default_rng(0)
    for i in range(n):
        label = np.zeros(shape, np.uint8)
        label[tuple(slice(s // 4, s // 2) for s in shape)] = 1
        _write((rng.normal(100, 10, shape) + 50 * label).astype(np.float32), spacing,
               os.path.join(folder, "imagesTr", f"case{i}_0000.nii.gz"))
        _write(label, spacing, os.path.join(folder, "labelsTr", f"case{i}.nii.gz"))
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump({"channel_names": {"0": "MRI"}, "labels": {"background": 0, "target": 1}, "numTraining": n,
                   "file_ending": ".nii.gz"}, f)
    return folder


def _dataset_with_fingerprint(dirs, dataset_id, shape, spacing, n=20):
    """Raw data set of tiny images plus a fingerprint describing n images of `shape` (what planning reads)."""
    name = f"Dataset{dataset_id:03d}_Big"
    _raw_dataset(dirs["nnUNet_raw"], dataset_id, "Big", (2, 2, 2), spacing, n)
    prep = os.path.join(dirs["nnUNet_preprocessed"], name)
    os.makedirs(prep)
    intensities = {"mean": 100., "median": 100., "std": 10., "min": 50., "max": 150., "percentile_99_5": 140.,
                   "percentile_00_5": 60.}
    with open(os.path.join(prep, "dataset_fingerprint.json"), "w") as f:
        json.dump({"spacings": [list(spacing)] * n, "shapes_after_crop": [list(shape)] * n,
                   "median_relative_size_after_cropping": 1.0,
                   "foreground_intensity_properties_per_channel": {"0": intensities}}, f)
    return prep


def _plain_3d_fullres(dataset_id, target_gb):
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
    planner = ExperimentPlanner(dataset_id, target_gb)
    planner.save_plans = lambda plans: None
    return planner.plan_experiment()["configurations"]["3d_fullres"]


def test_budget_rule_with_numbers():
    # the plan does not react to the 3D target: the 3D part gets exactly total - e
    assert budget_3d_target(8.0, lambda t: 1.0, 0.8, 0.08) == (7.0, 1.0)
    # the plan (and its 2D cost) shrinks with the target: e = t / 2 -> t + t / 2 <= 9 -> t = 6 (within tol)
    t, e = budget_3d_target(9.0, lambda t: t / 2, 0.9, 0.09)
    assert 6.0 - 0.09 <= t <= 6.0 and e == t / 2
    # one step: the plan at total - e(total) = 5 is cheaper and fits; larger targets keep the dearer plan
    t, e = budget_3d_target(8.0, lambda t: 3.0 if t > 4.5 else 1.0, 0.8, 0.08)
    assert (t, e) == (5.0, 3.0)
    # 2D cost larger than the total at the full target, but a small 3D plan fits
    t, e = budget_3d_target(8.0, lambda t: 12.0 if t > 2 else 2.0, 0.8, 0.08)
    assert 2.0 - 0.08 <= t <= 2.0 and t + e <= 8.0
    with pytest.raises(MemoryBudgetError, match="even with the smallest 3D target"):
        budget_3d_target(8.0, lambda t: 10.0, 0.8, 0.08)


def test_patch_shrinks_for_the_2d_model(nnunet_dirs):
    """64x128x128 images at 1 mm, 8 GB: nnU-Net alone takes the whole image; M&N leaves room for the 2D model."""
    _dataset_with_fingerprint(nnunet_dirs, 902, (64, 128, 128), (1.0, 1.0, 1.0))
    planner = MNExperimentPlanner(902, 8)
    c = planner.plan_experiment()["configurations"]["3d_fullres"]
    plain = planner.mn_unbudgeted_plan  # nnU-Net's plan at the full 8 GB
    assert [int(i) for i in plain["patch_size"]] == [64, 128, 128] and plain["batch_size"] == 2

    cost_2d = lambda p: p["batch_size"] * int(np.prod(p["patch_size"])) * 4.6e3 / 1e9  # noqa: E731
    assert cost_2d(plain) > 8.0 - 1.0  # nnU-Net's plan alone would leave almost no room for the 2D model
    assert cost_2d(c) < cost_2d(plain)
    t, e = c["mn_3d_memory_target_gb"], c["mn_estimated_2d_memory_gb"]
    assert e == pytest.approx(cost_2d(c), abs=1e-3) and t + e <= 8.0 + 1e-3
    assert c["mn_estimated_3d_memory_gb"] <= t
    assert c["mn_2d_slices_per_step"] == c["batch_size"] * c["patch_size"][0]
    assert c["data_identifier"] == "nnUNetMNPlans_3d_fullres"
    # the 3D part is nnU-Net's own plan at the reduced target, and a slightly larger target would not fit
    at_t = _plain_3d_fullres(902, t)
    assert ([int(i) for i in at_t["patch_size"]], at_t["batch_size"]) == (list(c["patch_size"]), c["batch_size"])
    above = t + MNExperimentPlanner.mn_budget_tolerance * 8.0
    assert above + cost_2d(_plain_3d_fullres(902, above)) > 8.0


def test_refuses_existing_plans_and_bad_settings(nnunet_dirs):
    prep = _dataset_with_fingerprint(nnunet_dirs, 903, (32, 64, 64), (1.0, 1.0, 1.0))
    for name in ("nnUNetPlans", "nnUNetMNPlans"):
        with open(os.path.join(prep, name + ".json"), "w") as f:
            f.write("{}")
    with pytest.raises(FileExistsError, match="overwrite"):
        MNExperimentPlanner(903).plan_experiment()
    with pytest.raises(FileExistsError):  # even when asked to write under nnU-Net's default name
        MNExperimentPlanner(903, plans_name="nnUNetPlans").plan_experiment()
    for name in ("nnUNetPlans", "nnUNetMNPlans"):
        assert open(os.path.join(prep, name + ".json")).read() == "{}"
    with pytest.raises(ValueError, match="mn_slice_axis"):
        MNExperimentPlanner(903, mn_slice_axis=3)
    with pytest.raises(MemoryBudgetError, match="smallest 3D target"):  # a 2D model that cannot fit next to any 3D plan
        MNExperimentPlanner(903, plans_name="Other", bytes_per_pixel_2d=1e6).plan_experiment()
    assert not os.path.exists(os.path.join(prep, "Other.json"))
