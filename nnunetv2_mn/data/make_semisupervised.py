"""Make a semi-supervised nnU-Net raw data set from a fully labelled one.

The source is an nnU-Net raw data set (id or name in $nnUNet_raw, or its folder) or an MSD task folder
(TaskNN_Name with imagesTr/labelsTr/dataset.json, e.g. Task04_Hippocampus). Its labelled cases are split into

    test       imagesTs/ + labelsTs/    chosen first, so the same seed gives the same test set for every N
    labelled   imagesTr/ + labelsTr/    the first N of the remaining permutation (nested: N=4 is a subset of N=8)
    unlabelled imagesUnlabeled/         the rest, images only (plus the source's own imagesUnlabeled/, if any)

Files are copied; the source is never modified. `split_record.json` in the new folder records the split.

    nnUNetv2_mn_make_semisupervised -d /data/Task04_Hippocampus -o 504 --num_labeled 4 --num_test 40
"""
import datetime
import json
import os
import re
import shutil
from typing import Dict, List, Optional, Union

import numpy as np
import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import load_json, save_json, subfiles

from nnunetv2_mn.paths import UNLABELED_RAW_FOLDER, unlabeled_raw_dir

SPLIT_RECORD = "split_record.json"


class DatasetSplitError(RuntimeError):
    """Bad source, split sizes or target for make_semisupervised."""


# ----------------------------------------------------------------------------------------------------- sources
def _is_msd_folder(folder: str) -> bool:
    dj = load_json(os.path.join(folder, "dataset.json"))
    return "channel_names" not in dj and "modality" in dj


def _resolve_source(source: Union[str, int]) -> str:
    """Folder of the source: an existing directory, or an nnU-Net id/name looked up in $nnUNet_raw."""
    if isinstance(source, str) and os.path.isdir(source):
        folder = os.path.abspath(source)
    else:
        from nnunetv2.paths import nnUNet_raw
        from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
        try:
            folder = os.path.join(nnUNet_raw.require(), maybe_convert_to_dataset_name(source))
        except (RuntimeError, ValueError) as e:
            raise DatasetSplitError(f"Source {source!r} is neither a folder nor a data set in $nnUNet_raw: {e}")
    if not os.path.isfile(os.path.join(folder, "dataset.json")):
        raise DatasetSplitError(f"{folder} has no dataset.json: not an nnU-Net raw data set or MSD task folder.")
    return folder


def _source_name(folder: str) -> str:
    """'Hippocampus' for Task04_Hippocampus or Dataset004_Hippocampus; the folder name otherwise."""
    base = os.path.basename(os.path.normpath(folder))
    m = re.fullmatch(r"(?:Task\d+|Dataset\d{3})_(.+)", base)
    return m.group(1) if m else base


def _msd_cases(folder: str) -> Dict[str, dict]:
    """{case: {'images': [msd image], 'label': file}} for an MSD folder (images without channel suffix)."""
    img_dir, lab_dir = os.path.join(folder, "imagesTr"), os.path.join(folder, "labelsTr")
    files = [f for f in subfiles(img_dir, suffix=".nii.gz", join=False) if not f.startswith((".", "_"))]
    missing = [f for f in files if not os.path.isfile(os.path.join(lab_dir, f))]
    if missing:
        raise DatasetSplitError(f"{len(missing)} images in {img_dir} have no label in {lab_dir}, e.g. {missing[:3]}")
    return {f[:-7]: {"images": [os.path.join(img_dir, f)], "label": os.path.join(lab_dir, f)} for f in files}


def _split_folder_cases(folder: str, file_ending: str) -> Dict[str, List[str]]:
    """{case: channel files} of an imagesXX folder, with nnU-Net's own helpers (without their process pool)."""
    from nnunetv2.utilities.utils import create_paths_fn, get_identifiers_from_splitted_dataset_folder
    files = subfiles(folder, suffix=file_ending, join=False, sort=True)
    return {str(c): create_paths_fn(folder, files, file_ending, c)
            for c in get_identifiers_from_splitted_dataset_folder(folder, file_ending)}


