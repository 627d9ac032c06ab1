"""ResUNet: an ImageNet classification encoder with a U-Net decoder (paper Sec. 2.1, "for an
encoder-only f, attach a decoder"; Table 4 row 1: ResNet-50 encoder, whole fine-tuning).

Encoder: any timm model with `features_only=True` (ResNet-50 by default), built with
`pretrained=False` and filled from a local weights file (never downloaded). Decoder: randomly
initialised; at each encoder level upsample (nearest) to the skip's size, concatenate the skip,
two 3x3 Conv-BN-ReLU; a last block upsamples to full resolution with the input image as skip, and a
1x1 conv gives K logits. Any H, W work (sizes follow the skips, no padding).

Fine-tuning:
  'whole'   everything trainable (the paper's ResUNet setting).
  'decoder' encoder frozen (its BatchNorms keep their pretrained statistics), decoder trainable.
  'lora'    LoRA (peft, Conv2d and Linear) on the encoder's ungrouped convolutions, encoder
            normalisation layers and the decoder trainable. Depth-wise convs get no adapter. The rank
            is smaller than SegFormer's (8 vs 64): CNN layers are narrow (16-320 channels in
            EfficientNet-Lite0), r=64 would exceed the rank of many of them.
"""
import os
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import Branch2D
from .loading import Pretrained2DModelNotFound
from .lora import find_conv_lora_targets


class ConvBNReLU(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class DecoderBlock(nn.Module):
    """Upsample to the skip's size, concatenate the skip, two Conv-BN-ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.convs = nn.Sequential(ConvBNReLU(in_channels + skip_channels, out_channels),
                                   ConvBNReLU(out_channels, out_channels))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
        return self.convs(torch.cat([x, skip], dim=1))


class UNetDecoder(nn.Module):
    """U-Net decoder over encoder features (shallow to deep) plus the input image as the last skip."""

    def __init__(self, encoder_channels: Sequence[int], decoder_channels: Sequence[int], num_classes: int,
                 image_channels: int = 3):
        super().__init__()
        if len(decoder_channels) != len(encoder_channels):
            raise ValueError(f"decoder_channels {tuple(decoder_channels)} needs one entry per encoder level "
                             f"{tuple(encoder_channels)}")
        skips = list(encoder_channels[:-1])[::-1] + [image_channels]
        ins = [encoder_channels[-1], *decoder_channels[:-1]]
        self.blocks = nn.ModuleList(DecoderBlock(i, s, o) for i, s, o in zip(ins, skips, decoder_channels))
        self.classifier = nn.Conv2d(decoder_channels[-1], num_classes, kernel_size=1)

    def forward(self, features: List[torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        x = features[-1]
        for block, skip in zip(self.blocks, [*features[:-1][::-1], image]):
            x = block(x, skip)
        return self.classifier(x)


def read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """A state dict from a .safetensors or torch file (tensors only, no pickled code)."""
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise Pretrained2DModelNotFound(f"Encoder weights file {path!r} does not exist. Save one on a machine with "
                                        f"internet, e.g. `torch.save(timm.create_model(name, pretrained=True)"
                                        f".state_dict(), path)`, and pass its path as the source.")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):  # common checkpoint wrappers
        if isinstance(state.get(key), dict):
            state = state[key]
    return state


class ResUNetBranch(Branch2D):
    """timm encoder (features_only) + U-Net decoder.

    source: local weights file of the full timm classification model `encoder_name` (state dict;
    the classifier keys are checked, then dropped); None = random encoder.
    """

    kind = "resunet"
    encoder_name = "resnet50"
    encoder_kwargs: Dict = {}
    decoder_channels = (256, 128, 64, 32, 16)
    encoder_prefix = "encoder"
    lora_r = 8
    lora_alpha = 8
    #: under LoRA, train the encoder's normalisation layers (the CNN analogue of SegFormer's LayerNorms)
    lora_train_encoder_norms = True

    def __init__(self, num_classes: int, finetune: str = "whole", source: Optional[str] = None,
                 encoder_name: Optional[str] = None, encoder_kwargs: Optional[Dict] = None,
                 decoder_channels: Optional[Sequence[int]] = None):
        super().__init__(num_classes, finetune)
        import timm

        self.encoder_name = encoder_name or self.encoder_name
        self.encoder_kwargs = dict(self.encoder_kwargs if encoder_kwargs is None else encoder_kwargs)
        self.source = source
        self.encoder = timm.create_model(self.encoder_name, features_only=True, pretrained=False, **self.encoder_kwargs)
        state = self.pretrained_encoder_state_dict()
        if state is not None:
            self.encoder.load_state_dict(state, strict=True)
            self.pretrained = True
        self.decoder = UNetDecoder(self.encoder.feature_info.channels(), decoder_channels or self.decoder_channels,
                                   num_classes)
        self.setup_finetuning()

    # -- weights -------------------------------------------------------------------------------
    def full_model_state_dict(self) -> Optional[Dict[str, torch.Tensor]]:
        """State dict of the full timm classifier `encoder_name`, keys as timm names them; None = random."""
        return None if self.source is None else read_state_dict(self.source)

    def pretrained_encoder_state_dict(self) -> Optional[Dict[str, torch.Tensor]]:
        """The full model's weights, checked strictly against timm's classifier (every key, every shape),
        restricted to the encoder's keys (the classification head's keys are dropped)."""
        import timm

        full_state = self.full_model_state_dict()
        if full_state is None:
            return None
        full = timm.create_model(self.encoder_name, pretrained=False, **self.encoder_kwargs)
        full.load_state_dict(full_state, strict=True)  # raises on any missing/unexpected key or shape
        full_state = full.state_dict()
        encoder_keys = set(self.encoder.state_dict())
        unknown = encoder_keys - set(full_state)
        if unknown:
            raise RuntimeError(f"Encoder keys not in the {self.encoder_name} classifier: {sorted(unknown)[:5]}")
        return {k: full_state[k] for k in self.encoder.state_dict()}

    # -- fine-tuning ---------------------------------------------------------------------------
    def lora_target_modules(self) -> List[str]:
        """The encoder's ungrouped convolutions and linear layers."""
        return find_conv_lora_targets(self, prefix=self.encoder_prefix)

    def is_trainable(self, name: str, param: nn.Parameter) -> bool:
        if self.finetune == "whole" or not name.startswith(self.encoder_prefix + "."):
            return True
        if self.finetune == "decoder":
            return False
        module = self.get_submodule(name.rpartition(".")[0])
        is_norm = isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm))
        return self.lora_train_encoder_norms and is_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x), x)

    def weights_description(self) -> str:
        return self.source or "random init"

    def describe_weights(self) -> str:
        return f"encoder {self.encoder_name} from {self.weights_description()}"
