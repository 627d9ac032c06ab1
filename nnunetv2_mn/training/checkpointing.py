"""Checkpoints that load with `torch.load(..., weights_only=True)`.

nnU-Net's checkpoint holds numpy scalars (`_best_ema`, the logger's pseudo-Dice values) and the M&N trainer numpy
arrays (pseudo-mask foreground locations); both need torch's full unpickler, which runs arbitrary code from the
file. `weights_only_safe` turns them into Python numbers and tensors before saving; `arrays_from_tensors` turns
the tensors back where numpy arrays are expected. `restore_nnunet_state` is nnU-Net's `load_checkpoint` for a
checkpoint dict that is already loaded (nnU-Net's own method only takes a file name).
"""
import pickle
from typing import Any, Callable

import numpy as np
import torch


def weights_only_safe(obj: Any) -> Any:
    """A copy of `obj` with numpy scalars as Python numbers and numpy arrays as tensors (containers recursed)."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, dict):
        return _same_mapping(obj, {k: weights_only_safe(v) for k, v in obj.items()})
    if isinstance(obj, list):
        return [weights_only_safe(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(weights_only_safe(v) for v in obj)
    return obj


def _same_mapping(original: dict, items: dict) -> dict:
    """`items` as the same mapping type as `original` (an OrderedDict state dict keeps its `_metadata`)."""
    if type(original) is dict:
        return items
    out = type(original)(items)
    if hasattr(original, "_metadata"):
        out._metadata = original._metadata
    return out


def arrays_from_tensors(obj: Any) -> Any:
    """Tensors (at any depth of dicts, lists, tuples) back to numpy arrays."""
    if isinstance(obj, torch.Tensor):
        return obj.cpu().numpy()
    if isinstance(obj, dict):
        return {k: arrays_from_tensors(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(arrays_from_tensors(v) for v in obj)
    return obj


def load_checkpoint_file(filename: str, device, log: Callable[[str], Any] = print) -> dict:
    """`torch.load(filename, weights_only=True)`. A checkpoint written before this package saved plain values
    (numpy scalars inside) is loaded with the full unpickler, with a log line saying so."""
    try:
        return torch.load(filename, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        if "numpy" not in str(e):
            raise RuntimeError(f"Checkpoint {filename} cannot be loaded safely (torch.load(weights_only=True)): "
                               f"{' '.join(str(e).split())[:400]}. Only load checkpoints you trust.") from e
    log(f"Checkpoint {filename} holds numpy values (written by an older nnunetv2-mn): loading it with torch's full "
        f"unpickler (weights_only=False; only do this with your own files). Checkpoints written from now on load with "
        f"weights_only=True.")
    return torch.load(filename, map_location=device, weights_only=False)


def restore_nnunet_state(trainer, checkpoint: dict, unwrap: Callable) -> None:
    """What nnU-Net's `nnUNetTrainer.load_checkpoint` restores, from a loaded checkpoint dict (`unwrap(network)`:
    the plain module under DDP / torch.compile)."""
    if not trainer.was_initialized:
        trainer.initialize()
    network = unwrap(trainer.network)
    own = network.state_dict().keys()
    weights = {(k[7:] if k not in own and k.startswith("module.") else k): v
               for k, v in checkpoint["network_weights"].items()}
    trainer.my_init_kwargs = checkpoint["init_args"]
    trainer.current_epoch = checkpoint["current_epoch"]
    trainer.logger.load_checkpoint(checkpoint["logging"])
    trainer._best_ema = checkpoint["_best_ema"]
    trainer.inference_allowed_mirroring_axes = checkpoint.get("inference_allowed_mirroring_axes",
                                                              trainer.inference_allowed_mirroring_axes)
    network.load_state_dict(weights)
    trainer.optimizer.load_state_dict(checkpoint["optimizer_state"])
    if trainer.grad_scaler is not None and checkpoint["grad_scaler_state"] is not None:
        trainer.grad_scaler.load_state_dict(checkpoint["grad_scaler_state"])
