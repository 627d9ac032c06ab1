"""Issue 13 (6): nnUNetTrainerDTC, dual-task consistency (Luo et al. 2021, public DTC code) on nnU-Net's network.

Unit tests of the signed distance, the consistency loss and the level-set head against hand-computed values; one
training step on the synthetic plans; the checkpoint's `network_weights` load into nnU-Net's stock network; the stock
workflow: nnUNetv2_train (killed after its first checkpoint), --c, nnUNetv2_predict.
"""
import math

import numpy as np
import pytest
import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2_mn.trainers.dtc import (SDFHead, dual_task_consistency, nnUNetTrainerDTC, normalized_sdf,
                                      sdf_targets)
from nnunetv2_mn.trainers import nnUNetTrainerDTC_debug

TRAINER = "nnUNetTrainerDTC_debug"


def test_normalized_sdf_by_hand():
    mask = np.zeros((1, 1, 7), bool)
    mask[0, 0, 2:5] = True
    # outside distance 2,1,.,.,.,1,2 -> /2; inside 1,2,1 -> /2, negative; 0 on the inner boundary (voxels 2 and 4)
    np.testing.assert_allclose(normalized_sdf(mask)[0, 0], [1, 0.5, 0, -1, 0, 0.5, 1])
    assert not normalized_sdf(np.zeros((3, 3, 3), bool)).any()
    np.testing.assert_array_equal(normalized_sdf(np.ones((3, 3, 3), bool)), -1)


def test_sdf_targets_one_channel_per_foreground_label():
    seg = np.zeros((2, 1, 1, 1, 7))
    seg[0, 0, 0, 0, 2:5] = 1
    seg[1, 0, 0, 0, 0] = 2
    out = sdf_targets(seg, [1, 2])
    assert out.shape == (2, 2, 1, 1, 7) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0, 0, 0], [1, 0.5, 0, -1, 0, 0.5, 1])
    assert not out[0, 1].any() and not out[1, 0].any()  # absent labels: all 0, as DTC
    assert out[1, 1, 0, 0, 0] == 0 and out[1, 1, 0, 0, -1] == 1  # a one-voxel object is its own boundary


def test_dual_task_consistency_by_hand():
    sdf = torch.tensor([-0.01, 0.01, 0.0, 0.001])
    p = torch.tensor([1.0, 0.0, 0.5, 1.0])
    # sigmoid(-1500 * sdf): ~1, ~0, 0.5, sigmoid(-1.5) = 0.18243
    expected = (0 + 0 + 0 + (1 / (1 + math.exp(1.5)) - 1) ** 2) / 4
    assert dual_task_consistency(sdf, p, 1500).item() == pytest.approx(expected, rel=1e-4)
    assert dual_task_consistency(sdf, p, 1).item() > 0.1  # k matters


def test_sdf_head_is_a_1x1_conv_and_tanh():
    head = SDFHead(torch.nn.Conv3d(8, 3, 1), num_foreground=2)
    assert isinstance(head.conv, torch.nn.Conv3d) and head.conv.kernel_size == (1, 1, 1)
    assert head.conv.in_channels == 8 and head.conv.out_channels == 2
    y = head(torch.randn(1, 8, 2, 2, 2) * 100)
    assert y.shape == (1, 2, 2, 2, 2) and y.abs().max() <= 1


def test_network_builder_is_nnunets():
    assert nnUNetTrainerDTC.build_network_architecture is nnUNetTrainer.build_network_architecture


@pytest.fixture
def dtc(make_stepping_trainer):
    return make_stepping_trainer(nnUNetTrainerDTC_debug)


def test_step_trains_network_and_level_set_head(dtc):
    assert len(dtc.optimizer.param_groups) == 2
    assert [p for p in dtc.optimizer.param_groups[1]["params"]] == list(dtc.sdf_head.parameters())
    x = torch.randn(2, 1, *dtc.configuration_manager.patch_size)
    outs = dtc.network(x[:1])
    feats = dtc.decoder_features.pop()
    assert feats.shape[2:] == outs[0].shape[2:]  # the last decoder stage, full resolution
    target = [torch.zeros(1, 1, *o.shape[2:]) for o in outs]
    target[0][0, 0, 4:10, 8:20, 8:20] = 1
    head0 = [p.detach().clone() for p in dtc.sdf_head.parameters()]
    net0 = [p.detach().clone() for p in dtc.network.parameters()]
    result = dtc.semi_supervised_step(x[:1], target, x[1:])
    assert {"loss", "loss_seg", "loss_sdf", "loss_dtc", "dtc_weight"} <= set(result)
    assert result["loss_sdf"] > 0 and result["loss_dtc"] > 0
    assert result["dtc_weight"] == pytest.approx(math.exp(-5))  # epoch 0 of the ramp over the whole run
    assert any(not torch.equal(a, b) for a, b in zip(head0, dtc.sdf_head.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(net0, dtc.network.parameters()))
    # the poly schedule writes the same learning rate into the head's group
    dtc.lr_scheduler.step(3)
    assert dtc.optimizer.param_groups[0]["lr"] == dtc.optimizer.param_groups[1]["lr"] < dtc.initial_lr


def test_checkpoint_network_weights_are_the_plain_nnunet_network(dtc, tmp_path):
    path = str(tmp_path / "ckpt.pth")
    dtc.save_checkpoint(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    assert set(ckpt["dtc_sdf_head_weights"]) == {"conv.weight", "conv.bias"}
    stock = nnUNetTrainer.build_network_architecture(
        dtc.plans_manager, dtc.configuration_manager, dtc.num_input_channels,
        dtc.label_manager.num_segmentation_heads, enable_deep_supervision=False)
    stock.load_state_dict(ckpt["network_weights"])  # strict, as nnUNetPredictor does
    # --c restores the head
    with torch.no_grad():
        for p in dtc.sdf_head.parameters():
            p.zero_()
    dtc.load_checkpoint(path)
    torch.testing.assert_close(dtc.sdf_head.state_dict()["conv.weight"], ckpt["dtc_sdf_head_weights"]["conv.weight"])
    assert dtc.sdf_head.conv.weight.abs().sum() > 0


# ---------------------------------------------------------------------------------------- stock workflow
@pytest.mark.slow
def test_dtc_train_kill_resume_predict(planned_synthetic, tmp_path, stock_workflow):
    wf = stock_workflow(planned_synthetic, TRAINER)
    _, final = wf.kill_and_resume(tmp_path / "train_console.txt", "dtc_sdf_head_weights")
    log = final["logging"]
    assert len(log["loss_sdf"]) == 4 and all(np.isfinite(log["loss_sdf"])) and all(np.isfinite(log["loss_dtc"]))
    w = log["dtc_weight"]
    assert w == sorted(w) and w[0] == pytest.approx(math.exp(-5))
    assert (wf.output_folder / "progress.png").is_file()

    summary = wf.evaluate(wf.predict(tmp_path / "pred"))
    assert len(summary["metric_per_case"]) == 2
    assert summary["mean"]["1"]["Dice"] > 0.1
