"""Learning-rate schedules (the paper's staged warm-up + cosine, poly per stage) and who learns when."""
import pytest
import torch

from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2_mn.mn.cotraining import CoTrainingSchedule
from nnunetv2_mn.mn.lr_schedules import StagedCosineLR, StagedPolyLR, planned_lrs


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


def test_staged_poly_restarts_at_stage_2():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-2)
    s = StagedPolyLR(opt, 1e-2, stage1_epochs=4, max_epochs=10)
    assert s.lr_at(0) == pytest.approx(1e-2)
    assert s.lr_at(3) == pytest.approx(1e-2 * (1 - 3 / 4) ** 0.9)
    assert s.lr_at(4) == pytest.approx(1e-2)  # restart
    assert s.lr_at(9) == pytest.approx(1e-2 * (1 - 5 / 6) ** 0.9)


def test_planned_lrs_reads_a_schedule_without_stepping_the_real_one():
    lrs = planned_lrs(lambda o: PolyLRScheduler(o, 1e-2, 40), 1e-2, 40)
    assert lrs == pytest.approx([1e-2 * (1 - e / 40) ** 0.9 for e in range(40)])


def test_alternation_by_epoch_is_the_papers_order():
    s = CoTrainingSchedule(8, stage1_fraction=3 / 8, stage2_students="epochs")
    assert s.stage2_start == 3
    assert [s.students(e) for e in range(8)] == [("3d", "2d")] * 3 + [("3d",), ("2d",), ("3d",), ("2d",), ("3d",)]
    first2d = CoTrainingSchedule(8, 3 / 8, "epochs", first_student="2d")
    assert [first2d.students(e) for e in range(3, 6)] == [("2d",), ("3d",), ("2d",)]
    assert {CoTrainingSchedule(10, 0.3, co_training=False).students(e, i) for e in range(3, 10) for i in range(3)} \
        == {("3d",)}


def test_stage2_students_and_update_budget():
    """Optimizer steps of the 3D network over 40 epochs x 25 iterations with a stage 1 of 5 epochs: nnU-Net's
    1000 with 'pair', about 56 % of them when the students alternate (by epoch, as the paper, or by iteration)."""
    pair = CoTrainingSchedule(40, 0.125, "pair")
    assert pair.students(5, 0) == ("3d", "2d") and pair.steps(25) == {"3d": 1000, "2d": 1000}
    by_epoch = CoTrainingSchedule(40, 0.125, "epochs").steps(25)
    by_iteration = CoTrainingSchedule(40, 0.125, "iterations").steps(25)
    assert by_epoch["3d"] == 5 * 25 + 18 * 25 and by_epoch["2d"] == 5 * 25 + 17 * 25
    assert by_iteration["3d"] == 5 * 25 + 35 * 13 and by_iteration["2d"] == 5 * 25 + 35 * 12
    assert 0.55 < by_epoch["3d"] / 1000 < 0.6
    assert CoTrainingSchedule(40, 0.125, "iterations").students(10, 1) == ("2d",)


def test_schedule_settings_are_checked():
    with pytest.raises(ValueError, match="stage2_students"):
        CoTrainingSchedule(10, 0.1, "sometimes")
    with pytest.raises(ValueError, match="stage1_fraction"):
        CoTrainingSchedule(10, 1.0)
    with pytest.raises(ValueError, match="first_student"):
        CoTrainingSchedule(10, 0.1, first_student="3D")


def test_pseudo_mask_refresh():
    s = CoTrainingSchedule(40, 0.125, refresh_fraction=0.25)  # stage 2 from epoch 5, every 10 epochs
    assert not s.refresh_due(4, have_masks=False)
    assert [e for e in range(40) if s.refresh_due(e, have_masks=True)] == [5, 15, 25, 35] and s.num_refreshes() == 4
    assert s.refresh_due(7, have_masks=False)  # resumed without masks: predict them now
