"""nnUNetTrainerDTC: dual-task consistency (Luo et al., AAAI 2021; the method paper 003 builds on) on nnU-Net's
network, as the public code does it (`HiLab-git/DTC`, `code/train_la_dtc.py`, `code/utils/util.py`):

- a level-set head: a 1x1(x1) convolution + tanh on the features of the last decoder stage (next to nnU-Net's
  segmentation layer), one channel per foreground class, regressing the normalised signed distance of the
  label (negative inside, 0 on the inner boundary, positive outside, each side scaled to [0, 1]; `compute_sdf`);
- supervised loss on the labelled samples: nnU-Net's Dice + CE (deep supervision) + `sdf_loss_weight` (beta = 0.3)
  x MSE(level-set output, SDF of the label) (paper Eq. 2; the code adds the MSE to the Dice term);
- dual-task consistency on every sample of the batch: mean((sigmoid(-k SDF_pred) - p_c)^2) over the foreground
  classes c, k = 1500 (paper Eq. 1 and 3), with weight `consistency_weight` (1.0) x exp(-5 (1 - t)^2), ramped over
  the whole run (the code's sigmoid_rampup(iter // 150, 40) of 6000 iterations).

The level-set head is a separate module, saved as `dtc_sdf_head_weights`: `network_weights` is exactly nnU-Net's
network, so `nnUNetv2_predict -tr nnUNetTrainerDTC` uses the segmentation head through the stock predictor, and
validation and `checkpoint_best` see the segmentation only.
"""
import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt
from skimage.segmentation import find_boundaries
from torch import nn

from nnunetv2_mn.trainers.mean_teacher import sigmoid_rampup
from nnunetv2_mn.trainers.semisupervised import nnUNetTrainerSemiSupervised, unwrap


def normalized_sdf(mask: np.ndarray) -> np.ndarray:
    """DTC's normalised signed distance of a binary mask (`compute_sdf`): (d_out - min) / (max - min) -
    (d_in - min) / (max - min), d_in / d_out the Euclidean distance transforms of the inside / outside, 0 on the
    inner boundary. All 0 for an empty mask; all -1 for a mask that fills the patch (no boundary in it: DTC's
    code divides 0 by 0 there)."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return np.zeros(mask.shape, dtype=np.float32)
    if mask.all():
        return -np.ones(mask.shape, dtype=np.float32)
    d_out, d_in = distance_transform_edt(~mask), distance_transform_edt(mask)
    sdf = (d_out - d_out.min()) / (d_out.max() - d_out.min()) - (d_in - d_in.min()) / (d_in.max() - d_in.min())
    sdf[find_boundaries(mask, mode="inner")] = 0
    return sdf.astype(np.float32)


def sdf_targets(seg: np.ndarray, labels) -> np.ndarray:
    """(B, 1, *spatial) label map -> (B, len(labels), *spatial) normalised SDF of each foreground label."""
    out = np.zeros((seg.shape[0], len(labels), *seg.shape[2:]), dtype=np.float32)
    for b in range(seg.shape[0]):
        for i, label in enumerate(labels):
            out[b, i] = normalized_sdf(seg[b, 0] == label)
    return out


def dual_task_consistency(sdf_pred: torch.Tensor, prob_foreground: torch.Tensor, k: float = 1500.0) -> torch.Tensor:
    """mean((sigmoid(-k sdf_pred) - p)^2): the level set turned into a soft mask against the segmentation."""
    return torch.mean((torch.sigmoid(-k * sdf_pred) - prob_foreground) ** 2)


class LastDecoderFeatures:
    """Keeps the output of the last decoder stage of a dynamic_network_architectures U-Net (PlainConvUNet,
    ResidualEncoderUNet: `decoder.stages`, `decoder.seg_layers`) at each forward pass."""

    def __init__(self, network: nn.Module):
        decoder = getattr(network, "decoder", None)
        if decoder is None or not hasattr(decoder, "stages") or not hasattr(decoder, "seg_layers"):
            raise TypeError(f"DTC needs a dynamic_network_architectures U-Net with decoder.stages and "
                            f"decoder.seg_layers; got {type(network).__name__}")
        self.seg_layer = decoder.seg_layers[-1]
        self.features = None
        self.handle = decoder.stages[-1].register_forward_hook(self._keep)

    def _keep(self, module, inputs, output):
        self.features = output

    def pop(self) -> torch.Tensor:
        if self.features is None:
            raise RuntimeError("no decoder features kept: run the network forward first")
        features, self.features = self.features, None
        return features


class SDFHead(nn.Module):
    """1x1(x1) convolution + tanh: one level-set channel per foreground class (DTC's `out_conv2` + tanh)."""

    def __init__(self, seg_layer: nn.Module, num_foreground: int):
        super().__init__()
        self.conv = type(seg_layer)(seg_layer.in_channels, num_foreground, kernel_size=1, bias=True)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(features))


