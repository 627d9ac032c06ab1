"""A training step's logged values: computed on the device, read by the host once per step.

The trainers' steps return their losses, agreement and shares as detached tensors; `to_host` copies every tensor
value of a step's results in one transfer, so that a step waits for the device once, as nnU-Net's own
`train_step` does (`loss.detach().cpu().numpy()`), instead of at every `.item()`.
"""
from typing import Dict, List

import numpy as np
import torch


def to_host(*results: Dict) -> List[Dict]:
    """`results` with each tensor value replaced by a Python float (a 0-d tensor) or a numpy array, all tensors
    stacked and copied to the host in a single transfer. Values that are not tensors are kept as they are."""
    tensors = [(i, k, v) for i, r in enumerate(results) for k, v in r.items() if isinstance(v, torch.Tensor)]
    out = [dict(r) for r in results]
    if not tensors:
        return out
    flat = torch.cat([v.detach().reshape(-1).float() for _, _, v in tensors]).cpu().numpy()
    offset = 0
    for i, k, v in tensors:
        n = v.numel()
        values = flat[offset:offset + n]
        out[i][k] = float(values[0]) if v.ndim == 0 else values.reshape(tuple(v.shape))
        offset += n
    return out


def merge_step_results(results: List[Dict]) -> Dict:
    """One iteration's values from the steps of its students (host values, `to_host`): a value both give
    (agreement, b_u) is averaged, ignoring NaN."""
    merged = {}
    for key in dict.fromkeys(k for r in results for k in r):
        values = [r[key] for r in results if key in r]
        if len(values) == 1:
            merged[key] = values[0]
        else:
            values = np.asarray(values, dtype=float)
            merged[key] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    return merged
