"""Unlabelled preprocessing matches nnU-Net's own preprocessing, is incremental and fails with useful messages."""
import json
import os
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_mn.data.synthetic import make_synthetic_dataset
from nnunetv2_mn.data.unlabeled import (MANIFEST, UnlabeledDataError, get_unlabeled_preprocessed_folder,
                                        list_unlabeled_cases, preprocess_unlabeled)

DID = 930
NAME = "Dataset930_MNSynthetic"


def _respace(filename, spacing_xyz):
    img = sitk.ReadImage(filename)
    img.SetSpacing(spacing_xyz)
    sitk.WriteImage(img, filename, True)


@pytest.fixture(scope="module")
def planned_template(tmp_path_factory, plan_in_process):
    """Synthetic data set planned and preprocessed once by nnU-Net (3d_fullres); case_001 has another spacing
    so that nnU-Net resamples it."""
    def make_raw():
        raw = make_synthetic_dataset(DID, num_labeled=4, num_unlabeled=2, num_test=1, shape=(16, 24, 24))
        _respace(os.path.join(raw, "imagesTr", "case_001_0000.nii.gz"), (1.2, 1.2, 2.5))
        _respace(os.path.join(raw, "labelsTr", "case_001.nii.gz"), (1.2, 1.2, 2.5))

    return plan_in_process(tmp_path_factory.mktemp("planned"), DID, make_raw)


@pytest.fixture
def planned(planned_template, nnunet_dirs):
    """A private copy of the planned data set in this test's nnU-Net folders; returns the raw data set folder."""
    for n in ("nnUNet_raw", "nnUNet_preprocessed"):
        shutil.copytree(planned_template / n, nnunet_dirs[n], dirs_exist_ok=True)
    return nnunet_dirs["nnUNet_raw"] / NAME


def _pp(*parts):
    return os.path.join(os.environ["nnUNet_preprocessed"], NAME, *parts)


def _load(folder, case):
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
    data, seg, _, props = nnUNetDatasetBlosc2(folder).load_case(case)
    return np.asarray(data[:]), np.asarray(seg[:]), props


def test_same_arrays_as_nnunet_preprocessing(planned, monkeypatch):
    from nnunetv2_mn.data import unlabeled
    # labelled images copied into imagesUnlabeled are a label leak that preprocess_unlabeled refuses
    # (tests/reliability/test_unlabeled_input.py); here they are the reference, so that check is switched off
    monkeypatch.setattr(unlabeled, "check_not_labeled", lambda *args, **kwargs: None)
    main_folder = _pp("nnUNetPlans_3d_fullres")
    main_before = sorted(os.listdir(main_folder))
    for case in ("case_000", "case_001"):
        shutil.copy(planned / "imagesTr" / f"{case}_0000.nii.gz", planned / "imagesUnlabeled" / f"copy_{case}_0000.nii.gz")

    res = preprocess_unlabeled(DID, num_processes=2, verbose=False)["3d_fullres"]
    out = _pp("nnUNetPlans_3d_fullres_unlabeled")
    assert res["output_folder"] == out == get_unlabeled_preprocessed_folder(DID)
    assert res["processed"] == ["case_004", "case_005", "copy_case_000", "copy_case_001"]
    assert list_unlabeled_cases(out) == res["processed"]

    for case in ("case_000", "case_001"):
        ref_data, ref_seg, ref_props = _load(main_folder, case)
        data, seg, props = _load(out, "copy_" + case)
        np.testing.assert_array_equal(data, ref_data)
        for k in ("spacing", "shape_before_cropping", "bbox_used_for_cropping",
                  "shape_after_cropping_and_before_resampling"):
            np.testing.assert_array_equal(np.asarray(props[k]), np.asarray(ref_props[k]))
        assert "class_locations" not in props and set(np.unique(seg)) <= {-1, 0}
    assert _load(main_folder, "case_001")[2]["spacing"] != [2.0, 1.0, 1.0]  # case_001 really was resampled

    # unlabelled cases never reach nnU-Net's own folder
    assert sorted(os.listdir(main_folder)) == main_before
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
    assert sorted(nnUNetDatasetBlosc2.get_identifiers(main_folder)) == [f"case_00{i}" for i in range(4)]


