"""The paper's staged warm-up + cosine schedule and the stage-2 alternation order."""
import pytest
import torch

from nnunetv2_mn.mn.schedules import StagedCosineLR
from nnunetv2_mn.training.mn import mn_phase


def test_staged_cosine_matches_the_official_milestones():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    s = StagedCosineLR(opt, 1e-3, stage1_epochs=500, max_epochs=4000, warmup_epochs=50)
    assert s.lr_at(0) == pytest.approx(1e-5)  # LinearLR start_factor 0.01
    assert s.lr_at(50) == pytest.approx(1e-3)
    assert s.lr_at(275) == pytest.approx(0.5e-3)  # half way down the stage-1 cosine
    assert s.lr_at(499) < 1e-6
    assert s.lr_at(500) == pytest.approx(1e-3)  # restart for stage 2
    assert s.lr_at(2250) == pytest.approx(0.5e-3)
    assert s.lr_at(3999) < 1e-9
    s.step(2250)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5e-3)


def test_alternation_order():
    phases = [mn_phase(e, stage2_start=3) for e in range(8)]
    assert phases == ["both", "both", "both", "3d", "2d", "3d", "2d", "3d"]
    assert [mn_phase(e, 3, first_student="2d") for e in range(3, 6)] == ["2d", "3d", "2d"]
    assert {mn_phase(e, 3, co_training=False) for e in range(3, 10)} == {"3d"}
