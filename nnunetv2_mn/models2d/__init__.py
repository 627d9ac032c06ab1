"""2D branch f(.; theta_nat) of M&N (paper Sec. 2.1): pretrained natural-image models behind one interface.

    build_branch2d(kind, num_classes, finetune='lora', source=None, config=None, **kwargs) -> Branch2D
    check_branch2d_offline(kind, source=None) -> (ok, message)

Kinds: 'segformer' (default M&N model), 'hf' (any AutoModelForSemanticSegmentation), 'resunet'
(timm encoder + U-Net decoder), 'effnet_lite0' (offline ImageNet EfficientNet-Lite0 + U-Net decoder).
The implementation classes are imported lazily (transformers/peft/timm are slow to import).
"""
from .base import FINETUNE_STRATEGIES, Branch2D
from .loading import Pretrained2DModelNotFound
from .registry import BRANCH_CLASSES, branch_class, build_branch2d, check_branch2d_offline

_LAZY = {
    "SegFormerBranch": "segformer",
    "HFSegmentationBranch": "hf_auto", "ResUNetBranch": "resunet", "EffNetLite0UNetBranch": "effnet_lite0",
}

__all__ = ["Branch2D", "FINETUNE_STRATEGIES", "Pretrained2DModelNotFound", "BRANCH_CLASSES",
           "branch_class", "build_branch2d", "check_branch2d_offline", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