def test_incremental_rerun(planned):
    unl = planned / "imagesUnlabeled"
    run = lambda **kw: preprocess_unlabeled(NAME, num_processes=1, verbose=False, **kw)["3d_fullres"]
    assert run()["processed"] == ["case_004", "case_005"]
    assert run()["processed"] == [] and run()["unchanged"] == ["case_004", "case_005"]

    shutil.copy(planned / "imagesTs" / "case_006_0000.nii.gz", unl / "new_0000.nii.gz")  # (imagesTr: a label leak)
    r = run()
    assert (r["processed"], r["unchanged"], r["removed"]) == (["new"], ["case_004", "case_005"], [])

    shutil.copy(unl / "case_005_0000.nii.gz", unl / "case_004_0000.nii.gz")  # modified
    os.remove(unl / "case_005_0000.nii.gz")  # vanished
    r = run()
    assert (r["processed"], r["unchanged"], r["removed"]) == (["case_004"], ["new"], ["case_005"])
    out = r["output_folder"]
    assert list_unlabeled_cases(out) == ["case_004", "new"]
    assert not any(f.startswith("case_005") for f in os.listdir(out))
    manifest = json.load(open(os.path.join(out, MANIFEST)))
    assert sorted(manifest["cases"]) == ["case_004", "new"]
    assert manifest["cases"]["new"]["files"]["new_0000.nii.gz"]["size"] == os.path.getsize(unl / "new_0000.nii.gz")

    os.remove(os.path.join(out, "new.b2nd"))  # a lost output is redone
    assert run()["processed"] == ["new"]


def test_transductive_imagesTs_only_with_flag(planned, capsys):
    r = preprocess_unlabeled(DID, num_processes=1, include_imagesTs=True)["3d_fullres"]
    assert r["processed"] == ["case_004", "case_005", "case_006"]
    assert "imagesTs" in capsys.readouterr().out
    manifest = json.load(open(os.path.join(r["output_folder"], MANIFEST)))
    assert manifest["cases"]["case_006"]["folder"] == "imagesTs"
    assert manifest["source_folders"] == ["imagesTs", "imagesUnlabeled"]
    r = preprocess_unlabeled(DID, num_processes=1, verbose=False)["3d_fullres"]
    assert (r["processed"], r["removed"]) == ([], ["case_006"])


def _no_folder(raw):
    shutil.rmtree(raw / "imagesUnlabeled")


def _empty_folder(raw):
    for f in os.listdir(raw / "imagesUnlabeled"):
        os.remove(raw / "imagesUnlabeled" / f)


def _wrong_channels(raw):
    shutil.copy(raw / "imagesUnlabeled" / "case_004_0000.nii.gz", raw / "imagesUnlabeled" / "case_004_0001.nii.gz")


def _bad_name(raw):
    shutil.copy(raw / "imagesUnlabeled" / "case_004_0000.nii.gz", raw / "imagesUnlabeled" / "scan.nii.gz")


def _corrupt(raw):
    (raw / "imagesUnlabeled" / "broken_0000.nii.gz").write_bytes(b"this is not a nifti file")


@pytest.mark.parametrize("damage, message", [
    (_no_folder, r"No imagesUnlabeled folder in .*\{CASE\}_\{XXXX\}\.nii\.gz"),
    (_empty_folder, r"No images ending in \.nii\.gz in .*imagesUnlabeled.*\{CASE\}_\{XXXX\}"),
    (_wrong_channels, r"Case case_004 .* channel\(s\) \['0000', '0001'\], but dataset.json channel_names .* expects 1"),
    (_bad_name, r"scan\.nii\.gz does not follow the naming convention"),
    (_corrupt, r"Cannot read image .*imagesUnlabeled/broken_0000\.nii\.gz"),
])
def test_bad_input_fails_with_message(planned, damage, message):
    damage(planned)
    with pytest.raises(UnlabeledDataError, match=message):
        preprocess_unlabeled(DID, num_processes=1, verbose=False)


def test_not_planned_and_unknown_configuration(nnunet_dirs, planned_template):
    make_synthetic_dataset(931, num_labeled=1, num_unlabeled=1, num_test=0, shape=(8, 12, 12))
    with pytest.raises(UnlabeledDataError, match=r"not planned.*nnUNetv2_plan_and_preprocess -d 931 -c 3d_fullres"):
        preprocess_unlabeled(931, verbose=False)
    with pytest.raises(UnlabeledDataError, match="Unknown data set"):
        preprocess_unlabeled(932, verbose=False)
    shutil.copytree(planned_template / "nnUNet_preprocessed", nnunet_dirs["nnUNet_preprocessed"], dirs_exist_ok=True)
    with pytest.raises(UnlabeledDataError, match=r"3d_lowres.*Available"):
        preprocess_unlabeled(DID, configurations=("3d_lowres",), verbose=False)

