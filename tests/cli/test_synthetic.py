"""nnUNetv2_mn_synthetic: the arguments reach make_synthetic_dataset, the next commands are printed."""
import os

from nnunetv2_mn.cli.synthetic import main


def test_cli_prints_next_commands(nnunet_dirs, capsys):
    main(["-d", "905", "--shape", "8", "12", "12", "--num_labeled", "2", "--num_unlabeled", "1", "--num_test", "1"])
    out = capsys.readouterr().out
    assert "Dataset905_MNSynthetic" in out
    assert "nnUNetv2_plan_and_preprocess -d 905" in out and "nnUNetv2_mn_preprocess_unlabeled -d 905" in out
    assert len(os.listdir(nnunet_dirs["nnUNet_raw"] / "Dataset905_MNSynthetic" / "imagesUnlabeled")) == 1
