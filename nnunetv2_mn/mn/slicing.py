"""Between nnU-Net's 3D patches and the 2D model's slices (paper Eq. (2) and (8)).

A patch (B, C, S0, S1, S2) becomes B*S_axis slices (N, C, H, W) along one spatial axis; slice
predictions are stacked back in the same order. Axis 0 is nnU-Net's first spatial axis after
`transpose_forward`, i.e. the largest-spacing (acquisition) axis.
"""
from typing import Callable, Optional

import torch


def volume_to_slices(x: torch.Tensor, axis: int = 0) -> torch.Tensor:
    """(B, C, S0, S1, S2) -> (B * S_axis, C, H, W), slices of one volume contiguous."""
    if x.ndim != 5:
        raise ValueError(f"expected a 3D batch (B, C, X, Y, Z), got shape {tuple(x.shape)}")
    x = torch.movedim(x, 2 + axis, 2)  # (B, C, S_axis, H, W)
    b, c, s, h, w = x.shape
    return x.transpose(1, 2).reshape(b * s, c, h, w)


def slices_to_volume(s: torch.Tensor, batch_size: int, axis: int = 0) -> torch.Tensor:
    """Inverse of `volume_to_slices`: (B * S_axis, K, H, W) -> (B, K, S0, S1, S2)."""
    n, k, h, w = s.shape
    x = s.reshape(batch_size, n // batch_size, k, h, w).transpose(1, 2)  # (B, K, S_axis, H, W)
    return torch.movedim(x, 2, 2 + axis)


def to_three_channels(x: torch.Tensor) -> torch.Tensor:
    """nnU-Net's normalised C-channel slices -> the 3 channels a natural-image model expects.

    C=1: repeated three times (as the official M&N code does). C=2: (c0, c1, (c0 + c1) / 2).
    C=3: unchanged. C>3: three groups of channels (k, k+3, k+6, ...) averaged, group k -> channel k.
    """
    c = x.shape[1]
    if c == 1:
        return x.expand(-1, 3, -1, -1)
    if c == 2:
        return torch.cat((x, x.mean(1, keepdim=True)), 1)
    if c == 3:
        return x
    return torch.stack([x[:, k::3].mean(1) for k in range(3)], 1)


def predict_slices(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, axis: int = 0,
                   chunk_size: int = 0) -> torch.Tensor:
    """Run the 2D model on every slice of a 3D batch and stack the logits back: (B, K, S0, S1, S2).

    `chunk_size` > 0 bounds how many slices go through the model at once (for teachers under no_grad).
    """
    slices = to_three_channels(volume_to_slices(x, axis))
    if chunk_size and slices.shape[0] > chunk_size:
        logits = torch.cat([model(slices[i:i + chunk_size]) for i in range(0, slices.shape[0], chunk_size)])
    else:
        logits = model(slices)
    return slices_to_volume(logits, x.shape[0], axis)


def check_slice_fraction(fraction: float, name: str = "slice fraction") -> None:
    """A share of slices must lie in (0, 1]."""
    if not 0 < fraction <= 1:
        raise ValueError(f"{name} must be in (0, 1], got {fraction}")


def sample_slice_index(num_slices: int, fraction: float, device=None) -> Optional[torch.Tensor]:
    """A random, sorted subset of max(1, round(fraction * num_slices)) slice positions; None (= all
    slices) when `fraction` >= 1. The 2D student learns from these slices of every patch in a step."""
    check_slice_fraction(fraction)
    k = max(1, int(round(fraction * num_slices)))
    if k >= num_slices:
        return None
    return torch.randperm(num_slices)[:k].sort().values.to(device)


def take_slices(x: torch.Tensor, index: Optional[torch.Tensor], axis: int = 0) -> torch.Tensor:
    """The slices `index` of a (B, C, S0, S1, S2) batch along spatial `axis` (all when `index` is None)."""
    return x if index is None else x.index_select(2 + axis, index)
