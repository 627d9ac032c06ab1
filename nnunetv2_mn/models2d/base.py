"""The 2D branch f(.; theta_nat) of M&N (paper Sec. 2.1): one interface, several models.

A `Branch2D` takes normalised 3-channel slices (N, 3, H, W) and returns class logits
(N, K, H, W) at slice resolution. Which parameters train is fixed at construction by the
fine-tuning strategy ('lora' | 'decoder' | 'whole'); only those (plus any new layers) are
saved in a checkpoint, so a frozen pretrained base is never duplicated on disk.
"""
from typing import Dict

import torch
from torch import nn

FINETUNE_STRATEGIES = ("lora", "decoder", "whole")


class Branch2D(nn.Module):
    """Base class of every 2D model the M&N trainer can use."""

    #: short name, shown in logs (e.g. 'segformer', 'resunet')
    kind: str = "base"

    def __init__(self, num_classes: int, finetune: str):
        super().__init__()
        if finetune not in FINETUNE_STRATEGIES:
            raise ValueError(f"Unknown fine-tuning strategy {finetune!r}; choose one of {FINETUNE_STRATEGIES}.")
        self.num_classes = num_classes
        self.finetune = finetune

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) -> (N, K, H, W)
        raise NotImplementedError

    def describe(self) -> str:
        """One line for the training log: model, source of the weights, strategy, #trainable params."""
        n_train = sum(p.numel() for p in self.parameters() if p.requires_grad)
        n_all = sum(p.numel() for p in self.parameters())
        return f"{self.kind} ({self.finetune}): {n_train:,} of {n_all:,} parameters trainable"

    def trainable_state_dict(self) -> Dict[str, torch.Tensor]:
        """What a checkpoint stores: every tensor that training can change (trainable params and
        buffers of trainable modules, e.g. BatchNorm statistics). Keys as in `state_dict()`."""
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v.detach().clone() for k, v in self.state_dict().items()
                if k in trainable or self._is_trainable_buffer(k)}

    def load_trainable_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        """Inverse of `trainable_state_dict`: every expected key must be present (strict)."""
        expected = set(self.trainable_state_dict().keys())
        missing, unexpected = expected - set(state), set(state) - expected
        if missing or unexpected:
            raise RuntimeError(f"2D-branch checkpoint does not match the model: missing {sorted(missing)[:5]}, "
                               f"unexpected {sorted(unexpected)[:5]}. Was it saved with another 2D model or "
                               f"fine-tuning strategy?")
        self.load_state_dict(state, strict=False)

    def _is_trainable_buffer(self, key: str) -> bool:
        """Buffers (BN running stats) belong to the checkpoint when their module has trainable params."""
        module_name, _, leaf = key.rpartition(".")
        buffers = dict(self.named_buffers())
        if key not in buffers:
            return False
        module = self.get_submodule(module_name) if module_name else self
        return any(p.requires_grad for p in module.parameters(recurse=False))
