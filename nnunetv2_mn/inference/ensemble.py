"""2D+3D ensemble prediction (issue 13): the fine-tuned 2D model f kept next to the checkpoint, its slice predictions
fused with nnU-Net's 3D sliding window.

Saving (`save_model2d`, called by `nnUNetTrainerMN.on_train_end`): `fold_x/model2d/` holds
  * `weights.pth`: `torch.save` of f's `trainable_state_dict()` (LoRA adapters, new head, trainable norms and
    biases), or of its whole `state_dict()` when its frozen base was randomly initialised and so cannot be rebuilt;
  * `model2d.json`: what rebuilds f (kind, fine-tuning, source of the pretrained base or the config of a random
    init, kwargs, classes), how it slices (`slice_axes`) and how its views are fused (`view_weights`: the weights of
    its last pseudo-masks, `view_weighting='val_dice'`; null = equal weights).
The branch injects its LoRA adapters in place (`peft.inject_adapter_in_model`), so it is not a `PeftModel` and peft's
`save_pretrained` does not apply; the trainable state dict holds the adapters and the head and norms around them.

Prediction (`nnUNetPredictor2D3D`): nnU-Net's own predictor (preprocessing, sliding window with Gaussian weighting
and mirroring, fold averaging, resampling and export unchanged). Only `predict_logits_from_preprocessed_data` is
extended: with weight w > 0 the case's 3D probabilities softmax(z_3D) are mixed with f's,
    P = (1 - w) softmax(z_3D) + w P_2D,
P_2D nnU-Net's sliding window (patch size, tile step; equal tile weights, no mirroring) over the mean over folds of
f's prediction on every slice of each patch along each saved axis (Eq. 2, views fused as in training: the mean of
softmaxes with the kept `view_weights`), so that f sees slices of the size it learned on; log P is returned as the
logits (nnU-Net's softmax of it is P).
w = 0 returns nnU-Net's logits untouched: the files are those of `nnUNetv2_predict`.

Each piece is a module function that the uncertainty command (`nnunetv2_mn.inference.uncertainty`, its 2D/3D
disagreement map) shares: `resolve_folds`, `missing_model2d_files`, `load_models2d`, `predict_2d_probabilities`.
"""
import json
import os
from typing import List, Optional, Sequence, Tuple

import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from torch import nn

from nnunetv2_mn.mn.slicing import check_slice_axes, predict_views, view_weights

MODEL2D_FOLDER = "model2d"
WEIGHTS_FILE = "weights.pth"
INFO_FILE = "model2d.json"
INFO_KEYS = ("kind", "finetune", "source", "config", "kwargs", "num_classes", "slice_axes", "view_weights")


def save_model2d(branch, folder: str, info: dict) -> None:
    """Write f's weights (trainable part, or all of it when its base cannot be rebuilt) and `info` (`INFO_KEYS`)."""
    missing = [k for k in INFO_KEYS if k not in info]
    if missing:
        raise ValueError(f"model2d info lacks {missing}")
    full = not branch.pretrained
    os.makedirs(folder, exist_ok=True)
    torch.save(branch.state_dict() if full else branch.trainable_state_dict(), os.path.join(folder, WEIGHTS_FILE))
    weights = info["view_weights"]
    info = {**info, "slice_axes": list(info["slice_axes"]), "full_state_dict": full,
            "view_weights": None if weights is None else [float(w) for w in weights]}
    with open(os.path.join(folder, INFO_FILE), "w") as f:
        json.dump(info, f, indent=2)


def load_model2d(folder: str, device: torch.device = torch.device("cpu")) -> Tuple[nn.Module, dict]:
    """Rebuild f from `save_model2d`'s folder (the pretrained base from its recorded source), in eval mode."""
    from nnunetv2_mn.models2d import build_branch2d

    info_file = os.path.join(folder, INFO_FILE)
    if not os.path.isfile(info_file):
        raise FileNotFoundError(f"{info_file} not found: the 2D model is kept by nnUNetTrainerMN (and its variants) "
                                f"at the end of training; this fold was trained by another trainer or did not finish")
    with open(info_file) as f:
        info = json.load(f)
    config = None
    if info["config"] is not None:
        from transformers import AutoConfig
        config = AutoConfig.for_model(**info["config"])
    branch = build_branch2d(info["kind"], num_classes=info["num_classes"], finetune=info["finetune"],
                            source=None if config is not None else info["source"], config=config, **info["kwargs"])
    state = torch.load(os.path.join(folder, WEIGHTS_FILE), map_location="cpu", weights_only=True)
    if info["full_state_dict"]:
        branch.load_state_dict(state)
    else:
        branch.load_trainable_state_dict(state)
    info["slice_axes"] = check_slice_axes(info["slice_axes"])
    info.setdefault("view_weights", None)  # kept before the views' weights were saved: equal weights
    if info["view_weights"] is not None:
        try:
            view_weights(len(info["slice_axes"]), info["view_weights"])
        except ValueError as e:
            raise ValueError(f"{info_file}: {e} (one per slice axis {info['slice_axes']})") from None
    return branch.to(device).eval(), info


def resolve_folds(model_training_output_dir: str, use_folds: Optional[Sequence],
                  checkpoint_name: str = "checkpoint_final.pth") -> list:
    """The folds nnU-Net's predictor will use, as a list (None: those with `checkpoint_name`, nnU-Net's rule)."""
    if use_folds is None:
        use_folds = nnUNetPredictor.auto_detect_available_folds(model_training_output_dir, checkpoint_name)
    return [use_folds] if isinstance(use_folds, str) else list(use_folds)


