"""The 2D branch f(.; theta_nat) of M&N (paper Sec. 2.1): one interface, several models.

A `Branch2D` takes normalised 3-channel slices (N, 3, H, W) and returns class logits
(N, K, H, W) at slice resolution. Which parameters train is fixed at construction by the
fine-tuning strategy ('lora' | 'decoder' | 'whole'); only those (plus any new layers) are
saved in a checkpoint, so a frozen pretrained base is never duplicated on disk.

A subclass builds its layers, then calls `setup_finetuning()`, which injects LoRA adapters (under
'lora') into the modules `lora_target_modules()` names and freezes what `is_trainable()` rejects.
"""
import contextlib
from typing import Dict, Iterator, List

import torch
from torch import nn

from .lora import find_conv_lora_targets, find_lora_targets, inject_lora, is_lora_param

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
    #: LoRA adapters under finetune='lora' (paper Sec. 3.1: r=64, alpha=64, dropout 0.1)
    lora_r: int = 64
    lora_alpha: int = 64
    lora_dropout: float = 0.1

    def __init__(self, num_classes: int, finetune: str):
        super().__init__()
        if finetune not in FINETUNE_STRATEGIES:
            raise ValueError(f"Unknown fine-tuning strategy {finetune!r}; choose one of {FINETUNE_STRATEGIES}.")
        self.num_classes = num_classes
        self.finetune = finetune
        #: True when the frozen base came from pretrained weights that can be loaded again from their
        #: source; False for a random init, whose frozen part a checkpoint must then store too
        self.pretrained = False
        #: full names of the modules that carry LoRA adapters (empty unless finetune='lora')
        self.lora_targets: List[str] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) -> (N, K, H, W)
        raise NotImplementedError

    # -- fine-tuning ---------------------------------------------------------------------------
    def lora_target_modules(self) -> List[str]:
        """Full names of the modules that get LoRA adapters. Default: the attention/MLP linear layers
        anywhere in the model (found by name, see `lora.py`); subclasses restrict it to their encoder."""
        return find_lora_targets(self)

    def is_trainable(self, name: str, param: nn.Parameter) -> bool:
        """Whether the model's own parameter `name` trains under `self.finetune` (LoRA adapter weights
        always train). Every subclass says it."""
        raise NotImplementedError(f"{type(self).__name__} must say which parameters train (`is_trainable`).")

    def setup_finetuning(self) -> None:
        """Apply the fine-tuning strategy; subclasses call this once, at the end of `__init__`.

        Under 'lora', inject adapters (r, alpha, dropout from the class attributes) into
        `lora_target_modules()`; then set `requires_grad` from `is_trainable` and re-apply the
        train/eval policy of frozen norm layers."""
        if self.finetune == "lora":
            targets = list(self.lora_target_modules())
            if not targets:
                layers = find_conv_lora_targets(self)
                raise ValueError(f"{type(self).__name__}: no LoRA target module found (its linear and convolution "
                                 f"layers: {layers[:8]}{'...' if len(layers) > 8 else ''}); choose them in "
                                 f"`lora_target_modules()` or use finetune='decoder' or 'whole'.")
            inject_lora(self, targets, self.lora_r, self.lora_alpha, self.lora_dropout)
            self.lora_targets = targets
        for name, param in self.named_parameters():
            param.requires_grad_(is_lora_param(name) or bool(self.is_trainable(name, param)))
        self.train(self.training)

    def describe_weights(self) -> str:
        """The model and where its weights come from, for `describe` ('' = nothing to add)."""
        return ""

    def describe(self) -> str:
        """One line for the training log: model, source of the weights, strategy, #trainable params."""
        n_train = sum(p.numel() for p in self.parameters() if p.requires_grad)
        n_all = sum(p.numel() for p in self.parameters())
        parts = [f"{self.kind} ({self.finetune}): {n_train:,} of {n_all:,} parameters trainable",
                 self.describe_weights()]
        if self.lora_targets:
            parts.append(f"LoRA on {len(self.lora_targets)} layers")
        return "; ".join(p for p in parts if p)

    # -- teacher passes --------------------------------------------------------------------------
    def lora_layers(self) -> List[nn.Module]:
        """peft's LoRA layers of the model (`peft.tuners.lora.LoraLayer`; none unless finetune='lora')."""
        if not self.lora_targets:
            return []
        from peft.tuners.lora import LoraLayer

        return [m for m in self.modules() if isinstance(m, LoraLayer)]

    @contextlib.contextmanager
    def teacher_mode(self, merge_lora: bool = True) -> Iterator["Branch2D"]:
        """For the forward passes of the 2D model as a teacher (eval mode, no gradients): its LoRA adapters merged
        into their base weights, W' = W + (alpha/r)·B·A (peft's `LoraLayer.merge`), so that a pass costs the frozen
        model's matmuls only, not two more per adapted layer. On exit the unmerged base weights are put back as
        they were (the tensors themselves, so no rounding drift builds up over merges), and the adapters are
        active again for the student's step.

        Nothing changes what trains or what a checkpoint holds: the merge goes into a copy of each base weight,
        LoRA parameters, `requires_grad` and state-dict keys stay as they are. It merges only in eval mode: in
        train mode the adapters' dropout makes a merged pass differ from an unmerged one, so it does nothing."""
        layers = [m for m in self.lora_layers() if not (m.merged or m.disable_adapters)] \
            if merge_lora and not self.training else []
        saved = []
        try:
            if layers:
                # B·A in the weights' own precision, not under an enclosing autocast
                device_type = layers[0].get_base_layer().weight.device.type
                with torch.no_grad(), torch.autocast(device_type, enabled=False):
                    for layer in layers:
                        base = layer.get_base_layer()
                        saved.append((layer, base.weight.data))
                        base.weight.data = base.weight.data.clone()
                        layer.merge(safe_merge=False)  # in place, into the copy
            yield self
        finally:
            for layer, weight in reversed(saved):
                layer.get_base_layer().weight.data = weight
                del layer.merged_adapters[:]

    # -- checkpoints ---------------------------------------------------------------------------

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
