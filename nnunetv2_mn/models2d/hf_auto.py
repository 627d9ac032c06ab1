"""Any `AutoModelForSemanticSegmentation` checkpoint as the 2D branch (paper Sec. 2.1: "model-agnostic").

The checkpoint's head is resized to K classes by transformers itself (`num_labels=K`,
`ignore_mismatched_sizes=True`: the output layer is re-initialised), auxiliary heads are switched off
(they only serve a training loss we do not use), and the logits are resized bilinearly to the input
size (UperNet already returns full resolution, SegFormer H/4, DPT 2x).

The model is split into the encoder (`model.<base_model_prefix>`, e.g. `segformer`, `dpt`, `beit`,
or `model.backbone` for UperNet) and everything else, the task head. Fine-tuning:
  'lora'    LoRA on the encoder's attention/MLP linear layers (found by name, see `lora.py`: SegFormer/
            Swin `q_proj..fc2`, ViT/DPT `query, key, value, dense`, ConvNeXt `pwconv1/2`), encoder
            LayerNorms, and the whole head (its last layer is new, its other layers were trained for
            another label set) trainable.
  'decoder' head trainable, encoder frozen.
  'whole'   everything trainable.
"""
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .base import Branch2D
from .loading import load_hf_config, load_hf_pretrained
from .lora import ATTENTION_MLP_LEAVES, find_lora_targets


class HFSegmentationBranch(Branch2D):
    """source: hub id or local `save_pretrained` directory; config: a model config instead (random weights)."""

    kind = "hf"
    #: leaf names of the encoder's linear layers that get LoRA adapters
    lora_target_leaves = ATTENTION_MLP_LEAVES
    #: candidate attribute names of the encoder, after the model's own `base_model_prefix`
    encoder_attributes = ("backbone", "encoder")
    #: resize mode of the logits to the input size
    upsample_mode = "bilinear"

    def __init__(self, num_classes: int, finetune: str = "lora", source: Optional[str] = None,
                 config=None, local_files_only: Optional[bool] = None):
        super().__init__(num_classes, finetune)
        from transformers import AutoConfig, AutoModelForSemanticSegmentation

        if (source is None) == (config is None):
            raise ValueError("HFSegmentationBranch needs exactly one of `source` (hub id / directory) or `config`.")
        if config is not None:
            self.source, self.loading_info = f"random init ({type(config).__name__})", None
            self.model = AutoModelForSemanticSegmentation.from_config(self._adapt_config(config, num_classes))
        else:
            self.source = source
            cfg = load_hf_config(AutoConfig, source, local_files_only=local_files_only)
            self.model, self.loading_info = load_hf_pretrained(
                AutoModelForSemanticSegmentation, source, local_files_only=local_files_only,
                config=self._adapt_config(cfg, num_classes), ignore_mismatched_sizes=True)
            self.pretrained = True
        self.encoder_prefix = "model." + self._encoder_attribute(self.model)
        self.setup_finetuning()

    @staticmethod
    def _adapt_config(config, num_classes: int):
        config = config.__class__.from_dict(config.to_dict())  # never mutate the caller's config
        config.num_labels = num_classes
        if hasattr(config, "use_auxiliary_head"):
            config.use_auxiliary_head = False
        return config

    def _encoder_attribute(self, model: nn.Module) -> str:
        for name in (getattr(model, "base_model_prefix", ""), *self.encoder_attributes):
            if name and isinstance(getattr(model, name, None), nn.Module):
                return name
        raise ValueError(f"Cannot tell the encoder of {type(model).__name__} (children: "
                         f"{[n for n, _ in model.named_children()]}); set `encoder_attributes` in a subclass.")

    def lora_target_modules(self) -> List[str]:
        """The encoder's linear layers whose last name is in `lora_target_leaves`."""
        return find_lora_targets(self, prefix=self.encoder_prefix, leaves=self.lora_target_leaves)

    def is_trainable(self, name: str, param: nn.Parameter) -> bool:
        in_encoder = name.startswith(self.encoder_prefix + ".")
        if self.finetune == "whole" or not in_encoder:
            return True
        if self.finetune == "decoder":
            return False
        return isinstance(self.get_submodule(name.rpartition(".")[0]), nn.LayerNorm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(pixel_values=x).logits
        if logits.shape[-2:] != x.shape[-2:]:
            logits = F.interpolate(logits, size=x.shape[-2:], mode=self.upsample_mode, align_corners=False)
        return logits

    def describe_weights(self) -> str:
        return f"{type(self.model).__name__} from {self.source}"