def _nnunet_cases(folder: str, dataset_json: dict) -> Dict[str, dict]:
    """Training cases as get_filenames_of_train_images_and_targets sees them."""
    if "dataset" in dataset_json:
        from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets
        cases = get_filenames_of_train_images_and_targets(folder, json.loads(json.dumps(dataset_json)))
    else:
        fe = dataset_json["file_ending"]
        cases = {c: {"images": im, "label": os.path.join(folder, "labelsTr", c + fe)}
                 for c, im in _split_folder_cases(os.path.join(folder, "imagesTr"), fe).items()}
    missing = [c for c, v in cases.items() if not os.path.isfile(v["label"])]
    if missing:
        raise DatasetSplitError(f"{len(missing)} training cases of {folder} have no label, e.g. {missing[:3]}")
    return {str(c): v for c, v in cases.items()}


def _extra_unlabeled(folder: str, file_ending: str) -> Dict[str, List[str]]:
    """The source's own imagesUnlabeled/ cases (nnU-Net layout only)."""
    src = unlabeled_raw_dir(folder)
    return _split_folder_cases(src, file_ending) if os.path.isdir(src) else {}


def msd_to_nnunet_dataset_json(msd_json: dict) -> dict:
    """The same conversion as nnunetv2.dataset_conversion.convert_MSD_dataset (labels inverted, channel_names)."""
    dj = {k: v for k, v in msd_json.items() if k not in ("training", "test", "modality")}
    dj["labels"] = {name: int(value) for value, name in msd_json["labels"].items()}
    dj["file_ending"] = ".nii.gz"
    dj["channel_names"] = msd_json["modality"]
    return dj


# ----------------------------------------------------------------------------------------------------- split
def split_cases(case_ids: List[str], num_labeled: int, num_test: int, seed: int) -> Dict[str, List[str]]:
    """Deterministic split of sorted ids: test first (independent of N), then the first N labelled."""
    ids = sorted(case_ids)
    if num_labeled < 1 or num_test < 0 or num_labeled + num_test > len(ids):
        raise DatasetSplitError(f"Cannot take {num_labeled} labelled + {num_test} test cases from {len(ids)} "
                                f"labelled source cases (need num_labeled >= 1, num_test >= 0).")
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    rest = order[num_test:]
    return {"labeled": sorted(rest[:num_labeled]), "unlabeled": sorted(rest[num_labeled:]),
            "test": sorted(order[:num_test])}


# ----------------------------------------------------------------------------------------------------- target
def _prepare_target(target_id: int, name: str, source_folder: str, overwrite: bool) -> str:
    from nnunetv2.paths import nnUNet_raw
    from nnunetv2.utilities.dataset_name_id_conversion import find_candidate_datasets
    folder_name = f"Dataset{target_id:03d}_{name}"
    target = os.path.join(nnUNet_raw.require(), folder_name)
    if os.path.realpath(target) == os.path.realpath(source_folder):
        raise DatasetSplitError("The target is the source data set; pick another target id or name.")
    taken = [str(c) for c in find_candidate_datasets(target_id)]
    if any(c != folder_name for c in taken):
        raise DatasetSplitError(f"Dataset id {target_id} is already used by {taken} (nnUNet_raw, "
                                f"nnUNet_preprocessed or nnUNet_results). Pick another target id.")
    if taken and not overwrite:
        raise FileExistsError(f"{folder_name} already exists (nnUNet_raw, nnUNet_preprocessed or nnUNet_results). "
                              f"Pass --overwrite (overwrite=True) to rebuild its raw folder, or pick another id.")
    if os.path.isdir(target):
        shutil.rmtree(target)
    return target


def _copy_image(src: str, dst_folder: str, case: str, channel: int, file_ending: str, msd: bool) -> None:
    """Copy one image as `{case}_{channel:04d}{ending}`; MSD 4D images are split with nnU-Net's split_4d_nifti."""
    os.makedirs(dst_folder, exist_ok=True)
    if msd:
        reader = sitk.ImageFileReader()
        reader.SetFileName(src)
        reader.ReadImageInformation()
        if reader.GetDimension() != 3:
            from nnunetv2.dataset_conversion.convert_MSD_dataset import split_4d_nifti
            split_4d_nifti(src, dst_folder)
            return
    shutil.copyfile(src, os.path.join(dst_folder, f"{case}_{channel:04d}{file_ending}"))


