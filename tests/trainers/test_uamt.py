"""Issue 13 (5): nnUNetTrainerUAMT, the uncertainty-aware Mean Teacher (Yu et al. 2019, public UA-MT code).

Unit tests of the entropy, threshold and masked consistency against hand-computed values, one training step on
the synthetic plans, and the stock workflow: nnUNetv2_train (killed after its first checkpoint), --c, predict.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from nnunetv2_mn.trainers.uamt import masked_consistency, predictive_entropy, uncertainty_threshold
from nnunetv2_mn.trainers import nnUNetTrainerUAMT_debug

TRAINER = "nnUNetTrainerUAMT_debug"


def test_predictive_entropy_by_hand():
    p = torch.tensor([[0.25, 0.5, 1.0], [0.75, 0.5, 0.0]]).view(1, 2, 3)
    h = predictive_entropy(p)
    assert h.shape == (1, 1, 3)
    expected = [-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), math.log(2), 0.0]
    torch.testing.assert_close(h.flatten(), torch.tensor(expected), atol=1e-5, rtol=0)


def test_threshold_ramps_from_three_quarters_to_all_of_ln_c():
    assert uncertainty_threshold(0.0, 2) == pytest.approx((0.75 + 0.25 * math.exp(-5)) * math.log(2))
    assert uncertainty_threshold(0.5, 3) == pytest.approx((0.75 + 0.25 * math.exp(-5 * 0.25)) * math.log(3))
    assert uncertainty_threshold(1.0, 2) == pytest.approx(math.log(2))
    assert uncertainty_threshold(2.0, 2) == pytest.approx(math.log(2))  # clipped


def test_masked_consistency_is_the_mean_over_kept_voxels_and_classes():
    ps = torch.tensor([[0.9, 0.2, 0.5], [0.1, 0.8, 0.5]]).view(1, 2, 3)
    pt = torch.tensor([[0.6, 0.2, 0.0], [0.4, 0.8, 1.0]]).view(1, 2, 3)
    mask = torch.tensor([1.0, 1.0, 0.0]).view(1, 1, 3)
    # kept voxels 0 and 1: squared errors 0.09 + 0.09 (voxel 0, both classes) + 0 + 0 (voxel 1); / (2 classes x 2)
    assert masked_consistency(ps, pt, mask).item() == pytest.approx(0.18 / 4)
    assert masked_consistency(ps, pt, torch.zeros_like(mask)).item() == 0.0
    # everything kept: plain MSE
    assert masked_consistency(ps, pt, torch.ones_like(mask)).item() == pytest.approx(F.mse_loss(ps, pt).item())


@pytest.fixture
def uamt(make_stepping_trainer):
    return make_stepping_trainer(nnUNetTrainerUAMT_debug)


def _batch(trainer):
    x = torch.randn(2, 1, *trainer.configuration_manager.patch_size)
    target = [torch.zeros(1, 1, *o.shape[2:]) for o in trainer.network(x[:1])]
    return x, target


def test_uamt_settings_are_validated(make_trainer):
    class Bad(nnUNetTrainerUAMT_debug):
        uncertainty_passes = 3

    class BadThreshold(nnUNetTrainerUAMT_debug):
        threshold_start = 1.2

    with pytest.raises(ValueError, match="multiple of uncertainty_passes_per_forward"):
        make_trainer(Bad)
    with pytest.raises(ValueError, match="threshold_start"):
        make_trainer(BadThreshold)


def test_teacher_mean_probability_averages_t_noisy_passes(uamt, monkeypatch):
    x = torch.randn(1, 1, *uamt.configuration_manager.patch_size)
    calls = []
    forward = uamt.teacher.forward
    monkeypatch.setattr(uamt.teacher, "forward", lambda inp: calls.append(inp.shape[0]) or forward(inp))
    p = uamt.teacher_mean_probability(x)
    assert calls == [2, 2, 2, 2]  # T = 8 passes, the batch repeated twice per forward, as UA-MT does
    assert p.shape == (1, uamt.label_manager.num_segmentation_heads, *x.shape[2:])
    torch.testing.assert_close(p.sum(1), torch.ones_like(p[:, 0]))
    # without noise every pass is the same: the mean is one pass's softmax
    uamt.teacher_noise_std = 0.0
    with torch.no_grad():
        torch.testing.assert_close(uamt.teacher_mean_probability(x), torch.softmax(forward(x), 1))


def test_step_masks_the_consistency_by_the_threshold(uamt, monkeypatch):
    x, target = _batch(uamt)
    uamt.teacher_noise_std = 0.0  # deterministic teacher, so that the expected loss can be recomputed
    with torch.no_grad():
        expected_full = F.mse_loss(torch.softmax(uamt.network(x)[0][1:], 1), torch.softmax(uamt.teacher(x[1:]), 1))
    # a threshold above ln C keeps every voxel: the loss is the plain softmax MSE on the unlabelled sample
    monkeypatch.setattr(uamt, "current_threshold", lambda: math.log(uamt.label_manager.num_segmentation_heads) + 1)
    result = uamt.semi_supervised_step(x[:1], target, x[1:])
    assert result["mask_share"] == 1.0
    assert result["loss_cons"] == pytest.approx(expected_full.item(), rel=1e-4)
    assert {"loss", "loss_sup", "loss_cons", "cons_weight", "mask_share", "uncertainty_threshold"} <= set(result)
    # a threshold of 0 keeps none: no consistency at all
    monkeypatch.setattr(uamt, "current_threshold", lambda: 0.0)
    result = uamt.semi_supervised_step(x[:1], target, x[1:])
    assert result["mask_share"] == 0.0 and result["loss_cons"] == 0.0
    assert uamt.ema_step == 2


def test_ramps_follow_the_run(uamt):
    ln_c = math.log(uamt.label_manager.num_segmentation_heads)  # 3 classes in the synthetic data
    assert uamt.current_threshold() == pytest.approx((0.75 + 0.25 * math.exp(-5)) * ln_c)
    assert uamt.current_consistency_weight() == pytest.approx(0.1 * math.exp(-5))
    uamt.ema_step = uamt.num_epochs * uamt.num_iterations_per_epoch // 2  # half-way
    assert uamt.current_threshold() == pytest.approx((0.75 + 0.25 * math.exp(-5 * 0.25)) * ln_c)
    uamt.current_epoch = uamt.num_epochs // 2  # UA-MT ramps the weight over the whole run, not 40 % of it
    assert uamt.current_consistency_weight() == pytest.approx(0.1 * math.exp(-5 * 0.25))


# ---------------------------------------------------------------------------------------- stock workflow
@pytest.mark.slow
def test_uamt_train_kill_resume_predict(planned_synthetic, tmp_path, stock_workflow):
    wf = stock_workflow(planned_synthetic, TRAINER)
    _, final = wf.kill_and_resume(tmp_path / "train_console.txt", "mt_teacher_weights")
    assert final["mt_ema_step"] == 4 * 3
    log = final["logging"]
    assert len(log["mask_share"]) == 4 and all(0.0 <= m <= 1.0 for m in log["mask_share"])
    # the threshold rose over the run and stayed within [0.75, 1] ln C (3 classes)
    thr = log["uncertainty_threshold"]
    assert thr == sorted(thr) and 0.75 * math.log(3) <= thr[0] < thr[-1] <= math.log(3)

    summary = wf.evaluate(wf.predict(tmp_path / "pred"))
    assert len(summary["metric_per_case"]) == 2
    assert summary["mean"]["1"]["Dice"] > 0.1
