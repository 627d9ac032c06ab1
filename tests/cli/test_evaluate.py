"""nnUNetv2_mn_evaluate: the arguments reach evaluate_folder, the table is printed, errors end without a traceback."""
import json

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_mn.cli.evaluate import main

DATASET_JSON = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "anterior": 1, "posterior": 2},
                "numTraining": 2, "file_ending": ".nii.gz"}


@pytest.fixture
def folders(tmp_path):
    """2 cases of (6, 9, 10) voxels, 2 mm along z; each prediction is its reference shifted by one voxel in x."""
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_dir.mkdir()
    pred_dir.mkdir()
    for i in range(2):
        ref = np.zeros((6, 9, 10), np.uint8)
        ref[1:4, 2:6, 2:5], ref[2:5, 5:8, 5:9] = 1, 2
        for folder, seg in ((ref_dir, ref), (pred_dir, np.roll(ref, 1, axis=2))):
            img = sitk.GetImageFromArray(seg)
            img.SetSpacing((1.0, 1.0, 2.0))
            sitk.WriteImage(img, str(folder / f"case_{i:03d}.nii.gz"))
    dj = tmp_path / "dataset.json"
    dj.write_text(json.dumps(DATASET_JSON))
    return ref_dir, pred_dir, dj


def test_cli_voxel_units_custom_output(folders, tmp_path, capsys):
    ref_dir, pred_dir, dj = folders
    out = tmp_path / "out" / "eval.json"
    main(["-ref", str(ref_dir), "-pred", str(pred_dir), "-djfile", str(dj), "-o", str(out), "--voxel", "-np", "1"])
    summary = json.loads(out.read_text())
    assert summary["settings"]["units"] == "voxel" and summary["settings"]["n_cases"] == 2
    assert "HD95 (voxel)" in (tmp_path / "out" / "eval.md").read_text()
    printed = capsys.readouterr().out
    assert "HD95 (voxel)" in printed and f"Written: {out} (+ .md)" in printed
    assert not (pred_dir / "summary_mn.json").exists()


def test_cli_reports_errors_without_traceback(folders, capsys):
    ref_dir, pred_dir, dj = folders
    (pred_dir / "case_000.nii.gz").unlink()
    with pytest.raises(SystemExit) as exc:
        main(["-ref", str(ref_dir), "-pred", str(pred_dir), "-djfile", str(dj), "-np", "1"])
    assert exc.value.code == 1
    assert "error: 1 reference case(s) have no prediction" in capsys.readouterr().err
    main(["-ref", str(ref_dir), "-pred", str(pred_dir), "-djfile", str(dj), "-np", "1", "--subset"])
    assert (pred_dir / "summary_mn.json").is_file()
