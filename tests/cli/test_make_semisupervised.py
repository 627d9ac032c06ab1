"""nnUNetv2_mn_make_semisupervised: the command line is recorded, errors end the command with a message."""
import json
import os

import pytest

from nnunetv2_mn.cli.make_semisupervised import main
from nnunetv2_mn.data.make_semisupervised import SPLIT_RECORD
from nnunetv2_mn.data.synthetic import make_synthetic_dataset


@pytest.fixture
def source(nnunet_dirs):
    """Dataset500_Src: 12 labelled cases and 2 images already in imagesUnlabeled."""
    return make_synthetic_dataset(500, name="Src", num_labeled=12, num_unlabeled=2, num_test=0, shape=(8, 12, 12))


def test_cli(source, capsys):
    main(["-d", "500", "-o", "530", "--num_labeled", "2", "--num_test", "2", "--seed", "5"])
    out = capsys.readouterr().out
    assert "Dataset530_Src_2lab" in out and "nnUNetv2_mn_preprocess_unlabeled -d 530" in out
    rec = json.load(open(os.path.join(os.environ["nnUNet_raw"], "Dataset530_Src_2lab", SPLIT_RECORD)))
    assert rec["command"] == "nnUNetv2_mn_make_semisupervised -d 500 -o 530 --num_labeled 2 --num_test 2 --seed 5"
    with pytest.raises(SystemExit, match="Cannot take"):
        main(["-d", "500", "-o", "531", "--num_labeled", "20"])
    with pytest.raises(SystemExit, match="neither a folder nor a data set"):
        main(["-d", "777", "-o", "532", "--num_labeled", "2"])
