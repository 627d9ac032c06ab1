"""nnUNetTrainerMeanTeacher: Mean Teacher (Tarvainen & Valpola 2017; review 004 Sec. 3.2, Eq. 10) on
nnU-Net's 3D network, with UA-MT's settings (peers.md): EMA decay min(1 - 1/(t+1), 0.99), teacher input
noise clamp(N(0, 0.1), +-0.2), softmax-MSE consistency on all samples of the batch with weight
0.1 * sigmoid_rampup, half labelled / half unlabelled batches. One backward and one optimizer step per
iteration. Validation, `checkpoint_best` and prediction use the student (`network_weights`); the teacher
is saved as `mt_teacher_weights`.
"""
import copy

import numpy as np
import torch
import torch.nn.functional as F

from nnunetv2_mn.trainers.semisupervised import nnUNetTrainerSemiSupervised, unwrap


def sigmoid_rampup(current: float, rampup_length: float) -> float:
    """exp(-5 (1 - t)^2), t = current / rampup_length clipped to [0, 1] (Laine & Aila 2017)."""
    if rampup_length <= 0:
        return 1.0
    t = float(np.clip(current / rampup_length, 0.0, 1.0))
    return float(np.exp(-5.0 * (1.0 - t) ** 2))


class nnUNetTrainerMeanTeacher(nnUNetTrainerSemiSupervised):
    sampling = "fixed"
    sampling_kwargs = {"ratio": 0.5}
    ema_decay = 0.99
    consistency_weight = 0.1
    #: share of the epochs over which the consistency weight ramps up (UA-MT: sigmoid_rampup(iter // 150, 40) over
    #: 6000 iterations, i.e. the whole run)
    consistency_rampup = 1.0
    teacher_noise_std = 0.1
    teacher_noise_clip = 0.2
    log_panels = {**nnUNetTrainerSemiSupervised.log_panels,
                  "Mean Teacher losses": ["loss_sup", "loss_cons", "cons_weight"]}
    step_log_keys = ("loss_sup", "loss_cons", "cons_weight")

    def initialize(self):
        super().initialize()
        self.teacher = copy.deepcopy(unwrap(self.network)).to(self.device)
        self.teacher.decoder.deep_supervision = False
        self.teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.ema_step = 0

    def current_consistency_weight(self) -> float:
        return self.consistency_weight * sigmoid_rampup(self.current_epoch, self.consistency_rampup * self.num_epochs)

    @torch.no_grad()
    def update_teacher(self):
        alpha = min(1.0 - 1.0 / (self.ema_step + 1), self.ema_decay)
        for t, s in zip(self.teacher.parameters(), unwrap(self.network).parameters()):
            t.mul_(alpha).add_(s.detach(), alpha=1.0 - alpha)
        for t, s in zip(self.teacher.buffers(), unwrap(self.network).buffers()):
            t.copy_(s)
        self.ema_step += 1

    def teacher_noise(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(torch.randn_like(x) * self.teacher_noise_std, -self.teacher_noise_clip,
                           self.teacher_noise_clip)

    def student_forward(self, x: torch.Tensor, target_l, b_l: int):
        """The student's outputs (deep-supervision list) on the batch `x` (b_l labelled samples first, then the
        unlabelled ones) and its supervised loss on the labelled ones (0 without). Call inside autocast."""
        output = self.network(x)
        if not isinstance(output, (list, tuple)):
            output = [output]
        loss_sup = self.loss([o[:b_l] for o in output], target_l) if b_l > 0 else output[0].sum() * 0
        return output, loss_sup

    def semi_supervised_step(self, data_l, target_l, data_u) -> dict:
        b_l = data_l.shape[0]
        x = data_l if data_u is None else torch.cat((data_l, data_u))
        w = self.current_consistency_weight()
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            output, loss_sup = self.student_forward(x, target_l, b_l)
            with torch.no_grad():
                teacher_prob = torch.softmax(self.teacher(x + self.teacher_noise(x)).float(), 1)
            loss_cons = F.mse_loss(torch.softmax(output[0].float(), 1), teacher_prob)
            loss = loss_sup + w * loss_cons
        self.backward_and_step(loss, self.optimizer, self.network, self.grad_scaler)
        self.update_teacher()
        return {"loss": loss.detach(), "loss_sup": loss_sup.detach(), "loss_cons": loss_cons.detach(), "cons_weight": w}

    def extra_checkpoint_state(self) -> dict:
        return {**super().extra_checkpoint_state(), "mt_teacher_weights": self.teacher.state_dict(),
                "mt_ema_step": self.ema_step}

    def load_extra_checkpoint_state(self, checkpoint: dict) -> None:
        super().load_extra_checkpoint_state(checkpoint)
        self.teacher.load_state_dict(checkpoint["mt_teacher_weights"])
        self.ema_step = checkpoint["mt_ema_step"]
