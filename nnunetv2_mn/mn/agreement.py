"""Agreement between teacher and student on unlabelled patches (logged per epoch)."""
import numpy as np
import torch


@torch.no_grad()
def hard_dice_agreement(student_logits: torch.Tensor, teacher_probs: torch.Tensor) -> float:
    """Mean foreground Dice between argmax(student) and argmax(teacher); classes absent from both are skipped
    (NaN when every foreground class is absent)."""
    k = student_logits.shape[1]
    s, t = student_logits.argmax(1), teacher_probs.argmax(1)
    dices = []
    for c in range(1, k):
        a, b = s == c, t == c
        denom = a.sum().item() + b.sum().item()
        if denom > 0:
            dices.append(2.0 * (a & b).sum().item() / denom)
    return float(np.mean(dices)) if dices else float("nan")
