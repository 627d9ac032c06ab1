"""Tri-planar view weighting by validation Dice (issue 13, `view_weighting='val_dice'`): the setting is checked, the
views' Dice is measured in nnU-Net's validation, the pseudo-mask follows it, and --c keeps it."""
import numpy as np
import pytest
import torch

from nnunetv2_mn.mn.slicing import predict_slices
from nnunetv2_mn.trainers import nnUNetTrainerMN_TriPlanar_debug, nnUNetTrainerMN_TriPlanarDiceWeighted


class _DiceWeighted(nnUNetTrainerMN_TriPlanar_debug):
    view_weighting = nnUNetTrainerMN_TriPlanarDiceWeighted.view_weighting


def _views(trainer, x):
    with torch.no_grad():
        return [torch.softmax(predict_slices(trainer.branch2d, x, a), 1) for a in trainer.slice_axes]


def _counts(dices, classes=2):
    """(views, tp/fp/fn, classes) counts with the given mean foreground Dice per view (fp = fn)."""
    out = []
    for d in dices:
        tp = 100.0
        miss = tp * (1 - d) / d  # 2 tp / (2 tp + 2 miss) = d
        out.append(np.array([[tp] * classes, [miss] * classes, [miss] * classes]))
    return np.stack(out)


def test_view_weighting_setting_is_checked(make_trainer):
    assert nnUNetTrainerMN_TriPlanarDiceWeighted.view_weighting == "val_dice"
    assert nnUNetTrainerMN_TriPlanarDiceWeighted.slice_axes == (0, 1, 2)

    class Bad(nnUNetTrainerMN_TriPlanar_debug):
        view_weighting = "median"

    with pytest.raises(ValueError, match=r"view_weighting must be one of \('mean', 'val_dice'\).*'median'"):
        make_trainer(Bad)


def test_pseudo_mask_weights_follow_each_views_validation_dice(make_trainer):
    trainer = make_trainer(_DiceWeighted)
    trainer.initialize()
    trainer.branch2d.eval()
    x = torch.randn(2, 1, *trainer.configuration_manager.patch_size)
    views = _views(trainer, x)
    # before the first measurement: equal weights, the mean of the views
    assert trainer.view_fusion_weights() is None and all(np.isnan(trainer.view_dice))
    with torch.no_grad():
        fused = torch.softmax(trainer.forward_2d(x, teacher=True), 1)
    torch.testing.assert_close(fused, sum(views) / 3)
    # axis 1 measured best, axis 0 worst: axis 1 weighs most, and the pseudo-mask is still a distribution
    trainer.update_view_dice(_counts([0.3, 0.9, 0.6]))
    np.testing.assert_allclose(trainer.view_dice, [0.3, 0.9, 0.6])
    w = trainer.view_fusion_weights()
    assert w[1] > w[2] > w[0] and sum(w) == pytest.approx(1.0)
    with torch.no_grad():
        fused = torch.softmax(trainer.forward_2d(x, teacher=True), 1)
    torch.testing.assert_close(fused, sum(wi * v for wi, v in zip(w, views)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fused.sum(1), torch.ones_like(fused[:, 0]), rtol=1e-4, atol=1e-5)
    # the next epoch moves the smoothed Dice as nnU-Net's EMA (0.9 old + 0.1 new)
    trainer.update_view_dice(_counts([0.9, 0.9, 0.9]))
    np.testing.assert_allclose(trainer.view_dice, [0.36, 0.9, 0.63])
    # with 'mean' the same measurements leave the weights equal
    plain = make_trainer(nnUNetTrainerMN_TriPlanar_debug)
    plain.initialize()
    plain.update_view_dice(_counts([0.3, 0.9, 0.6]))
    assert plain.view_fusion_weights() is None


def test_validation_measures_each_view(make_trainer, random_batch):
    trainer = make_trainer(_DiceWeighted)
    trainer.initialize()
    trainer.network.eval()
    trainer.branch2d.eval()
    data, target, _ = random_batch(trainer, 2, 0)
    with torch.no_grad():
        results = [trainer.validation_step({"data": data, "target": target}) for _ in range(2)]
        views = _views(trainer, data)
    counts = results[0]["tp_fp_fn_2d_views"]
    assert counts.shape == (3, 3, 2)
    for view, c in zip(views, counts):  # tp of each view alone
        seg = view.argmax(1)
        np.testing.assert_allclose(c[0], [int(((seg == k) & (target[0][:, 0] == k)).sum()) for k in (1, 2)])
    trainer.on_validation_epoch_end(results)
    expected = [np.nanmean([2 * a / (2 * a + b + d) if 2 * a + b + d else np.nan for a, b, d in zip(*c)])
                for c in counts]
    np.testing.assert_allclose(trainer.view_dice, expected)  # two identical batches: the same Dice
    assert np.all(np.isfinite(trainer.view_dice))


def test_resume_keeps_the_view_dice(make_trainer, tmp_path):
    trainer = make_trainer(_DiceWeighted)
    trainer.initialize()
    trainer.update_view_dice(_counts([0.3, 0.9, 0.6]))
    path = str(tmp_path / "ckpt.pth")
    trainer.save_checkpoint(path)
    resumed = make_trainer(_DiceWeighted)
    assert all(np.isnan(resumed.view_dice))
    resumed.load_checkpoint(path)
    np.testing.assert_allclose(resumed.view_dice, [0.3, 0.9, 0.6])
    assert resumed.view_fusion_weights() == pytest.approx(trainer.view_fusion_weights())