class nnUNetTrainerDTC(nnUNetTrainerSemiSupervised):
    #: DTC's batches: 2 labelled + 2 unlabelled
    sampling = "fixed"
    sampling_kwargs = {"ratio": 0.5}
    #: beta, weight of the SDF regression in the supervised loss (DTC: 0.3)
    sdf_loss_weight = 0.3
    #: k of the soft mask sigmoid(-k SDF) (DTC: 1500)
    sdf_k = 1500.0
    #: lambda of the dual-task consistency (DTC: `--consistency` 1.0)
    consistency_weight = 1.0
    #: share of the epochs over which the weight ramps up as exp(-5 (1 - t)^2) (DTC: 40 x 150 of 6000 iterations)
    consistency_rampup = 1.0
    log_panels = {**nnUNetTrainerSemiSupervised.log_panels,
                  "DTC losses": ["loss_seg", "loss_sdf", "loss_dtc", "dtc_weight"]}
    step_log_keys = ("loss_seg", "loss_sdf", "loss_dtc", "dtc_weight")

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.label_manager.has_regions or self.label_manager.has_ignore_label:
            raise ValueError(f"{self.__class__.__name__} needs plain softmax classes: the signed distance is "
                             f"computed per label, and region-based training or an ignore label has no such labels")
        if self.sdf_loss_weight < 0 or self.consistency_weight < 0 or self.sdf_k <= 0:
            raise ValueError(f"{self.__class__.__name__}: need sdf_loss_weight >= 0, consistency_weight >= 0 and "
                             f"sdf_k > 0 (got {self.sdf_loss_weight}, {self.consistency_weight}, {self.sdf_k})")
        self.sdf_head = None
        self.decoder_features = None

    def configure_optimizers(self):
        """nnU-Net's SGD + poly schedule, with the level-set head as a second parameter group (nnU-Net's
        initialize() calls this right after building the network, so the head is built here)."""
        if self.is_ddp:
            raise NotImplementedError(f"{self.__class__.__name__} does not support multi-GPU (DDP) training: its "
                                      f"level-set head is a separate module that DDP would not synchronise")
        network = unwrap(self.network)
        self.decoder_features = LastDecoderFeatures(network)
        self.sdf_head = SDFHead(self.decoder_features.seg_layer, len(self.label_manager.foreground_labels)).to(
            self.device)
        optimizer, lr_scheduler = super().configure_optimizers()
        optimizer.add_param_group({"params": list(self.sdf_head.parameters()), "initial_lr": self.initial_lr})
        return optimizer, lr_scheduler

    def current_consistency_weight(self) -> float:
        return self.consistency_weight * sigmoid_rampup(self.current_epoch, self.consistency_rampup * self.num_epochs)

    def semi_supervised_step(self, data_l, target_l, data_u) -> dict:
        b_l = data_l.shape[0]
        x = data_l if data_u is None else torch.cat((data_l, data_u))
        w = self.current_consistency_weight()
        seg_full = target_l[0] if isinstance(target_l, (list, tuple)) else target_l
        fg = list(self.label_manager.foreground_labels)
        sdf_gt = torch.from_numpy(sdf_targets(seg_full.cpu().numpy(), fg)).to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            output = self.network(x)
            if not isinstance(output, (list, tuple)):
                output = [output]
            sdf_pred = self.sdf_head(self.decoder_features.pop()).float()
            loss_seg = self.loss([o[:b_l] for o in output], target_l) if b_l > 0 else output[0].sum() * 0
            loss_sdf = F.mse_loss(sdf_pred[:b_l], sdf_gt) if b_l > 0 else sdf_pred.sum() * 0
            prob_fg = torch.softmax(output[0].float(), 1)[:, fg]
            loss_dtc = dual_task_consistency(sdf_pred, prob_fg, self.sdf_k)
            loss = loss_seg + self.sdf_loss_weight * loss_sdf + w * loss_dtc
        self.backward_and_step(loss, self.optimizer, nn.ModuleList([unwrap(self.network), self.sdf_head]),
                               self.grad_scaler)
        return {"loss": loss.detach(), "loss_seg": loss_seg.detach(), "loss_sdf": loss_sdf.detach(),
                "loss_dtc": loss_dtc.detach(), "dtc_weight": w}

    def validation_step(self, batch: dict) -> dict:
        result = super().validation_step(batch)
        self.decoder_features.features = None  # the level set is not validated; do not keep the features
        return result

    def extra_checkpoint_state(self) -> dict:
        return {**super().extra_checkpoint_state(), "dtc_sdf_head_weights": self.sdf_head.state_dict()}

    def load_extra_checkpoint_state(self, checkpoint: dict) -> None:
        super().load_extra_checkpoint_state(checkpoint)
        self.sdf_head.load_state_dict(checkpoint["dtc_sdf_head_weights"])
