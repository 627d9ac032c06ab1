"""Synthetic nnU-Net plans presets: the shapes of real settings without their data (cost benchmarks, tests).

Each preset is a complete `nnUNetPlans.json` (nnU-Net 2.8's format, one `3d_fullres` configuration) and its
`dataset.json`; nnU-Net's `PlansManager` reads it and its own `get_network_from_plans` builds the network, so a
trainer made from a preset runs nnU-Net's real steps on random inputs of the real patch and batch size.

- `hippocampus`: the plans nnU-Net made for the benchmark's MSD Hippocampus data sets
  (`nnUNetv2_plan_and_preprocess -d 508 -c 3d_fullres`): patch 40×48×40, batch 2, 1 channel, 3 labels.
- `la`: the paper's LA setting (2018 Atrial Segmentation Challenge, LGE-MRI, 0.625 mm isotropic, the paper's
  random crop 160×160×64 with its 64 slices along the acquisition axis, which nnU-Net puts first): patch
  64×160×160, batch 2, 1 channel, 2 labels. The network is the one nnU-Net's `ExperimentPlanner` plans for a
  0.625 mm volume of that median shape (`LA_FINGERPRINT`; `nnunet_plans_for_fingerprint` reruns it): 6 stages,
  32–320 features, PlainConvUNet. nnU-Net itself would give such a data set batch 3 (its 5 %-of-the-data-set cap
  allows it); the preset keeps batch 2, nnU-Net's minimum and the batch of the Hippocampus plans, so that the
  two presets differ in the patch only.

    from nnunetv2_mn.plans.presets import write_preset
    folder = write_preset("la", os.environ["nnUNet_preprocessed"])   # nnUNetPlans.json + dataset.json
"""
import copy
import json
import os
from typing import Dict, Optional

CONFIGURATION = "3d_fullres"

_RESAMPLING = {
    "resampling_fn_data": "resample_data_or_seg_to_shape",
    "resampling_fn_seg": "resample_data_or_seg_to_shape",
    "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
    "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
    "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
    "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
}


def _plain_conv_unet(features, strides) -> dict:
    """nnU-Net's `architecture` entry of a PlainConvUNet with 3×3×3 kernels, as its default planner writes it."""
    n = len(features)
    return {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": n, "features_per_stage": list(features), "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[3, 3, 3]] * n, "strides": [list(s) for s in strides],
            "n_conv_per_stage": [2] * n, "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


#: name -> what differs between presets; `preset_plans` builds the full plans from it
_PRESETS: Dict[str, dict] = {
    "hippocampus": {
        "dataset_name": "Dataset991_MNPresetHippocampus",
        "labels": {"background": 0, "Anterior": 1, "Posterior": 2},
        "channel_names": {"0": "MRI"},
        "spacing": [1.0, 1.0, 1.0],
        "median_shape": [37, 47, 36],
        "patch_size": [40, 48, 40],
        "batch_size": 2,
        "batch_dice": False,
        "architecture": _plain_conv_unet([32, 64, 128, 256], [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]),
    },
    "la": {
        "dataset_name": "Dataset992_MNPresetLA",
        "labels": {"background": 0, "left_atrium": 1},
        "channel_names": {"0": "LGE-MRI"},
        "spacing": [0.625, 0.625, 0.625],
        "median_shape": [64, 160, 160],
        "patch_size": [64, 160, 160],
        "batch_size": 2,
        "batch_dice": False,
        "architecture": _plain_conv_unet([32, 64, 128, 256, 320, 320],
                                         [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]]),
    },
}
PRESETS = tuple(_PRESETS)

#: foreground intensity statistics written into the plans (used by nnU-Net's CT normalisation only; the presets are
#: MRI, z-score normalised per case)
_INTENSITIES = {"mean": 200.0, "median": 180.0, "std": 100.0, "min": 0.0, "max": 1000.0, "percentile_00_5": 10.0,
                "percentile_99_5": 800.0}

#: the fingerprint from which nnU-Net's ExperimentPlanner plans the `la` preset's network and patch: 100 LA-sized
#: volumes (the paper's 160×160×64 crop, acquisition axis first) at 0.625 mm isotropic
LA_FINGERPRINT = {
    "spacings": [[0.625, 0.625, 0.625]] * 100,
    "shapes_after_crop": [[64, 160, 160]] * 100,
    "median_relative_size_after_cropping": 1.0,
    "foreground_intensity_properties_per_channel": {"0": dict(_INTENSITIES)},
}


