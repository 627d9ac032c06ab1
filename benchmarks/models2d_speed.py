"""Time the 2D branches: one training step and one inference pass on a stack of slices.

    python -m benchmarks.models2d_speed [--device cuda] [--slices 64] [--size 160] [--threads 2]

Weights do not matter for speed, so HF models are built from configs (SegFormer-B2 architecture) and
CNN encoders without pretrained weights; nothing is downloaded.
"""
import argparse
import time
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F


def _segformer_b2_config():
    from transformers import SegformerConfig

    return SegformerConfig(depths=[3, 4, 6, 3], hidden_sizes=[64, 128, 320, 512], num_attention_heads=[1, 2, 5, 8],
                           decoder_hidden_size=768, num_labels=150)


def candidates() -> Dict[str, Callable[[str], torch.nn.Module]]:
    from nnunetv2_mn.models2d.registry import build_branch2d

    return {
        "segformer-b2": lambda ft: build_branch2d("segformer", 2, ft, config=_segformer_b2_config()),
        "effnet_lite0-unet": lambda ft: build_branch2d("effnet_lite0", 2, ft, source="random"),
        "resnet50-unet": lambda ft: build_branch2d("resunet", 2, ft),
    }


def time_branch(branch: torch.nn.Module, x: torch.Tensor, repeats: int = 3, amp: bool = False) -> Tuple[float, float]:
    """Median seconds of (train step, inference pass) on `x`."""
    device = x.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    y = torch.randint(0, 2, (x.shape[0], *x.shape[2:]), device=device)
    opt = torch.optim.AdamW([p for p in branch.parameters() if p.requires_grad], lr=1e-4)
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)  # noqa: E731
    train: List[float] = []
    branch.train()
    for _ in range(repeats + 1):
        sync(); start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = F.cross_entropy(branch(x).float(), y)
        loss.backward()
        opt.step()
        sync(); train.append(time.perf_counter() - start)
    infer: List[float] = []
    branch.eval()
    with torch.no_grad():
        for _ in range(repeats + 1):
            sync(); start = time.perf_counter()
            with autocast():
                branch(x)
            sync(); infer.append(time.perf_counter() - start)
    median = lambda v: sorted(v[1:])[len(v[1:]) // 2]  # noqa: E731 (first run = warm-up)
    return median(train), median(infer)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--slices", type=int, default=16)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--models", nargs="*", default=None)
    parser.add_argument("--finetune", nargs="*", default=["lora", "decoder", "whole"])
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    x = torch.randn(args.slices, 3, args.size, args.size, device=device)
    print(f"device={device} slices={args.slices} size={args.size} threads={torch.get_num_threads()} amp={args.amp}")
    for name, make in candidates().items():
        if args.models and name not in args.models:
            continue
        for finetune in args.finetune:
            torch.manual_seed(0)
            branch = make(finetune).to(device)
            train, infer = time_branch(branch, x, amp=args.amp)
            n_train = sum(p.numel() for p in branch.parameters() if p.requires_grad)
            peak = f" peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device.type == "cuda" else ""
            print(f"{name:18s} {finetune:8s} trainable {n_train / 1e6:6.2f} M  train {1000 * train / args.slices:7.1f} "
                  f"ms/slice  infer {1000 * infer / args.slices:6.1f} ms/slice{peak}", flush=True)
            del branch
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()


if __name__ == "__main__":
    main()
