"""LoRA (paper Sec. 2.1, default fine-tuning) via peft, with target modules derived from the model.

The official M&N code (transformers 4.41) names `query, key, value, dense, dense1, dense2`;
transformers 5 renamed SegFormer's to `q_proj, k_proj, v_proj, o_proj, fc1, fc2`, and a fixed list
makes peft fail with `NoMatchingPeftModuleError`. So targets are looked up in `named_modules()`:
full module names, restricted to an encoder prefix, to layer types LoRA supports here, and to
known attention/MLP leaf names. Adapters are injected in place (`peft.inject_adapter_in_model`), so
the model keeps its own forward and keys (`<layer>.base_layer.weight`, `<layer>.lora_A.default.weight`).
"""
from typing import Iterable, List, Sequence, Tuple

from torch import nn

#: leaf names of attention projections and MLP layers, transformers 5 and 4.x spellings, plus ConvNeXt
ATTENTION_MLP_LEAVES: Tuple[str, ...] = (
    "q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2",      # transformers 5 (SegFormer, Swin, ...)
    "query", "key", "value", "dense", "dense1", "dense2",      # transformers 4.x SegFormer; ViT/DPT today
    "qkv", "proj", "in_proj", "out_proj", "pwconv1", "pwconv2",  # fused qkv (timm/ViT), ConvNeXt MLP
)


def _under(name: str, prefix: str) -> bool:
    return not prefix or name == prefix or name.startswith(prefix + ".")


def find_lora_targets(model: nn.Module, prefix: str = "", leaves: Iterable[str] = ATTENTION_MLP_LEAVES,
                      types: Tuple[type, ...] = (nn.Linear,)) -> List[str]:
    """Full names of modules under `prefix` of one of `types` whose last name component is in `leaves`
    (all leaves when `leaves` is None)."""
    leaves = None if leaves is None else set(leaves)
    return sorted(name for name, m in model.named_modules()
                  if _under(name, prefix) and isinstance(m, types)
                  and (leaves is None or name.rpartition(".")[2] in leaves))


def find_conv_lora_targets(model: nn.Module, prefix: str = "") -> List[str]:
    """LoRA targets in a CNN encoder: `nn.Linear` and ungrouped convolutions that peft's LoRA layer
    reproduces exactly. Depthwise convs (groups > 1) are skipped; so are k>1 convs of subclasses
    with their own padding logic (e.g. timm's TF-'same' `Conv2dSame`, whose LoRA branch would be
    padded differently from the base layer)."""
    names = []
    for name, m in model.named_modules():
        if not _under(name, prefix):
            continue
        if isinstance(m, nn.Linear):
            names.append(name)
        elif isinstance(m, nn.Conv2d) and m.groups == 1 and (type(m) is nn.Conv2d or m.kernel_size == (1, 1)):
            names.append(name)
    return sorted(names)


def inject_lora(model: nn.Module, targets: Sequence[str], r: int, alpha: int, dropout: float) -> nn.Module:
    """Insert LoRA adapters (W + alpha/r * B A) into the named modules of `model`, in place."""
    from peft import LoraConfig, inject_adapter_in_model

    if not targets:
        raise ValueError("No LoRA target modules found in the model; see `find_lora_targets`.")
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, bias="none", target_modules=list(targets))
    return inject_adapter_in_model(config, model)


def is_lora_param(name: str) -> bool:
    return ".lora_" in name
