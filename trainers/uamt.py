"""nnUNetTrainerUAMT: uncertainty-aware Mean Teacher (Yu et al., MICCAI 2019; review 004 Sec. 3.2) on nnU-Net's
3D network, as the public code does it (`yulequan/UA-MT`, `code/train_LA_meanteacher_certainty_unlabel.py`):

- the teacher sees each unlabelled patch T = 8 times with noise clamp(N(0, 0.1), +-0.2); the predictive entropy
  of the mean softmax, U = -sum_c p_c ln p_c (paper Eq. 4-5), is the voxel's uncertainty;
- the consistency (softmax MSE between student and one further noisy teacher pass) counts only the unlabelled
  voxels with U < H, H = (0.75 + 0.25 sigmoid_rampup(t)) ln C, t the share of the run done (paper Eq. 3);
  it is the masked mean over voxels and classes, sum(mask (p_s - p_t)^2) / (C sum(mask));
- its weight is 0.1 sigmoid_rampup over the whole run (the code's 40 ramp epochs x 150 of 6000 iterations).

Everything else (EMA teacher, noise, supervised loss, checkpoint keys) is nnUNetTrainerMeanTeacher's.
"""
import math

import torch

from nnunetv2_mn.trainers.mean_teacher import nnUNetTrainerMeanTeacher, sigmoid_rampup


def predictive_entropy(prob: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """-sum_c p_c ln(p_c + eps) over the channel axis 1, kept as a channel (UA-MT's eps)."""
    return -torch.sum(prob * torch.log(prob + eps), dim=1, keepdim=True)


def uncertainty_threshold(progress: float, num_classes: int, start: float = 0.75, end: float = 1.0) -> float:
    """(start + (end - start) sigmoid_rampup(progress)) ln C, progress in [0, 1] (UA-MT: 0.75 -> 1.0 of ln 2)."""
    return (start + (end - start) * sigmoid_rampup(progress, 1.0)) * math.log(num_classes)


def masked_consistency(prob_student: torch.Tensor, prob_teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum(mask (p_s - p_t)^2) / (C sum(mask) + 1e-16): the squared error averaged over kept voxels and classes;
    `mask` has one channel. 0 (with a gradient path) when no voxel is kept."""
    num_classes = prob_student.shape[1]
    return torch.sum(mask * (prob_student - prob_teacher) ** 2) / (num_classes * torch.sum(mask) + 1e-16)


class nnUNetTrainerUAMT(nnUNetTrainerMeanTeacher):
    #: teacher passes whose mean softmax gives the uncertainty (UA-MT: T = 8)
    uncertainty_passes = 8
    #: copies of the unlabelled batch per teacher forward (UA-MT repeats it twice: 4 forwards of 2 copies)
    uncertainty_passes_per_forward = 2
    #: the entropy threshold ramps from `threshold_start` to `threshold_end` times ln C over the run
    threshold_start = 0.75
    threshold_end = 1.0
    log_panels = {**nnUNetTrainerMeanTeacher.log_panels,
                  "UA-MT uncertainty mask (share of unlabelled voxels kept, entropy threshold)":
                      ["mask_share", "uncertainty_threshold"]}
    step_log_keys = nnUNetTrainerMeanTeacher.step_log_keys + ("mask_share", "uncertainty_threshold")

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.uncertainty_passes < 1 or self.uncertainty_passes_per_forward < 1 \
                or self.uncertainty_passes % self.uncertainty_passes_per_forward:
            raise ValueError(f"{self.__class__.__name__}: uncertainty_passes ({self.uncertainty_passes}) must be a "
                             f"positive multiple of uncertainty_passes_per_forward "
                             f"({self.uncertainty_passes_per_forward})")
        if not 0 < self.threshold_start <= self.threshold_end <= 1:
            raise ValueError(f"{self.__class__.__name__}: need 0 < threshold_start ({self.threshold_start}) <= "
                             f"threshold_end ({self.threshold_end}) <= 1 (shares of ln C, the largest entropy)")
        if self.label_manager.has_regions:
            raise ValueError(f"{self.__class__.__name__} needs softmax classes; region-based training (sigmoid "
                             f"outputs) has no predictive entropy over classes")

    def training_progress(self) -> float:
        """Share of the run's optimizer steps done (the EMA step counter survives --c)."""
        return self.ema_step / float(self.num_epochs * self.num_iterations_per_epoch)

    def current_threshold(self) -> float:
        return uncertainty_threshold(self.training_progress(), self.label_manager.num_segmentation_heads,
                                     self.threshold_start, self.threshold_end)

    @torch.no_grad()
    def teacher_mean_probability(self, x: torch.Tensor) -> torch.Tensor:
        """Mean softmax of `uncertainty_passes` noisy teacher passes over the batch `x`."""
        r = self.uncertainty_passes_per_forward
        total = 0.0
        for _ in range(self.uncertainty_passes // r):
            xr = x.repeat(r, *([1] * (x.ndim - 1)))
            prob = torch.softmax(self.teacher(xr + self.teacher_noise(xr)).float(), 1)
            total = total + prob.view(r, x.shape[0], *prob.shape[1:]).sum(0)
        return total / self.uncertainty_passes

    def semi_supervised_step(self, data_l, target_l, data_u) -> dict:
        b_l = data_l.shape[0]
        x = data_l if data_u is None else torch.cat((data_l, data_u))
        w = self.current_consistency_weight()
        threshold = self.current_threshold()
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            output, loss_sup = self.student_forward(x, target_l, b_l)
            if data_u is None:
                loss_cons, mask_share = output[0].sum() * 0, float("nan")
            else:
                with torch.no_grad():
                    teacher_prob = torch.softmax(self.teacher(data_u + self.teacher_noise(data_u)).float(), 1)
                    mask = (predictive_entropy(self.teacher_mean_probability(data_u)) < threshold).float()
                loss_cons = masked_consistency(torch.softmax(output[0][b_l:].float(), 1), teacher_prob, mask)
                mask_share = mask.mean()
            loss = loss_sup + w * loss_cons
        self.backward_and_step(loss, self.optimizer, self.network, self.grad_scaler)
        self.update_teacher()
        return {"loss": loss.detach(), "loss_sup": loss_sup.detach(), "loss_cons": loss_cons.detach(), "cons_weight": w,
                "mask_share": mask_share, "uncertainty_threshold": threshold}
