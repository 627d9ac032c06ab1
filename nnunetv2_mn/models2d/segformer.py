"""SegFormer as the 2D branch f(.; theta_nat) (paper Sec. 3.1: SegFormer-B2, ImageNet-1K + ADE20K).

Head (as in the official code, `model.py`): the decode head's 1x1 classifier is replaced by
`Identity`, so the decode head returns its fused features (decoder_hidden_size channels at H/4 x W/4,
after BN, ReLU and dropout). They are concatenated with the input subsampled to the same grid,
`x[:, :, ::4, ::4]`, and a new `ConvTranspose2d(kernel=4, stride=4)` maps them to K classes at full
resolution (the paper's "replace the last layer", Sec. 2.1, made full-resolution). For H or W not
divisible by 4 the transposed conv overshoots by < 4 pixels, which are cropped.

Fine-tuning (paper Sec. 2.1 / 3.3, Table 4):
  'lora'    LoRA (r=64, alpha=64, dropout 0.1) on the attention q/k/v/out projections and the Mix-FFN
            fc1/fc2 of every encoder block, all encoder LayerNorms, all biases (peft `bias="all"` in the
            official code) and the new head trainable. Decode-head weights, patch embeddings, the
            sequence-reduction convs and the depth-wise convs stay frozen.
  'decoder' decode head + new head trainable, encoder frozen.
  'whole'   everything trainable.
"""
from typing import List, Optional

import torch
from torch import nn

from nnunetv2_mn.settings import DEFAULT_2D_MODEL

from .base import Branch2D
from .loading import load_hf_pretrained
from .lora import find_lora_targets


class FeatureImageUpHead(nn.Module):
    """Full-resolution head: concat(features at stride s, image[::s, ::s]) -> ConvTranspose2d(s, s)."""

    def __init__(self, feature_channels: int, num_classes: int, stride: int = 4, image_channels: int = 3):
        super().__init__()
        self.stride = stride
        self.up = nn.ConvTranspose2d(feature_channels + image_channels, num_classes, kernel_size=stride, stride=stride)

    def forward(self, features: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        s = self.stride
        h, w = image.shape[-2:]
        out = self.up(torch.cat([features, image[:, :, ::s, ::s]], dim=1))
        return out[:, :, :h, :w]


class SegFormerBranch(Branch2D):
    """`SegformerForSemanticSegmentation` with the full-resolution head above.

    source: hub id or local `save_pretrained` directory (default: SegFormer-B2 fine-tuned on ADE20K);
    config: a `SegformerConfig` instead (random weights; tests and from-scratch baselines).
    """

    kind = "segformer"
    default_source = DEFAULT_2D_MODEL
    encoder_prefix = "model.segformer"
    decoder_prefix = "model.decode_head"
    head_prefix = "head"
    #: official code: peft `bias="all"`, every bias of the model trains under LoRA
    lora_train_all_biases = True

    def __init__(self, num_classes: int, finetune: str = "lora", source: Optional[str] = None,
                 config=None, local_files_only: Optional[bool] = None):
        super().__init__(num_classes, finetune)
        from transformers import SegformerForSemanticSegmentation

        if config is not None:
            self.source, self.loading_info = "random init (config)", None
            model = SegformerForSemanticSegmentation(config)
        else:
            self.source = source or self.default_source
            model, self.loading_info = load_hf_pretrained(SegformerForSemanticSegmentation, self.source,
                                                          local_files_only=local_files_only, what="SegFormer")
            self.pretrained = True
        model.decode_head.classifier = nn.Identity()
        self.model = model
        self.head = FeatureImageUpHead(model.config.decoder_hidden_size, num_classes, stride=4,
                                       image_channels=model.config.num_channels)
        self.setup_finetuning()

    def lora_target_modules(self) -> List[str]:
        """Attention q/k/v/o projections and Mix-FFN fc1/fc2 of every encoder block."""
        return find_lora_targets(self, prefix=self.encoder_prefix)

    def is_trainable(self, name: str, param: nn.Parameter) -> bool:
        if self.finetune == "whole" or name.startswith(self.head_prefix + "."):
            return True
        if self.finetune == "decoder":
            return name.startswith(self.decoder_prefix + ".")
        # lora
        if self.lora_train_all_biases and name.endswith(".bias"):
            return True
        module = self.get_submodule(name.rpartition(".")[0])
        return name.startswith(self.encoder_prefix + ".") and isinstance(module, nn.LayerNorm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.model(pixel_values=x).logits  # classifier is Identity: fused decoder features, H/4
        return self.head(features, x)

    def describe_weights(self) -> str:
        missing = len(self.loading_info["missing_keys"]) if self.loading_info else 0
        extra = f", {missing} weights missing from the checkpoint (random)" if missing else ""
        return f"weights: {self.source}{extra}"
