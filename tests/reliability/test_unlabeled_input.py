"""Bad unlabelled input (issue 10, items 1-4): a clear error naming the file, exit status 1, and nothing left that
the trainer would accept."""
import json
import shutil

import pytest
import SimpleITK as sitk

from nnunetv2_mn.data import unlabeled
from nnunetv2_mn.cli.preprocess_unlabeled import main
from nnunetv2_mn.data.unlabeled import MANIFEST, UnlabeledDataError

DID = "940"


def _run(*extra):
    return ["-d", DID, "-np", "1", *extra]


def _unl(planned, case="case_004"):
    return planned["raw"] / "imagesUnlabeled" / f"{case}_0000.nii.gz"


# ---------------------------------------------------------------- 1. truncated / damaged .nii.gz
@pytest.mark.parametrize("keep, message", [
    (0.5, r"case_004_0000\.nii\.gz: the file is truncated or damaged .* of the \d+ voxel bytes that its header"),
    (200, r"case_004_0000\.nii\.gz: (its NIfTI header is unreadable|the file is truncated)"),
])
def test_truncated_image_stops_naming_the_file(planned, expect_cli_error, trainer_refuses, keep, message):
    path = _unl(planned)
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep) if isinstance(keep, float) else keep])
    error = expect_cli_error(main, _run())
    assert f"Cannot read image {path}" in error
    assert __import__("re").search(message, error), error
    assert not planned["unlabeled_out"].exists()  # checked before anything is written


def test_file_truncated_after_a_good_run_invalidates_the_folder(planned, expect_cli_error, trainer_accepts,
                                                                trainer_refuses):
    main(_run())
    trainer_accepts(planned["preprocessed"])
    path = _unl(planned, "case_005")
    path.write_bytes(path.read_bytes()[:300])
    assert "case_005_0000.nii.gz" in expect_cli_error(main, _run())
    trainer_refuses(planned["preprocessed"], "did not finish")


# ---------------------------------------------------------------- 2. a failed run leaves nothing the trainer takes
def test_failed_run_leaves_an_incomplete_folder_that_the_trainer_refuses(planned, monkeypatch, expect_cli_error,
                                                                        trainer_accepts, trainer_refuses):
    real = unlabeled._preprocess_case
    manifest = planned["unlabeled_out"] / MANIFEST

    def fail_on_case_005(preprocessor, out, *args):
        assert json.loads(manifest.read_text())["complete"] is False  # a kill -9 now leaves an incomplete folder
        if out.endswith("case_005"):
            raise UnlabeledDataError("Preprocessing case case_005 failed: simulated")
        return real(preprocessor, out, *args)

    monkeypatch.setattr(unlabeled, "_preprocess_case", fail_on_case_005)
    assert "case_005 failed" in expect_cli_error(main, _run())
    m = json.loads(manifest.read_text())
    assert m["complete"] is False and sorted(m["cases"]) == ["case_004"]
    error = trainer_refuses(planned["preprocessed"], r"did not finish .* 1 of 2 case\(s\) are preprocessed")
    assert "nnUNetv2_mn_preprocess_unlabeled -d" in error and unlabeled.ALLOW_PARTIAL_ENV in error
    monkeypatch.setenv(unlabeled.ALLOW_PARTIAL_ENV, "1")  # the user asks for the partial set
    assert trainer_accepts(planned["preprocessed"]) == ["case_004"]
    monkeypatch.delenv(unlabeled.ALLOW_PARTIAL_ENV)
    monkeypatch.setattr(unlabeled, "_preprocess_case", real)
    main(_run())  # the rerun only does what is missing
    assert json.loads(manifest.read_text())["complete"] is True
    assert trainer_accepts(planned["preprocessed"]) == ["case_004", "case_005"]


def test_new_raw_case_not_preprocessed_is_refused(planned, trainer_refuses):
    main(_run())
    shutil.copy(_unl(planned), _unl(planned, "case_new"))
    sitk.WriteImage(sitk.ReadImage(str(_unl(planned, "case_005"))) * 2, str(_unl(planned, "case_new")), True)
    trainer_refuses(planned["preprocessed"], r"1 unlabelled case\(s\) in .* are not preprocessed: \['case_new'\]")


# ---------------------------------------------------------------- 3. spacing and orientation
def _respace(path, spacing_xyz):
    img = sitk.ReadImage(str(path))
    img.SetSpacing(spacing_xyz)
    sitk.WriteImage(img, str(path), True)


def _permute(path):
    sitk.WriteImage(sitk.PermuteAxes(sitk.ReadImage(str(path)), [2, 0, 1]), str(path), True)


@pytest.mark.parametrize("damage, message", [
    (lambda p: _respace(p, (24.0, 24.0, 2.0)), r"case_004_0000\.nii\.gz: spacing \(24, 24, 2\) \(x, y, z\), "
                                                r"labelled images \(1, 1, 2\) to \(1, 1, 2\)"),
    (_permute, r"case_004_0000\.nii\.gz: orientation \w{3}, labelled images LPS"),
])
def test_geometry_unlike_the_labelled_images(planned, expect_cli_error, trainer_accepts, capsys, damage, message):
    damage(_unl(planned))
    error = expect_cli_error(main, _run())
    assert __import__("re").search(message, error), error
    assert "--accept_geometry" in error and not planned["unlabeled_out"].exists()
    main(_run("--accept_geometry"))  # the user says the headers are right
    assert "WARNING (accepted with --accept_geometry)" in capsys.readouterr().out
    assert trainer_accepts(planned["preprocessed"]) == ["case_004", "case_005"]


# ---------------------------------------------------------------- 4. unlabelled cases that are labelled cases
def test_unlabelled_case_with_a_labelled_name_is_refused(planned, expect_cli_error):
    shutil.copy(_unl(planned), planned["raw"] / "imagesUnlabeled" / "case_001_0000.nii.gz")
    error = expect_cli_error(main, _run())
    assert "have the name of a labelled imagesTr case: ['case_001']" in error
    assert not planned["unlabeled_out"].exists()


def test_unlabelled_case_with_labelled_voxels_is_refused(planned, expect_cli_error, trainer_accepts, trainer_refuses):
    main(_run())
    trainer_accepts(planned["preprocessed"])
    # the same voxels, written again (other file bytes, same data)
    img = sitk.ReadImage(str(planned["raw"] / "imagesTr" / "case_002_0000.nii.gz"))
    sitk.WriteImage(img, str(_unl(planned, "leak")), True, 1)
    error = expect_cli_error(main, _run())
    assert "same voxel data as a labelled imagesTr case (leak = case_002" in error
    trainer_refuses(planned["preprocessed"], "did not finish|not preprocessed")


def test_folder_of_an_older_version_is_refused_with_what_to_run(planned, trainer_refuses):
    main(_run())
    manifest = planned["unlabeled_out"] / MANIFEST
    m = json.loads(manifest.read_text())
    del m["complete"]
    m["format_version"] = 1
    manifest.write_text(json.dumps(m))
    error = trainer_refuses(planned["preprocessed"], "preprocessed by an older nnunetv2-mn")
    assert "nnUNetv2_mn_preprocess_unlabeled -d" in error
