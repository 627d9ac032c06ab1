"""nnUNetv2_mn_preprocess_unlabeled: one summary line per configuration; a data error ends it with a message."""
import shutil

import pytest

from nnunetv2_mn.cli.preprocess_unlabeled import main
from nnunetv2_mn.data.synthetic import make_synthetic_dataset

DID = 931
NAME = "Dataset931_MNSynthetic"


@pytest.fixture(scope="module")
def planned_template(tmp_path_factory, plan_in_process):
    """A small synthetic data set with 2 unlabelled images, planned and preprocessed once by nnU-Net."""
    return plan_in_process(tmp_path_factory.mktemp("planned"), DID, lambda: make_synthetic_dataset(
        DID, num_labeled=3, num_unlabeled=2, num_test=0, shape=(16, 24, 24)))


@pytest.fixture
def planned(planned_template, nnunet_dirs):
    """A private copy of the planned data set in this test's nnU-Net folders; returns the raw data set folder."""
    for n in ("nnUNet_raw", "nnUNet_preprocessed"):
        shutil.copytree(planned_template / n, nnunet_dirs[n], dirs_exist_ok=True)
    return nnunet_dirs["nnUNet_raw"] / NAME


def test_cli(planned, capsys):
    main(["-d", str(DID), "-c", "3d_fullres", "-np", "1"])
    assert "2 preprocessed, 0 unchanged, 0 removed" in capsys.readouterr().out
    shutil.rmtree(planned / "imagesUnlabeled")
    with pytest.raises(SystemExit, match="ERROR: No imagesUnlabeled folder") as e:
        main(["-d", str(DID)])
    assert e.value.code != 0
