"""The tri-planar 2D model (slice_axes, issue 13): fused teacher pseudo-masks, a student that learns along every axis,
fused validation, a short run, and the 2D model kept for 2D+3D prediction."""
import json

import numpy as np
import pytest
import torch

from nnunetv2_mn.mn.losses import combine_labeled_unlabeled
from nnunetv2_mn.mn.slicing import predict_slices
from nnunetv2_mn.trainers import nnUNetTrainerMN_debug, nnUNetTrainerMN_TriPlanar_debug


def _spy(trainer):
    """Record the axis and input of every 2D forward, and the value of every 2D loss (labelled, unlabelled)."""
    seen = {"axes": [], "inputs": [], "l": [], "u": []}
    forward, loss_2d, loss_u_2d = trainer.forward_2d, trainer.loss_2d, trainer.loss_u_2d
    trainer.forward_2d = lambda x, teacher=False, axis=None: (
        seen["axes"].append(axis) or seen["inputs"].append(tuple(x.shape)) or forward(x, teacher, axis))
    trainer.loss_2d = lambda o, t: (lambda v: seen["l"].append(v.item()) or v)(loss_2d(o, t))
    trainer.loss_u_2d = lambda o, t: (lambda v: seen["u"].append(v.item()) or v)(loss_u_2d(o, t))
    return seen


def test_slice_axes_setting(make_trainer):
    assert make_trainer(nnUNetTrainerMN_debug).slice_axes == (0,)  # default: today's single view
    assert make_trainer(nnUNetTrainerMN_TriPlanar_debug).slice_axes == (0, 1, 2)

    class Bad(nnUNetTrainerMN_debug):
        slice_axes = (0, 0)

    with pytest.raises(ValueError, match="slice_axes"):
        make_trainer(Bad)


def test_teacher_pseudo_mask_is_the_mean_of_the_views(make_trainer):
    trainer = make_trainer(nnUNetTrainerMN_TriPlanar_debug)
    trainer.initialize()
    trainer.branch2d.eval()
    x = torch.randn(2, 1, *trainer.configuration_manager.patch_size)
    with torch.no_grad():
        fused = torch.softmax(trainer.forward_2d(x, teacher=True), 1)  # what train_3d_student uses as P
        views = [torch.softmax(predict_slices(trainer.branch2d, x, a), 1) for a in (0, 1, 2)]
    assert fused.shape == views[0].shape == (2, 3, *trainer.configuration_manager.patch_size)
    torch.testing.assert_close(fused, sum(views) / 3)
    # a single view is today's logits, untouched
    single = make_trainer(nnUNetTrainerMN_debug)
    single.initialize()
    single.branch2d.eval()
    with torch.no_grad():
        torch.testing.assert_close(single.forward_2d(x, teacher=True), predict_slices(single.branch2d, x, 0, 64))


def test_3d_student_learns_from_the_fused_pseudo_mask(make_trainer, random_batch):
    trainer = make_trainer(nnUNetTrainerMN_TriPlanar_debug)
    trainer.initialize()
    seen = _spy(trainer)
    out = trainer.train_3d_student(*random_batch(trainer, 1, 1))
    assert seen["axes"] == [None] and np.isfinite(out["loss_u_3d"])  # one teacher call: all views, fused


class _QuarterTriPlanar(nnUNetTrainerMN_TriPlanar_debug):
    student2d_slice_fraction = 0.25


@pytest.mark.parametrize("phase", ["both", "2d"])
def test_2d_student_learns_along_every_axis(make_trainer, phase, random_batch):
    """Stage 1 and 2D-student steps: one forward per axis, on round(fraction * S_axis) slices of that axis; the
    2D loss is the mean over the views of each view's L_c (Eq. 1 / Eq. 5 with Eq. 9)."""
    trainer = make_trainer(_QuarterTriPlanar)
    trainer.initialize()
    data_l, target_l, data_u = random_batch(trainer, 1, 1)
    seen = _spy(trainer)
    before = [p.detach().clone() for p in trainer.branch2d.parameters() if p.requires_grad]
    if phase == "both":
        out = trainer.stage1_step(data_l, target_l)
        per_view = seen["l"]
    else:
        out = trainer.train_2d_student(data_l, target_l, data_u)
        per_view = [combine_labeled_unlabeled(torch.tensor(l), torch.tensor(u), 1, 1).item()
                    for l, u in zip(seen["l"], seen["u"])]
        assert out["loss_u_2d"] == pytest.approx(np.mean(seen["u"]), rel=1e-5)
        assert 0 <= out["agreement"] <= 1 or np.isnan(out["agreement"])
    assert seen["axes"] == [0, 1, 2] and len(per_view) == 3
    b = 1 if phase == "both" else 2
    ps = trainer.configuration_manager.patch_size
    for axis, shape in zip((0, 1, 2), seen["inputs"]):
        assert shape[2 + axis] == max(1, round(0.25 * ps[axis]))  # the slice share applies per view
        others = [s for i, s in enumerate(ps) if i != axis]
        assert shape[0] == b and [s for i, s in enumerate(shape[2:]) if i != axis] == others
    assert out["loss_2d"] == pytest.approx(np.mean(per_view), rel=1e-5)
    assert out["loss_l_2d"] == pytest.approx(np.mean(seen["l"]), rel=1e-5)
    after = [p for p in trainer.branch2d.parameters() if p.requires_grad]
    assert any(not torch.equal(a, p) for a, p in zip(before, after))


def test_validation_uses_the_fused_prediction(make_trainer, random_batch):
    trainer = make_trainer(nnUNetTrainerMN_TriPlanar_debug)
    trainer.initialize()
    trainer.network.eval()
    trainer.branch2d.eval()
    seen = _spy(trainer)
    data, target, _ = random_batch(trainer, 2, 0)  # nnU-Net's targets: one per deep-supervision output
    result = trainer.validation_step({"data": data, "target": target})
    assert seen["axes"] == [None]  # forward_2d over all views
    with torch.no_grad():
        seg = torch.softmax(trainer.forward_2d(data, teacher=True), 1).argmax(1)
    tp = [int(((seg == c) & (target[0][:, 0] == c)).sum()) for c in (1, 2)]
    np.testing.assert_allclose(result["tp_2d"], tp)


def test_short_tri_planar_run_keeps_the_2d_model(make_trainer):
    """A whole (debug) run: stage 1, 3D and 2D student epochs with three views; finite 2D losses and pseudo Dice;
    at the end the 2D model is kept in fold_all/model2d and rebuilds to the same predictions."""
    from nnunetv2_mn.inference.ensemble import MODEL2D_FOLDER, load_model2d

    trainer = make_trainer(nnUNetTrainerMN_TriPlanar_debug)
    trainer.run_training()
    log = trainer.logger.local_logger.my_fantastic_logging
    assert len(log["dice_2d"]) == trainer.num_epochs and all(np.isfinite(log["dice_2d"]))
    assert np.isfinite(log["loss_2d"][0]) and np.isfinite(log["loss_2d"][2])  # stage 1, the 2D-student epoch
    assert np.isfinite(log["loss_u_2d"][2]) and np.isfinite(log["loss_u_3d"][1])
    folder = trainer.output_folder + "/" + MODEL2D_FOLDER
    info = json.load(open(folder + "/model2d.json"))
    assert info["slice_axes"] == [0, 1, 2] and info["full_state_dict"]  # random-init base: all of it is stored
    model, info = load_model2d(folder)
    x = torch.randn(1, 3, 16, 32)
    trainer.branch2d.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), trainer.branch2d(x))