def _copy_case(case: str, files: dict, target: str, image_folder: str, label_folder: Optional[str],
               file_ending: str, msd: bool) -> None:
    for c, f in enumerate(files["images"]):
        _copy_image(f, os.path.join(target, image_folder), case, c, file_ending, msd)
    if label_folder is not None:
        os.makedirs(os.path.join(target, label_folder), exist_ok=True)
        shutil.copyfile(files["label"], os.path.join(target, label_folder, case + file_ending))


def _write_dataset_json(target: str, dataset_json: dict, split: dict, name: str) -> None:
    dj = {k: v for k, v in dataset_json.items() if k != "dataset"}
    dj.update(name=name, numTraining=len(split["labeled"]), numTest=len(split["test"]),
              numUnlabeled=len(split["unlabeled"]))
    save_json(dj, os.path.join(target, "dataset.json"), sort_keys=False)


def make_semisupervised(source: Union[str, int], target_id: int, num_labeled: int, num_test: int = 0,
                        seed: int = 0, target_name: Optional[str] = None, overwrite: bool = False,
                        command: Optional[str] = None) -> str:
    """Create `$nnUNet_raw/Dataset{target_id:03d}_{name}` (default name `{source name}_{N}lab`); return its path."""
    src = _resolve_source(source)
    msd = _is_msd_folder(src)
    src_json = load_json(os.path.join(src, "dataset.json"))
    dataset_json = msd_to_nnunet_dataset_json(src_json) if msd else src_json
    fe = dataset_json["file_ending"]
    cases = _msd_cases(src) if msd else _nnunet_cases(src, dataset_json)
    extra = {} if msd else _extra_unlabeled(src, fe)
    clash = sorted(set(extra) & set(cases))
    if clash:
        raise DatasetSplitError(f"Cases {clash[:3]} are both in imagesTr and {UNLABELED_RAW_FOLDER} of {src}.")
    split = split_cases(list(cases), num_labeled, num_test, seed)
    name = target_name or f"{_source_name(src)}_{num_labeled}lab"
    target = _prepare_target(target_id, name, src, overwrite)

    for case in split["labeled"]:
        _copy_case(case, cases[case], target, "imagesTr", "labelsTr", fe, msd)
    for case in split["test"]:
        _copy_case(case, cases[case], target, "imagesTs", "labelsTs", fe, msd)
    for case in split["unlabeled"]:
        _copy_case(case, cases[case], target, UNLABELED_RAW_FOLDER, None, fe, msd)
    for case, files in extra.items():
        _copy_case(case, {"images": files}, target, UNLABELED_RAW_FOLDER, None, fe, False)
    split["unlabeled"] = sorted(split["unlabeled"] + list(extra))
    _write_dataset_json(target, dataset_json, split, name)
    _write_record(target, src, "msd" if msd else "nnunet", seed, split, sorted(extra), command or
                  f"make_semisupervised({source!r}, {target_id}, num_labeled={num_labeled}, num_test={num_test}, "
                  f"seed={seed}, target_name={target_name!r})")
    return target


def _write_record(target: str, source: str, layout: str, seed: int, split: dict, source_unlabeled: List[str],
                  command: str) -> None:
    record = {"source": source, "source_layout": layout, "target": os.path.basename(target), "seed": seed,
              "num_labeled": len(split["labeled"]), "num_unlabeled": len(split["unlabeled"]),
              "num_test": len(split["test"]), "labeled": split["labeled"], "unlabeled": split["unlabeled"],
              "test": split["test"], "unlabeled_from_source_imagesUnlabeled": source_unlabeled,
              "command": command, "created": datetime.datetime.now().isoformat(timespec="seconds")}
    save_json(record, os.path.join(target, SPLIT_RECORD), sort_keys=False)
