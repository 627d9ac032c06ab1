"""The 2D branch f(.; theta_nat) of M&N (paper Sec. 2.1): one interface, several models.

A `Branch2D` takes normalised 3-channel slices (N, 3, H, W) and returns class logits
(N, K, H, W) at slice resolution. Which parameters train is fixed at construction by the
fine-tuning strategy ('lora' | 'decoder' | 'whole'); only those (plus any new layers) are
saved in a checkpoint, so a frozen pretrained base is never duplicated on disk.
"""
from typing import Callable, Dict

import torch
from torch import nn

FINETUNE_STRATEGIES = ("lora", "decoder", "whole")

#: normalisation layers that keep running statistics (updated in train mode)
_NORMS_WITH_STATS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)


class Branch2D(nn.Module):
    """Base class of every 2D model the M&N trainer can use."""

    #: short name, shown in logs (e.g. 'segformer', 'resunet')
    kind: str = "base"
    #: keep normalisation layers whose parameters are all frozen in eval mode, so that a frozen
    #: pretrained BatchNorm keeps its statistics (and the checkpoint stays complete without them)
    freeze_frozen_norm_stats: bool = True

    def __init__(self, num_classes: int, finetune: str):
        super().__init__()
        if finetune not in FINETUNE_STRATEGIES:
            raise ValueError(f"Unknown fine-tuning strategy {finetune!r}; choose one of {FINETUNE_STRATEGIES}.")
        self.num_classes = num_classes
        self.finetune = finetune
        #: True when the frozen base came from pretrained weights that can be loaded again from their
        #: source; False for a random init, whose frozen part a checkpoint must then store too
        self.pretrained = False

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
        """Buffers (BN running stats) belong to the checkpoint when their module has trainable params.

        Norm layers without trainable params run in eval mode (see `train`), so their statistics
        never change and need not be saved."""
        module_name, _, leaf = key.rpartition(".")
        try:
            module = self.get_submodule(module_name) if module_name else self
        except AttributeError:
            return False
        if module._buffers.get(leaf) is None:
            return False
        return any(p.requires_grad for p in module.parameters(recurse=False))

    def train(self, mode: bool = True) -> "Branch2D":
        """`nn.Module.train`, except that fully frozen norm layers stay in eval mode (pretrained stats)."""
        super().train(mode)
        if mode and self.freeze_frozen_norm_stats:
            for module in self.modules():
                if (isinstance(module, _NORMS_WITH_STATS) and module.track_running_stats
                        and not any(p.requires_grad for p in module.parameters(recurse=False))):
                    module.eval()
        return self

    def _set_trainable(self, is_trainable: Callable[[str, nn.Parameter], bool]) -> None:
        """Set `requires_grad` of every parameter from `is_trainable(name, param)`, then re-apply the
        train/eval policy of frozen norm layers. Subclasses call this once, at the end of `__init__`."""
        for name, param in self.named_parameters():
            param.requires_grad_(bool(is_trainable(name, param)))
        self.train(self.training)
