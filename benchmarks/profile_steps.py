"""Where a CPU training step of M&N spends its time: torch.profiler over each step kind of `step_cost.py`.

The step kinds (nnunet, stage1, 3d_student, 2d_student, 2d_teacher) and their inputs are `step_cost.build_steps`'s,
so this profiles exactly what step_cost.py times. For each 2D model, after one warm-up round, every step kind runs
`--steps` times under torch.profiler (CPU activity); the table gives the operators with the largest self CPU time
per step, and the time inside labelled scopes (record_function through forward hooks; forward passes only, backward
ops run outside them): the 2D model, its LoRA adapters (lora_A, lora_B, their dropout; the scaling and the sum with
the base output are not counted), and the 3D network.

    python benchmarks/profile_steps.py -d 508 --out docs/benchmarks/profile_cpu.md
"""
import argparse
import os
import sys
import time
from typing import Dict, List

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import step_cost  # noqa: E402  (benchmarks/step_cost.py)

KINDS = ("nnunet", "stage1", "3d_student", "2d_student", "2d_teacher")
MODELS = {"segformer-b2-lora": ("segformer-b2", "lora"), "effnet_lite0-lora": ("effnet_lite0", "lora")}
SCOPES = {"2d": "scope: 2D model forward", "lora": "scope: LoRA adapters forward", "3d": "scope: 3D network forward"}


def add_scope(module: torch.nn.Module, name: str) -> None:
    """Every forward call of `module` runs inside record_function(name)."""
    stack: List[record_function] = []

    def pre(_m, _inp):
        rf = record_function(name)
        rf.__enter__()
        stack.append(rf)

    def post(_m, _inp, _out):
        stack.pop().__exit__(None, None, None)

    module.register_forward_pre_hook(pre)
    module.register_forward_hook(post)


def label_scopes(bench: dict) -> None:
    mn, base = bench["mn"], bench["base"]
    add_scope(mn.branch2d, SCOPES["2d"])
    for name, m in mn.branch2d.named_modules():
        parent = name.rpartition(".")[0].rpartition(".")[2]
        if parent in ("lora_A", "lora_B", "lora_dropout"):  # ModuleDict entries of peft's LoraLayer
            add_scope(m, SCOPES["lora"])
    for net in (mn.network, base.network):
        add_scope(net, SCOPES["3d"])


def profile_kind(fn, steps: int) -> dict:
    """Operators' self CPU time (ms per step) and the scopes' inclusive CPU time of `steps` calls of `fn`."""
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            fn()
    wall = (time.perf_counter() - t0) / steps
    ops, scopes = [], {}
    for e in prof.key_averages():
        if e.key in SCOPES.values():
            scopes[e.key] = e.cpu_time_total / 1e3 / steps
        else:
            ops.append((e.key, e.self_cpu_time_total / 1e3 / steps, e.count // steps))
    ops.sort(key=lambda o: -o[1])
    return {"wall_ms": wall * 1e3, "self_total_ms": sum(o[1] for o in ops), "ops": ops, "scopes": scopes}


def run_model(label: str, a) -> Dict[str, dict]:
    model, finetune = MODELS[label]
    args = step_cost.make_parser().parse_args(["-d", a.d, "-c", a.c, "--device", "cpu", "--model", model,
                                               "--finetune", finetune, "--out", os.devnull])
    bench = step_cost.build_steps(args, KINDS)
    for fn in bench["steps"].values():  # warm-up round (allocator, oneDNN primitives)
        fn()
    label_scopes(bench)
    out = {"meta": bench["meta"]}
    for kind in KINDS:
        out[kind] = profile_kind(bench["steps"][kind], a.steps)
        print(f"{label} {kind}: {out[kind]['wall_ms']:.0f} ms per step", flush=True)
    return out


def render(results: Dict[str, Dict[str, dict]], a, top: int) -> str:
    lines = []
    for label, res in results.items():
        meta = res["meta"]
        lines.append(f"### {label}: patch {meta['patch_size']}, batch {meta['batch_size']} (b_u = {meta['b_u']}), "
                     f"{meta['threads']} threads\n")
        lines.append(f"2D model: {meta['trainable_2d']}.\n")
        for kind in KINDS:
            r = res[kind]
            s = r["scopes"]
            scope_txt = "; ".join(f"{k.removeprefix('scope: ')} {v:.0f} ms ({v / r['wall_ms']:.0%})"
                                  for k, v in s.items()) or "no labelled scope"
            lines.append(f"**{kind}**: {r['wall_ms']:.0f} ms per step (wall), operators' self CPU time "
                         f"{r['self_total_ms']:.0f} ms. Inside scopes (forward, inclusive): {scope_txt}.\n")
            lines.append("| operator | self CPU (ms per step) | share of the step | calls per step |")
            lines.append("|---|---|---|---|")
            for name, ms, n in r["ops"][:top]:
                lines.append(f"| `{name}` | {ms:.1f} | {ms / r['wall_ms']:.1%} | {n} |")
            lines.append("")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-d", required=True, help="data set whose nnU-Net plans set patch and batch (as step_cost.py)")
    p.add_argument("-c", default="3d_fullres")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--steps", type=int, default=1, help="profiled calls per step kind")
    p.add_argument("--top", type=int, default=8)
    p.add_argument("--out", required=True, help="Markdown file of the tables (the text around them is written by hand)")
    a = p.parse_args()
    t0 = time.time()
    results = {label: run_model(label, a) for label in a.models}
    text = render(results, a, a.top)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        f.write(text + "\n")
    print(text)
    print(f"profiled in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
