"""The synthetic data set is a valid nnU-Net raw data set, deterministic per seed, with learnable contrast."""
import glob
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_mn.data.synthetic import make_synthetic_dataset

SHAPE = (16, 24, 24)


def _arrays(folder):
    files = sorted(glob.glob(os.path.join(folder, "*", "*.nii.gz")))
    return {os.path.relpath(f, folder): sitk.GetArrayFromImage(sitk.ReadImage(f)) for f in files}


def test_passes_nnunet_verify_dataset_integrity(nnunet_dirs):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    path = make_synthetic_dataset(901, num_labeled=3, num_unlabeled=2, num_test=2, shape=SHAPE)
    assert os.path.basename(path) == "Dataset901_MNSynthetic"
    assert os.path.dirname(path) == str(nnunet_dirs["nnUNet_raw"])
    verify_dataset_integrity(path, num_processes=1)

    counts = {d: len(os.listdir(os.path.join(path, d)))
              for d in ("imagesTr", "labelsTr", "imagesUnlabeled", "imagesTs", "labelsTs")}
    assert counts == {"imagesTr": 3, "labelsTr": 3, "imagesUnlabeled": 2, "imagesTs": 2, "labelsTs": 2}
    dj = json.load(open(os.path.join(path, "dataset.json")))
    assert dj["channel_names"] == {"0": "MRI"} and dj["file_ending"] == ".nii.gz" and dj["numTraining"] == 3
    assert dj["labels"] == {"background": 0, "structure": 1, "core": 2}

    img = sitk.ReadImage(os.path.join(path, "imagesTr", "case_000_0000.nii.gz"))
    assert img.GetSpacing() == (1.0, 1.0, 2.0) and img.GetSize() == SHAPE[::-1]


def test_structures_present_with_intensity_contrast(tmp_path):
    path = make_synthetic_dataset(902, num_labeled=3, num_unlabeled=0, num_test=0, shape=SHAPE, raw_dir=str(tmp_path))
    for case in ("case_000", "case_001", "case_002"):
        img = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(path, "imagesTr", case + "_0000.nii.gz")))
        seg = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(path, "labelsTr", case + ".nii.gz")))
        assert set(np.unique(seg)) == {0, 1, 2}
        tissue = img[(seg == 0) & (img > 0)].mean()
        assert tissue < img[seg == 1].mean() < img[seg == 2].mean()
        assert (img == 0).any() and (seg[img == 0] == 0).all()  # air outside the body, never labelled


def test_deterministic_per_seed(tmp_path):
    kw = dict(num_labeled=2, num_unlabeled=1, num_test=1, shape=(8, 12, 12))
    a = _arrays(make_synthetic_dataset(903, raw_dir=str(tmp_path / "a"), seed=3, **kw))
    b = _arrays(make_synthetic_dataset(903, raw_dir=str(tmp_path / "b"), seed=3, **kw))
    c = _arrays(make_synthetic_dataset(903, raw_dir=str(tmp_path / "c"), seed=4, **kw))
    assert a.keys() == b.keys() == c.keys() and len(a) == 7
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["imagesTr/case_000_0000.nii.gz"], c["imagesTr/case_000_0000.nii.gz"])


def test_refuses_to_overwrite(tmp_path):
    kw = dict(num_labeled=1, num_unlabeled=0, num_test=0, shape=(8, 12, 12), raw_dir=str(tmp_path))
    make_synthetic_dataset(904, **kw)
    with pytest.raises(FileExistsError, match="--overwrite"):
        make_synthetic_dataset(904, **kw)
    with pytest.raises(FileExistsError, match="already used"):
        make_synthetic_dataset(904, name="Other", **kw)
    make_synthetic_dataset(904, overwrite=True, **kw)

