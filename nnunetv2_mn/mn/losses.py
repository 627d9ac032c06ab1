"""Losses of M&N (paper Sec. 2.1-2.2).

L_l (Eq. 1) is nnU-Net's own Dice + CE (`DC_and_CE_loss`, deep supervision for the 3D model).
L_u (Eq. 4) = w_kl * KL(P || softmax(M_hat)) + w_dice * Dice(softmax(M_hat), P) against soft pseudo-masks P.
L_c (Eq. 5) = b_l / B * L_l + b_u / B * L_u.
"""
from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss


class SoftDiceKLLoss(nn.Module):
    """Eq. (4): loss of logits against soft targets P (probabilities, detached, same shape as the logits).

    KL is summed over classes and averaged over voxels and samples; the Dice term is nnU-Net's soft Dice
    (negative Dice, foreground classes, as in nnU-Net's DC_and_CE_loss) with P used directly as target.
    """

    def __init__(self, weight_kl: float = 1.0, weight_dice: float = 1.0, batch_dice: bool = True,
                 do_bg: bool = False, smooth: float = 1e-5):
        super().__init__()
        self.weight_kl, self.weight_dice = weight_kl, weight_dice
        self.dice = MemoryEfficientSoftDiceLoss(apply_nonlin=lambda z: torch.softmax(z, 1), batch_dice=batch_dice,
                                                do_bg=do_bg, smooth=smooth, ddp=False)

    def forward(self, logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
        target_probs = target_probs.detach().float()
        logits = logits.float()
        kl = F.kl_div(torch.log_softmax(logits, 1), target_probs, reduction="none").sum(1).mean()
        return self.weight_kl * kl + self.weight_dice * self.dice(logits, target_probs)


def downsample_soft_targets(probs: torch.Tensor, shapes: Sequence[Sequence[int]]) -> List[torch.Tensor]:
    """Soft pseudo-masks for deep supervision: area-average P to each output's spatial shape, so every
    scale's target is still a probability map (sums to 1 over classes)."""
    targets = []
    for shape in shapes:
        shape = tuple(shape)
        targets.append(probs if tuple(probs.shape[2:]) == shape else F.adaptive_avg_pool3d(probs, shape))
    return targets


def combine_labeled_unlabeled(loss_l: torch.Tensor, loss_u: torch.Tensor, b_l: int, b_u: int) -> torch.Tensor:
    """Eq. (5): L_c = b_l / (b_l + b_u) * L_l + b_u / (b_l + b_u) * L_u (a term with no samples is dropped)."""
    total = b_l + b_u
    loss = 0.0
    if b_l > 0:
        loss = loss + b_l / total * loss_l
    if b_u > 0:
        loss = loss + b_u / total * loss_u
    return loss