def _check(name: str) -> dict:
    if name not in _PRESETS:
        raise ValueError(f"unknown plans preset {name!r}; choose one of {PRESETS}")
    return _PRESETS[name]


def preset_dataset_json(name: str) -> dict:
    p = _check(name)
    return {"name": p["dataset_name"].split("_", 1)[1], "description": f"nnunetv2_mn plans preset {name!r} (no data)",
            "channel_names": dict(p["channel_names"]), "labels": dict(p["labels"]), "numTraining": 0,
            "file_ending": ".nii.gz"}


def preset_plans(name: str) -> dict:
    """The preset's full plans (a fresh dict), as nnU-Net writes `nnUNetPlans.json`."""
    p = _check(name)
    config = {"data_identifier": f"nnUNetPlans_{CONFIGURATION}", "preprocessor_name": "DefaultPreprocessor",
              "batch_size": p["batch_size"], "patch_size": list(p["patch_size"]),
              "median_image_size_in_voxels": [float(s) for s in p["median_shape"]], "spacing": list(p["spacing"]),
              "normalization_schemes": ["ZScoreNormalization"] * len(p["channel_names"]),
              "use_mask_for_norm": [False] * len(p["channel_names"]), **copy.deepcopy(_RESAMPLING),
              "architecture": copy.deepcopy(p["architecture"]), "batch_dice": p["batch_dice"]}
    return {"dataset_name": p["dataset_name"], "plans_name": "nnUNetPlans",
            "original_median_spacing_after_transp": list(p["spacing"]),
            "original_median_shape_after_transp": list(p["median_shape"]), "image_reader_writer": "SimpleITKIO",
            "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
            "configurations": {CONFIGURATION: config}, "experiment_planner_used": "ExperimentPlanner",
            "label_manager": "LabelManager",
            "foreground_intensity_properties_per_channel": {c: dict(_INTENSITIES) for c in p["channel_names"]}}


def write_preset(name: str, preprocessed_root: str) -> str:
    """Write the preset's `nnUNetPlans.json` and `dataset.json` into `preprocessed_root/<dataset_name>/` (as nnU-Net's
    planning would; no preprocessed images) and return that folder."""
    folder = os.path.join(preprocessed_root, _check(name)["dataset_name"])
    os.makedirs(folder, exist_ok=True)
    for filename, content in (("nnUNetPlans.json", preset_plans(name)), ("dataset.json", preset_dataset_json(name))):
        with open(os.path.join(folder, filename), "w") as f:
            json.dump(content, f, indent=2)
    return folder


def nnunet_plans_for_fingerprint(fingerprint: dict, dataset_json: dict, work_dir: str,
                                 dataset_id: int = 992, gpu_memory_target_gb: Optional[float] = None) -> dict:
    """The plans nnU-Net's default `ExperimentPlanner` makes for a data set described only by `fingerprint`
    (nnU-Net's `dataset_fingerprint.json` format) and `dataset_json`, in fresh nnU-Net folders under `work_dir`
    (the environment variables are set for the call and restored). How the `la` preset was made."""
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    name = f"Dataset{dataset_id:03d}_Fingerprint"
    dirs = {k: os.path.join(work_dir, k) for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for sub in ("imagesTr", "labelsTr"):
        os.makedirs(os.path.join(dirs["nnUNet_raw"], name, sub), exist_ok=True)
    os.makedirs(os.path.join(dirs["nnUNet_preprocessed"], name), exist_ok=True)
    os.makedirs(dirs["nnUNet_results"], exist_ok=True)
    with open(os.path.join(dirs["nnUNet_raw"], name, "dataset.json"), "w") as f:
        json.dump(dataset_json, f)
    with open(os.path.join(dirs["nnUNet_preprocessed"], name, "dataset_fingerprint.json"), "w") as f:
        json.dump(fingerprint, f)

    class FingerprintPlanner(ExperimentPlanner):  # no images to read the file format from
        def determine_reader_writer(self):
            return SimpleITKIO

    saved = {k: os.environ.get(k) for k in dirs}
    os.environ.update(dirs)
    try:
        kwargs = {} if gpu_memory_target_gb is None else {"gpu_memory_target_in_gb": gpu_memory_target_gb}
        return FingerprintPlanner(dataset_id, **kwargs).plan_experiment()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
