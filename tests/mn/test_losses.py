"""L_u (Eq. 4), deep-supervision targets from soft masks, and L_c (Eq. 5) on hand-computed tensors."""
import math

import pytest
import torch

from nnunetv2_mn.mn.agreement import hard_dice_agreement
from nnunetv2_mn.mn.losses import SoftDiceKLLoss, combine_labeled_unlabeled, downsample_soft_targets


def test_kl_term_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)]]).view(1, 2, 1, 1, 1)  # softmax = (0.25, 0.75)
    p = torch.tensor([0.5, 0.5]).view(1, 2, 1, 1, 1)
    loss = SoftDiceKLLoss(weight_kl=1.0, weight_dice=0.0)(logits, p)
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert abs(loss.item() - expected) < 1e-6


def test_dice_term_by_hand_with_soft_targets():
    # two voxels, foreground probabilities q = (0.25, 0.75), targets p = (0.5, 1.0); batch soft Dice (fg only)
    logits = torch.tensor([[0.0, 0.0], [math.log(1 / 3), math.log(3.0)]]).reshape(1, 2, 2, 1, 1)  # (class, voxel)
    q = torch.softmax(logits, 1)[0, 1].flatten()
    torch.testing.assert_close(q, torch.tensor([0.25, 0.75]))
    p = torch.stack([1 - torch.tensor([0.5, 1.0]), torch.tensor([0.5, 1.0])]).reshape(1, 2, 2, 1, 1)
    loss = SoftDiceKLLoss(weight_kl=0.0, weight_dice=1.0, smooth=0.0)(logits, p)
    dice = 2 * (0.25 * 0.5 + 0.75 * 1.0) / (1.0 + 1.5)
    assert abs(loss.item() - (-dice)) < 1e-6  # nnU-Net's convention: the Dice loss is -Dice


def test_loss_is_minimal_at_the_target_and_has_gradients():
    torch.manual_seed(0)
    p = torch.softmax(torch.randn(2, 3, 4, 4, 4) * 3, 1)
    fn = SoftDiceKLLoss()
    at_target = fn(torch.log(p), p)
    elsewhere = fn(torch.randn(2, 3, 4, 4, 4), p)
    assert at_target < elsewhere
    logits = torch.randn(2, 3, 4, 4, 4, requires_grad=True)
    fn(logits, p).backward()
    assert logits.grad.abs().sum() > 0


def test_deep_supervision_targets_are_averaged_probabilities():
    p = torch.softmax(torch.randn(1, 3, 8, 8, 8), 1)
    targets = downsample_soft_targets(p, [(8, 8, 8), (4, 4, 4), (2, 2, 2)])
    assert targets[0] is p
    assert [tuple(t.shape[2:]) for t in targets] == [(8, 8, 8), (4, 4, 4), (2, 2, 2)]
    for t in targets:
        torch.testing.assert_close(t.sum(1), torch.ones_like(t[:, 0]))
    torch.testing.assert_close(targets[1][0, :, 0, 0, 0], p[0, :, :2, :2, :2].mean((1, 2, 3)))


def test_combined_loss_weights_equation_5():
    l_l, l_u = torch.tensor(2.0), torch.tensor(10.0)
    assert combine_labeled_unlabeled(l_l, l_u, 3, 2).item() == pytest.approx(3 / 5 * 2.0 + 2 / 5 * 10.0)
    assert combine_labeled_unlabeled(l_l, None, 5, 0).item() == 2.0
    assert combine_labeled_unlabeled(None, l_u, 0, 5).item() == 10.0


def test_agreement():
    """A 0-d tensor on the inputs' device (read by the host with the step's other values), Dice by hand."""
    t = torch.zeros(1, 3, 4, 4, 4)
    t[:, 0] = 1
    t[0, 1, :2] = 2  # class 1 in the first half; class 2 absent from both: skipped, not counted as 0 or 1
    s = t.clone()
    agreement = hard_dice_agreement(s, t)
    assert isinstance(agreement, torch.Tensor) and agreement.ndim == 0 and agreement.item() == 1.0
    s2 = torch.zeros_like(t)
    s2[:, 0] = 1
    s2[0, 1, :1] = 2  # student finds half of class 1
    assert hard_dice_agreement(s2, t).item() == pytest.approx(2 * 16 / (16 + 32), abs=1e-6)
    s3 = s2.clone()
    s3[0, 2, 3:] = 3  # the student predicts class 2 where the teacher has none: that class's Dice is 0
    assert hard_dice_agreement(s3, t).item() == pytest.approx((2 * 16 / (16 + 32) + 0.0) / 2, abs=1e-6)
    bg = torch.zeros_like(t)
    bg[:, 0] = 1
    assert math.isnan(hard_dice_agreement(bg, bg).item())
