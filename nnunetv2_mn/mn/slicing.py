"""Between nnU-Net's 3D patches and the 2D model's slices (paper Eq. (2) and (8)).

A patch (B, C, S0, S1, S2) becomes B*S_axis slices (N, C, H, W) along one spatial axis; slice
predictions are stacked back in the same order. Axis 0 is nnU-Net's first spatial axis after
`transpose_forward`, i.e. the largest-spacing (acquisition) axis. Several axes (`predict_views`) give a
multi-view (tri-planar) 2D prediction: the mean of the views' softmax probabilities, or their mean weighted by each
view's smoothed validation Dice (`dice_view_weights`).

How the 2D model's passes run (`SlicePass`) is a matter of cost, not of the method: a teacher's pass with LoRA
merged and under `torch.inference_mode` gives the same pseudo-masks up to float rounding; bf16 on CPU changes the
numerics and is opt-in (docs/benchmarks/cost.md).
"""
import contextlib
import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

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


@dataclass(frozen=True)
class SlicePass:
    """How a pass of the 2D model over the slices runs; the defaults are plain fp32 passes.

    merge_lora:     LoRA adapters merged into the base weights for the pass (`Branch2D.teacher_mode`; eval mode only,
                    i.e. for a teacher). Same output up to float rounding, fewer matmuls.
    inference_mode: the pass under `torch.inference_mode` (a teacher: no autograd bookkeeping at all); the logits are
                    copied to an ordinary tensor afterwards, so they can serve as targets of a student's loss.
    channels_last:  the slices in channels-last memory format (convolutions run on oneDNN / cuDNN NHWC kernels); the
                    caller converts the model once with `model.to(memory_format=torch.channels_last)`.
    cpu_bf16:       the 2D model under bf16 autocast when it runs on CPU, logits returned in fp32. Changes the
                    numerics (opt-in); on CUDA nnU-Net's fp16 autocast applies anyway and this does nothing.
    """
    merge_lora: bool = False
    inference_mode: bool = False
    channels_last: bool = False
    cpu_bf16: bool = False

    @contextlib.contextmanager
    def context(self, model, device: torch.device):
        """Merged LoRA, inference mode and bf16 autocast as set (the model unwrapped from DDP for the merge)."""
        with contextlib.ExitStack() as stack:
            inner = getattr(model, "module", model)
            if self.merge_lora and hasattr(inner, "teacher_mode"):
                stack.enter_context(inner.teacher_mode())
            if self.inference_mode:
                stack.enter_context(torch.inference_mode())
            if self.cpu_bf16 and device.type == "cpu":
                stack.enter_context(torch.autocast("cpu", dtype=torch.bfloat16))
            yield


#: a teacher's pass: LoRA merged, inference mode (same pseudo-masks as a plain pass up to float rounding)
TEACHER_PASS = SlicePass(merge_lora=True, inference_mode=True)


def predict_slices(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, axis: int = 0,
                   chunk_size: int = 0, settings: Optional[SlicePass] = None) -> torch.Tensor:
    """Run the 2D model on every slice of a 3D batch and stack the logits back: (B, K, S0, S1, S2).

    `chunk_size` > 0 bounds how many slices go through the model at once (for teachers under no_grad);
    `settings` says how the pass runs (`SlicePass`; None = a plain pass).
    """
    settings = settings or SlicePass()
    slices = to_three_channels(volume_to_slices(x, axis))
    if settings.channels_last:
        slices = slices.contiguous(memory_format=torch.channels_last)
    with settings.context(model, x.device):
        if chunk_size and slices.shape[0] > chunk_size:
            logits = torch.cat([model(slices[i:i + chunk_size]) for i in range(0, slices.shape[0], chunk_size)])
        else:
            logits = model(slices)
    if settings.cpu_bf16 and x.device.type == "cpu":
        logits = logits.float()
    if logits.is_inference():
        logits = logits.clone()  # an ordinary tensor: inference tensors cannot be saved for a student's backward
    return slices_to_volume(logits, x.shape[0], axis)


