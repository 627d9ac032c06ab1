"""Agreement between teacher and student on unlabelled patches (logged per epoch)."""
import torch


@torch.no_grad()
def hard_dice_agreement(student_logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """Mean foreground Dice between argmax(student) and argmax(teacher), a 0-d tensor on their device (read once
    per step with the step's other values, `nnunetv2_mn.training.step_results.to_host`); classes absent from both
    are skipped (NaN when every foreground class is absent)."""
    s, t = student_logits.argmax(1), teacher_probs.argmax(1)
    dices = []
    for c in range(1, student_logits.shape[1]):
        a, b = s == c, t == c
        denom = (a.sum() + b.sum()).float()
        dices.append(torch.where(denom > 0, 2.0 * (a & b).sum() / denom.clamp_min(1.0),
                                 torch.full_like(denom, float("nan"))))
    if not dices:
        return torch.tensor(float("nan"), device=student_logits.device)
    return torch.nanmean(torch.stack(dices))
