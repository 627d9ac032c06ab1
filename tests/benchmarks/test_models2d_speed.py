"""benchmarks/models2d_speed.py: the timing of the 2D branches."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.models2d_speed import candidates, time_branch  # noqa: E402
from nnunetv2_mn.models2d.resunet import ResUNetBranch


def test_time_branch_on_a_tiny_model():
    branch = ResUNetBranch(2, "whole", encoder_name="test_resnet", decoder_channels=(16, 8, 8, 8, 8))
    train, infer = time_branch(branch, torch.randn(2, 3, 32, 32), repeats=1)
    assert train > 0 and infer > 0
    assert set(candidates()) == {"segformer-b2", "effnet_lite0-unet", "resnet50-unet"}