def check_slice_axes(axes, default_axis: int = 0) -> Tuple[int, ...]:
    """The spatial axes the 2D model slices along: `None` -> `(default_axis,)`; else distinct axes of 0, 1, 2."""
    if axes is None:
        axes = (default_axis,)
    axes = tuple(axes) if isinstance(axes, (tuple, list)) else (axes,)
    if not axes or len(set(axes)) != len(axes) or any(a not in (0, 1, 2) for a in axes):
        raise ValueError(f"slice_axes must be distinct spatial axes of 0, 1, 2 (or None), got {axes!r}")
    return tuple(int(a) for a in axes)


def view_weights(num_views: int, weights: Optional[Sequence[float]] = None) -> torch.Tensor:
    """Normalised weights of the views: equal when `weights` is None, else `weights / sum(weights)`."""
    if weights is None:
        return torch.full((num_views,), 1.0 / num_views)
    w = torch.as_tensor(weights, dtype=torch.float32)
    if w.shape != (num_views,) or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"view weights must be {num_views} finite non-negative numbers with a positive sum, "
                         f"got {weights!r}")
    return w / w.sum()


#: how the views' probabilities are fused into the pseudo-mask: equal weights, or each view's smoothed validation Dice
VIEW_WEIGHTINGS = ("mean", "val_dice")


def update_view_dice(smoothed: Sequence[float], measured: Sequence[float], momentum: float = 0.9) -> List[float]:
    """One epoch's per-view validation pseudo Dice folded into its exponential moving average, as nnU-Net smooths its
    own pseudo Dice (`momentum * old + (1 - momentum) * new`; the first measurement is taken as is; a NaN measurement
    leaves a view's average unchanged)."""
    if len(smoothed) != len(measured):
        raise ValueError(f"{len(measured)} view Dice values for {len(smoothed)} views")
    out = []
    for old, new in zip(smoothed, measured):
        old, new = float(old), float(new)
        if not math.isfinite(new):
            out.append(old)
        else:
            out.append(new if not math.isfinite(old) else momentum * old + (1 - momentum) * new)
    return out


def dice_view_weights(smoothed: Sequence[float]) -> Optional[Tuple[float, ...]]:
    """Fusion weights from the views' smoothed validation Dice (`view_weighting='val_dice'`): proportional to each
    view's Dice; None (= equal weights) until every view has been measured or when all measure 0."""
    values = [float(v) for v in smoothed]
    if not values or not all(math.isfinite(v) and v >= 0 for v in values) or sum(values) <= 0:
        return None
    return tuple(v / sum(values) for v in values)


def fuse_views(logits: Sequence[torch.Tensor], weights: Optional[Sequence[float]] = None) -> torch.Tensor:
    """Multi-view pseudo-mask: the (weighted) mean over views of the softmax probabilities (Eq. 2 per view)."""
    w = view_weights(len(logits), weights)
    return sum(float(wi) * torch.softmax(l.float(), 1) for wi, l in zip(w, logits))


def predict_views(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, axes: Sequence[int] = (0,),
                  chunk_size: int = 0, weights: Optional[Sequence[float]] = None,
                  settings: Optional[SlicePass] = None) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """The 2D model along each of `axes` (Eq. 2 / 8 per axis): the fused probabilities (`fuse_views`) and the
    per-view logits, all (B, K, S0, S1, S2). `settings` as in `predict_slices`; with merged LoRA the adapters are
    merged once for all views."""
    settings = settings or SlicePass()
    merged = settings.merge_lora and hasattr(getattr(model, "module", model), "teacher_mode")
    with getattr(model, "module", model).teacher_mode() if merged else contextlib.nullcontext():
        logits = [predict_slices(model, x, axis, chunk_size, settings) for axis in check_slice_axes(axes)]
    return fuse_views(logits, weights), logits


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