def model2d_folder(model_training_output_dir: str, fold) -> str:
    """`fold_<fold>/model2d` of a trained model folder (the fold as nnU-Net names it: 0..4 or 'all')."""
    return os.path.join(model_training_output_dir, f"fold_{fold}", MODEL2D_FOLDER)


def missing_model2d_files(model_training_output_dir: str, folds: Sequence) -> List[str]:
    """The files of the kept 2D models (`model2d.json`, `weights.pth` of each fold) that are not there; empty when
    every fold kept its 2D model."""
    return [path for f in folds for path in (os.path.join(model2d_folder(model_training_output_dir, f), name)
                                             for name in (INFO_FILE, WEIGHTS_FILE)) if not os.path.isfile(path)]


def load_models2d(model_training_output_dir: str, folds: Sequence, label_manager) -> List[Tuple[nn.Module, dict]]:
    """The kept 2D model of each fold (`load_model2d`), checked against the 3D network's label manager (softmax
    outputs, same number of classes)."""
    if label_manager.has_regions:
        raise ValueError("the 2D model's probabilities are softmax probabilities; this model was trained on regions.")
    models2d = [load_model2d(model2d_folder(model_training_output_dir, f)) for f in folds]
    for _, info in models2d:
        if info["num_classes"] != label_manager.num_segmentation_heads:
            raise ValueError(f"the 2D model predicts {info['num_classes']} classes, the 3D network "
                             f"{label_manager.num_segmentation_heads}")
    return models2d


class SliceProbabilities(nn.Module):
    """f's probabilities for a 3D patch (B, C, *patch) -> (B, K, *patch): every slice along each saved axis (Eq. 2),
    the views fused with each model's `view_weights` as in training, the mean over folds. The network that nnU-Net's
    sliding window runs for P_2D."""

    def __init__(self, models2d: Sequence[Tuple[nn.Module, dict]], slice_chunk: int = 64):
        super().__init__()
        self.models = nn.ModuleList(model for model, _ in models2d)
        self.infos = [info for _, info in models2d]
        self.slice_chunk = slice_chunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = [predict_views(model, x, info["slice_axes"], self.slice_chunk, info["view_weights"])[0].float()
             for model, info in zip(self.models, self.infos)]
        return torch.stack(p).mean(0)


@torch.no_grad()
def predict_2d_probabilities(predictor: nnUNetPredictor, models2d: Sequence[Tuple[nn.Module, dict]],
                             data: torch.Tensor, slice_chunk: int = 64) -> torch.Tensor:
    """P_2D of a preprocessed case (C, X, Y, Z), float32 on the CPU: nnU-Net's own sliding window (the predictor's
    patch size and tile step) over `SliceProbabilities`, so that f sees the slices of patches of the size it learned
    on. f's output moves with the slice size (its encoder's 'SAME' padding and its decoder's resizing to the skips'
    sizes), so slicing a volume larger than the patch whole shifts it. Overlapping tiles are averaged with equal
    weights, no mirroring: nnU-Net's Gaussian weights fall below fp16's range at the tiles' corners, where its fp16
    sums would turn probabilities into 0. The result is normalised to sum to 1 per voxel."""
    saved = predictor.network, predictor.use_mirroring, predictor.use_gaussian
    predictor.network, predictor.use_mirroring, predictor.use_gaussian = \
        SliceProbabilities(models2d, slice_chunk), False, False
    try:  # nnU-Net's method itself: a subclass's override (the uncertainty command's) is for the 3D network
        p = nnUNetPredictor.predict_sliding_window_return_logits(predictor, data)
    finally:
        predictor.network, predictor.use_mirroring, predictor.use_gaussian = saved
    p = p.to("cpu", torch.float32)
    return p / p.sum(0, keepdim=True)  # sums to 1 again after nnU-Net's fp16 sums


def check_weight_2d(weight: float) -> float:
    if not 0 <= weight <= 1:
        raise ValueError(f"the 2D model's weight must be in [0, 1], got {weight}")
    return float(weight)


class nnUNetPredictor2D3D(nnUNetPredictor):
    """nnU-Net's predictor whose logits are log((1 - w) softmax(z_3D) + w P_2D) (see the module docstring);
    `weight_2d` = 0 is the stock predictor (no 2D model is loaded)."""

    def __init__(self, *args, weight_2d: float = 0.5, slice_chunk: int = 64, **kwargs):
        super().__init__(*args, **kwargs)
        self.weight_2d = check_weight_2d(weight_2d)
        self.slice_chunk = slice_chunk
        self.models2d: List[Tuple[nn.Module, dict]] = []

    def initialize_from_trained_model_folder(self, model_training_output_dir: str,
                                             use_folds: Optional[Sequence] = None,
                                             checkpoint_name: str = "checkpoint_final.pth"):
        use_folds = resolve_folds(model_training_output_dir, use_folds, checkpoint_name)
        super().initialize_from_trained_model_folder(model_training_output_dir, use_folds, checkpoint_name)
        if self.weight_2d > 0:
            self.models2d = load_models2d(model_training_output_dir, use_folds, self.label_manager)

    def predict_2d_probabilities(self, data: torch.Tensor) -> torch.Tensor:
        """P_2D of a preprocessed case (module function `predict_2d_probabilities`)."""
        return predict_2d_probabilities(self, self.models2d, data, self.slice_chunk)

    def predict_logits_from_preprocessed_data(self, data: torch.Tensor) -> torch.Tensor:
        logits = super().predict_logits_from_preprocessed_data(data)
        if self.weight_2d == 0:
            return logits
        w = self.weight_2d
        p = (1 - w) * torch.softmax(logits.float(), 0) + w * self.predict_2d_probabilities(data)
        return torch.log(p.clamp_min(1e-8))
