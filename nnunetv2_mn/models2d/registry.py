"""Build a 2D branch by name, and check offline that it can be built (for `nnUNetv2_mn_doctor`)."""
from typing import Dict, Optional, Tuple, Type

from nnunetv2_mn.settings import HF_KINDS

from .base import Branch2D

#: kind -> "module:Class", imported on demand (transformers/peft/timm are slow to import)
BRANCH_CLASSES: Dict[str, str] = {
    "segformer": "nnunetv2_mn.models2d.segformer:SegFormerBranch",
    "hf": "nnunetv2_mn.models2d.hf_auto:HFSegmentationBranch",
    "resunet": "nnunetv2_mn.models2d.resunet:ResUNetBranch",
    "effnet_lite0": "nnunetv2_mn.models2d.effnet_lite0:EffNetLite0UNetBranch",
}


def branch_class(kind: str) -> Type[Branch2D]:
    import importlib

    if kind not in BRANCH_CLASSES:
        raise ValueError(f"Unknown 2D model kind {kind!r}; choose one of {tuple(BRANCH_CLASSES)}.")
    module, _, cls = BRANCH_CLASSES[kind].partition(":")
    return getattr(importlib.import_module(module), cls)


def build_branch2d(kind: str, num_classes: int, finetune: str = "lora", source: Optional[str] = None,
                   config=None, **kwargs) -> Branch2D:
    """The 2D branch f(.; theta_nat) of M&N.

    kind: 'segformer' | 'hf' | 'resunet' | 'effnet_lite0'.
    source: hub id or `save_pretrained` directory (HF kinds), weights file (CNN kinds), None = default
    (SegFormer-B2-ADE20K; the packaged EfficientNet-Lite0 ImageNet weights; random ResNet-50).
    config: a transformers config instead of `source` (HF kinds; random weights).
    kwargs: passed to the class (e.g. `encoder_name`, `decoder_channels`, `local_files_only`).
    """
    cls = branch_class(kind)
    if config is not None:
        if kind not in HF_KINDS:
            raise ValueError(f"`config` applies to {HF_KINDS}; for {kind!r} use encoder_name/decoder_channels.")
        kwargs["config"] = config
    return cls(num_classes, finetune, source=source, **kwargs)


def check_branch2d_offline(kind: str, source: Optional[str] = None, finetune: str = "decoder") -> Tuple[bool, str]:
    """Try to build the branch from local files only, with the fine-tuning strategy the trainer uses. Returns
    (ok, message); the message of a failure says how to provide the model."""
    from .loading import Pretrained2DModelNotFound

    kwargs = {"local_files_only": True} if kind in HF_KINDS else {}
    try:
        branch = build_branch2d(kind, 2, finetune=finetune, source=source, **kwargs)
    except Pretrained2DModelNotFound as e:
        return False, str(e)
    except Exception as e:  # a file that is there but is not a usable model
        return False, f"{kind} model from {source!r} could not be built: {type(e).__name__}: {e}"
    return True, f"OK: {branch.describe()}"
