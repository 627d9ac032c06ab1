"""Cost of one training step of nnUNetTrainerMN relative to nnUNetTrainer on the same plans and batch.

Measures, in one process and on one device, the mean time (and peak GPU memory on CUDA) of the step kinds below,
timed in turns (nnunet, stage1, 3d_student, ..., nnunet, stage1, ...) so that a drifting machine speed slows all alike:
  nnunet      stock nnUNetTrainer.train_step (the baseline)
  stage1      M&N stage 1: 3D and 2D models each learn from the labelled batch
  3d_student  M&N 3D epoch: 2D teacher pseudo-masks (no grad) + 3D student step, b_u = B // 2
  2d_student  M&N 2D epoch: 3D teacher pseudo-masks (no grad) + 2D student step, b_u = B // 2
              (both with the trainer's `unlabeled_samples`: the b_u unlabelled samples on top of the B labelled
              ones, the default 'add', or in place of labelled ones, 'replace' with --replace-unlabeled)
  2d_teacher  the 2D teacher's slice-wise inference alone (part of 3d_student)
  predict     sliding-window prediction of one volume (2x the patch per axis) with nnU-Net's predictor,
              nnUNetTrainer's network vs M&N's (only the 3D network predicts; same architecture)
The peers (not timed unless named in --kinds; no 2D model), each the trainer's own step on B labelled samples and
b_u unlabelled ones on top (their default batch; b_u = B // 2, the share of their `sampling='fixed'`):
  mean_teacher  nnUNetTrainerMeanTeacher: EMA teacher forward (no grad) + student step + EMA update
  uamt          nnUNetTrainerUAMT: as mean_teacher, + 8 noisy teacher passes for the uncertainty mask
  dtc           nnUNetTrainerDTC: nnU-Net's step with the level-set head, signed distances and dual-task consistency
  self_training nnUNetTrainerSelfTraining's student: nnU-Net's step on B labelled + B pseudo-labelled samples (its
                uniform draw from 8 labelled and 152 pseudo-labelled cases gives b_u = 0.95 B on average); its
                teacher's steps are nnU-Net's
Random inputs of the plans' patch and batch size (the cost depends on shapes only). The 2D model is
SegFormer-B2's architecture built from its config (random weights: no download) or the offline EfficientNet-Lite0
U-Net; `--slice-fraction` sets nnUNetTrainerMN.student2d_slice_fraction, `--slice-axes 0 1 2` its slice_axes (the
tri-planar 2D model: the 2D teacher and student cost about one view's cost per axis). On CPU, `--memory` also runs every
step kind alone in a fresh process and records its peak resident memory (on CUDA: peak allocated GPU memory).

The plans come from a preprocessed data set (`-d`, nnU-Net's nnUNetPlans.json in nnUNet_preprocessed) or from a
synthetic preset (`--plans hippocampus|la`, nnunetv2_mn.plans.presets: the benchmark's Hippocampus plans, or the
paper's LA setting, patch 64x160x160), which needs no data at all. `--kinds` times a subset of the step kinds (on
CPU an LA-sized step takes minutes).

    python benchmarks/step_cost.py -d 504 -c 3d_fullres --device cuda --out docs/benchmarks/cost_h100.json
    python benchmarks/step_cost.py --plans la --kinds nnunet stage1 --steps 2 --warmup 1 --out /tmp/la.json
    python benchmarks/step_cost.py --plans hippocampus --trainer-defaults --ab --out /tmp/defaults.json  # shipped vs off
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np
import torch

SEGFORMER_B2 = {"model_type": "segformer", "depths": [3, 4, 6, 3], "hidden_sizes": [64, 128, 320, 512],
                "num_attention_heads": [1, 2, 5, 8], "decoder_hidden_size": 768}


def cpu_model() -> str:
    """The processor's model name (Linux /proc/cpuinfo), else what `platform` knows."""
    try:
        for line in open("/proc/cpuinfo").read().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_trainer(cls, dataset, configuration, device):
    from batchgenerators.utilities.file_and_folder_operations import join, load_json
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    folder = join(nnUNet_preprocessed, maybe_convert_to_dataset_name(dataset))
    plans = load_json(join(folder, "nnUNetPlans.json"))
    plans["continue_training"] = False
    trainer = cls(plans, configuration, "all", load_json(join(folder, "dataset.json")), device=device)
    if os.path.isdir(trainer.preprocessed_dataset_folder):
        trainer.initialize()
    else:  # a plans preset: no preprocessed images, from which initialize() infers the file format of the data set
        from unittest import mock

        import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as nnunet_trainer_module
        from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

        with mock.patch.object(nnunet_trainer_module, "infer_dataset_class", lambda _folder: nnUNetDatasetBlosc2):
            trainer.initialize()
    return trainer


def use_plans_preset(name: str) -> str:
    """Write the plans preset `name` into a fresh temporary nnUNet_preprocessed (nnUNet_results too, unless set) and
    return its data set name, for `load_trainer`."""
    import tempfile

    from nnunetv2_mn.plans.presets import preset_plans, write_preset

    work = tempfile.mkdtemp(prefix=f"step_cost_{name}_")
    os.environ["nnUNet_preprocessed"] = os.path.join(work, "nnUNet_preprocessed")
    os.environ.setdefault("nnUNet_results", os.path.join(work, "nnUNet_results"))
    write_preset(name, os.environ["nnUNet_preprocessed"])
    return preset_plans(name)["dataset_name"]


def random_batch(trainer, n):
    ps = trainer.configuration_manager.patch_size
    x = torch.randn(n, trainer.num_input_channels, *ps, device=trainer.device)
    with torch.no_grad():
        outs = trainer.network(x[:1])
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    k = trainer.label_manager.num_segmentation_heads
    target = [torch.randint(0, k, (n, 1, *o.shape[2:]), device=trainer.device).float() for o in outs]
    return x, target


def timed_round_robin(fns: dict, steps, warmup, device, clock: str = "wall") -> dict:
    """Time several step kinds in turns (a, b, c, a, b, c, ...), so that a machine whose speed drifts during the
    run (a shared CPU) slows every kind alike and the ratios stay fair. Peak GPU memory is taken per call. A value
    may be a pair (prepare, fn): `prepare()` runs untimed before each call of `fn`.

    `mean_s` is the mean wall time per call, or with clock='cpu' the mean CPU time of this process per call (CPU
    only): on a machine shared with other jobs the wall time includes waiting for a core, the CPU time only the work
    (with one thread, `OMP_NUM_THREADS=1`, it equals the wall time of an idle machine). Both are recorded."""
    if clock == "cpu" and device.type != "cpu":
        raise ValueError("clock='cpu' times CPU work; on CUDA the work is the GPU's: use the wall clock")
    fns = {k: v if isinstance(v, tuple) else (None, v) for k, v in fns.items()}
    for _ in range(warmup):
        for prepare, fn in fns.values():
            if prepare:
                prepare()
            fn()
    times = {k: [] for k in fns}
    cpu_times = {k: [] for k in fns}
    peaks = {k: 0.0 for k in fns}
    for _ in range(steps):
        for k, (prepare, fn) in fns.items():
            if prepare:
                prepare()
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
                peaks[k] = max(peaks[k], torch.cuda.max_memory_allocated() / 2 ** 30)
            times[k].append(time.perf_counter() - t0)
            cpu_times[k].append(time.process_time() - c0)
    out = {}
    for k in fns:
        v = cpu_times[k] if clock == "cpu" else times[k]
        out[k] = {"mean_s": float(np.mean(v)), "std_s": float(np.std(v)), "mean_wall_s": float(np.mean(times[k])),
                  "mean_cpu_s": float(np.mean(cpu_times[k])), "peak_gb": peaks[k] if device.type == "cuda" else None}
    return out


def _proc_status_gb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 2 ** 20  # kB
    raise RuntimeError(f"{key} not in /proc/self/status")


def rss_gb() -> float:
    """Resident memory of this process now (Linux)."""
    return _proc_status_gb("VmRSS")


def reset_peak_rss() -> None:
    """Start a new peak-RSS window (Linux >= 4.0: writing 5 to clear_refs resets VmHWM)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_gb() -> float:
    """Peak resident memory since the last `reset_peak_rss` (Linux VmHWM)."""
    return _proc_status_gb("VmHWM")


PHASES = ("nnunet", "stage1", "3d_student", "2d_teacher", "2d_student", "predict")
#: step kinds of the peer trainers (--kinds): kind -> trainer class of nnunetv2_mn.trainers
PEERS = {"mean_teacher": "nnUNetTrainerMeanTeacher", "uamt": "nnUNetTrainerUAMT", "dtc": "nnUNetTrainerDTC",
         "self_training": "nnUNetTrainerSelfTraining"}
#: the kinds that need the M&N trainer
MN_KINDS = ("stage1", "3d_student", "2d_teacher", "2d_student", "predict")
PLAIN = ":without_levers"  # suffix of the kinds timed without the levers (--ab)


def predictor_for(trainer, device):
    """A call of nnU-Net's sliding-window prediction (no mirroring) of a random volume twice the patch per axis."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=device.type == "cuda", device=device, verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    trainer.set_deep_supervision_enabled(False)
    trainer.network.eval()
    predictor.manual_initialization(trainer.network, trainer.plans_manager, trainer.configuration_manager, None,
                                    trainer.dataset_json, trainer.__class__.__name__, None)
    volume = torch.randn(trainer.num_input_channels, *[2 * p for p in trainer.configuration_manager.patch_size])
    return lambda: predictor.predict_sliding_window_return_logits(volume)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    plans = p.add_mutually_exclusive_group(required=True)
    plans.add_argument("-d", help="preprocessed data set (name or id) whose nnUNetPlans set patch, batch and network")
    plans.add_argument("--plans", choices=("hippocampus", "la"),
                       help="a synthetic plans preset instead (nnunetv2_mn.plans.presets; no data needed)")
    p.add_argument("-c", default="3d_fullres")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--finetune", default="lora")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="what mean_s and the ratios measure: wall time per step, or (CPU only) this process's CPU "
                        "time per step, the robust choice on a machine shared with other jobs (with OMP_NUM_THREADS=1)")
    p.add_argument("--model", default="segformer-b2", choices=["segformer-b2", "effnet_lite0"],
                   help="2D model: SegFormer-B2's architecture (random weights) or the offline EfficientNet-Lite0 U-Net")
    p.add_argument("--slice-fraction", type=float, default=1.0,
                   help="nnUNetTrainerMN.student2d_slice_fraction (share of slices the 2D student learns from)")
    p.add_argument("--slice-axes", type=int, nargs="+", default=None, choices=(0, 1, 2),
                   help="nnUNetTrainerMN.slice_axes (default: one view, the trainer's slice_axis)")
    levers = p.add_argument_group("cost levers",
                                  "the same method, cheaper passes of the 2D model (docs/benchmarks/cost.md)")
    levers.add_argument("--teacher-merge-lora", action="store_true",
                        help="the 2D teacher's passes with LoRA merged into the base weights (Branch2D.teacher_mode)")
    levers.add_argument("--teacher-inference-mode", action="store_true",
                        help="the 2D teacher's passes under torch.inference_mode instead of no_grad")
    levers.add_argument("--teacher-chunk", type=int, default=None,
                        help="nnUNetTrainerMN.teacher_slice_chunk (slices per teacher forward; default: the trainer's)")
    levers.add_argument("--channels-last", action="store_true",
                        help="the 2D model and its slices in channels-last memory format (teacher and student)")
    levers.add_argument("--cpu-bf16", action="store_true",
                        help="the 2D model under bf16 autocast on CPU (teacher and student; changes numerics)")
    p.add_argument("--replace-unlabeled", action="store_true",
                   help="the paper's batch (unlabeled_samples='replace', b_l = B - b_u) instead of the default 'add'")
    levers.add_argument("--trainer-defaults", action="store_true",
                        help="also the levers nnUNetTrainerMN switches on by default (its teacher_merge_lora, "
                             "channels_last_2d, cpu_bf16_2d); with --ab: the trainer as shipped vs all levers off")
    levers.add_argument("--ab", action="store_true",
                        help="also time every M&N kind without the levers, in the same process and in turns "
                             f"(keys '<kind>{PLAIN}'): the levers' effect free of the machine's drift")
    p.add_argument("--memory", action="store_true",
                   help="CPU: also measure each step kind's peak resident memory in a process of its own")
    p.add_argument("--kinds", nargs="+", choices=(*PHASES, *PEERS), default=list(PHASES),
                   help="the step kinds to time (default: nnU-Net's and M&N's; 'nnunet' is always timed, every ratio "
                        f"needs it; the peers' kinds {', '.join(PEERS)} only when named)")
    p.add_argument("--only", choices=(*PHASES, *PEERS), default=None, help=argparse.SUPPRESS)  # for --memory
    p.add_argument("--out", required=True)
    return p


#: the trainer's lever attributes (nnUNetTrainerMN) and the command-line flags (argparse dests) that set them
TRAINER_LEVERS = {"teacher_merge_lora": "teacher_merge_lora", "channels_last_2d": "channels_last",
                  "cpu_bf16_2d": "cpu_bf16"}


def use_trainer_defaults(a) -> None:
    """--trainer-defaults: switch on, in `a`, every lever that nnUNetTrainerMN's class attributes switch on."""
    if getattr(a, "trainer_defaults", False):
        from nnunetv2_mn.trainers.mn import nnUNetTrainerMN

        for attr, dest in TRAINER_LEVERS.items():
            setattr(a, dest, getattr(a, dest) or bool(getattr(nnUNetTrainerMN, attr)))


def levers(a) -> dict:
    """The cost levers the command line `a` switches on; every other one is off (all off: plain passes of the 2D
    model, the trainer before issue #12's levers)."""
    return {"teacher_merge_lora": a.teacher_merge_lora, "teacher_inference_mode": a.teacher_inference_mode,
            "teacher_slice_chunk": a.teacher_chunk, "channels_last_2d": a.channels_last, "cpu_bf16_2d": a.cpu_bf16}


def mn_cost_class(a):
    """nnUNetTrainerMN with the 2D model and settings of the command line `a` (no download: random SegFormer-B2
    weights from its config, or the offline EfficientNet-Lite0 U-Net). The cost levers are the trainer's own settings
    (`teacher_merge_lora`, `channels_last_2d`, `cpu_bf16_2d`, used by its `slice_pass` and `initialize`), set from the
    flags: a lever not named is off. The teacher's inference mode, not a trainer setting, is added to its `slice_pass`
    here."""
    import dataclasses

    from nnunetv2_mn.trainers.mn import nnUNetTrainerMN

    on = levers(a)

    class MNCost(nnUNetTrainerMN):
        branch2d_kind = "segformer" if a.model == "segformer-b2" else "effnet_lite0"
        branch2d_source = None
        branch2d_config = SEGFORMER_B2 if a.model == "segformer-b2" else None
        branch2d_finetune = a.finetune
        student2d_slice_fraction = a.slice_fraction
        slice_axes = None if a.slice_axes is None else tuple(a.slice_axes)
        teacher_slice_chunk = nnUNetTrainerMN.teacher_slice_chunk if a.teacher_chunk is None else a.teacher_chunk
        teacher_merge_lora = on["teacher_merge_lora"]
        channels_last_2d = on["channels_last_2d"]
        cpu_bf16_2d = on["cpu_bf16_2d"]
        teacher_inference_mode = on["teacher_inference_mode"]
        unlabeled_samples = "replace" if getattr(a, "replace_unlabeled", False) else nnUNetTrainerMN.unlabeled_samples
        levers_on = True

        def slice_pass(self, teacher):
            settings = super().slice_pass(teacher)
            return dataclasses.replace(settings, inference_mode=teacher and self.teacher_inference_mode)

        def set_levers(self, active: bool):
            """Switch the levers on or off (--ab; the 2D model's memory format converted untimed)."""
            if active == self.levers_on:
                return
            if on["channels_last_2d"]:
                self.branch2d.to(memory_format=torch.channels_last if active else torch.contiguous_format)
            for attr in (*TRAINER_LEVERS, "teacher_inference_mode"):
                setattr(self, attr, on[attr] and active)
            self.levers_on = active

    return MNCost


def build_steps(a, phases=PHASES) -> dict:
    """The trainers of the command line `a`, a random batch and one callable per step kind of `phases` (without
    'predict'): {'base', 'mn', 'device', 'x', 'target', 'batch_size', 'b_u', 'steps', 'meta'}. `meta` describes the
    set-up for the JSON. Each M&N step kind is the trainer's own method; stage2_students='pair' does a 3D- and a
    2D-student step per iteration, the paper's alternation one of them."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    device = torch.device(a.device)
    if a.plans and not a.d:
        a.d = use_plans_preset(a.plans)
    torch.manual_seed(0)
    base = load_trainer(nnUNetTrainer, a.d, a.c, device) if {"nnunet", "predict"} & set(phases) else None
    mn = load_trainer(mn_cost_class(a), a.d, a.c, device) if set(phases) & set(MN_KINDS) else None
    peers = {k: load_trainer(peer_class(k), a.d, a.c, device) for k in PEERS if k in phases}
    some = base or mn or next(iter(peers.values()))
    B = some.batch_size
    x, target = random_batch(some, B)
    b_u = B // 2
    # the student steps' batch (M&N kinds only): unlabelled samples on top of the labelled batch, or in its place
    x_l, tl, x_u = student_batch(mn, x, target, b_u) if mn else (x, target, None)
    b_l = x_l.shape[0]
    meta = {"device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
            "cpu": cpu_model(), "cpu_cores": len(os.sched_getaffinity(0)),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "plans": a.plans or a.d,
            "patch_size": list(some.configuration_manager.patch_size), "batch_size": B, "b_u": b_u, "b_l": b_l,
            "unlabeled_samples": mn.unlabeled_samples if mn else None,
            "amp": device.type == "cuda", "compile_3d": some._do_i_compile(), "2d_model": f"{a.model} ({a.finetune})",
            "student2d_slice_fraction": a.slice_fraction, "slice_axes": list(mn.slice_axes) if mn else None,
            "levers": levers(a),
            "trainable_2d": mn.branch2d.describe() if mn else None}

    def teacher():
        with torch.no_grad(), mn.autocast():
            mn.forward_2d(x_u, teacher=True)

    def as_teacher():  # the 2D model as the 3D student's teacher (each step sets its own modes)
        mn.branch2d.eval()
        mn.network.train()

    # each M&N step with the copy of its logged values to the host, as its train_step does (nnU-Net's step has its own)
    from nnunetv2_mn.training.step_results import to_host

    step = {"nnunet": lambda: base.train_step({"data": x, "target": target}),
            "stage1": lambda: to_host(mn.stage1_step(x, target)),
            "3d_student": lambda: to_host(mn.train_3d_student(x_l, tl, x_u)),
            "2d_teacher": lambda: (as_teacher(), teacher()),
            "2d_student": lambda: to_host(mn.train_2d_student(x_l, tl, x_u))}
    for k, trainer in peers.items():
        step[k] = peer_step(k, trainer, x, target)
    steps = {k: step[k] for k in phases if k != "predict"}
    if getattr(a, "ab", False):  # every M&N kind with and without the levers, in turns
        steps = {name: fn for k, f in steps.items() for name, fn in (
            ((k, f),) if k == "nnunet" or k in PEERS else
            ((k, (lambda: mn.set_levers(True), f)), (k + PLAIN, (lambda: mn.set_levers(False), f))))}
    return {"base": base, "mn": mn, "device": device, "x": x, "target": target, "batch_size": B, "b_u": b_u,
            "steps": steps, "meta": meta}


def student_batch(trainer, x, target, b_u: int):
    """The labelled part and the b_u unlabelled samples of a semi-supervised step with `trainer`'s batch
    (`unlabeled_samples`): the whole labelled batch and b_u random samples on top, or b_l = B - b_u labelled samples
    and the batch's last b_u samples in their place."""
    B = x.shape[0]
    b_l = trainer.num_labeled(b_u)
    x_u = random_batch(trainer, b_u)[0] if b_l == B else x[B - b_u:]
    return x[:b_l], [t[:b_l] for t in target], x_u


def peer_class(kind: str):
    """The peer trainer of step kind `kind` (its class of nnunetv2_mn.trainers, as shipped)."""
    import nnunetv2_mn.trainers as trainers

    return getattr(trainers, PEERS[kind])


def peer_step(kind: str, trainer, x, target):
    """One training step of a peer trainer on the labelled batch (x, target) and b_u random unlabelled samples, with
    the copy of its logged values to the host, as its train_step does (the loader's draw aside)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunetv2_mn.training.step_results import to_host

    B = x.shape[0]
    if kind == "self_training":  # the student: nnU-Net's step on the labelled and pseudo-labelled samples
        x_u, t_u = random_batch(trainer, B)
        data = torch.cat((x, x_u))
        labels = [torch.cat(pair) for pair in zip(target, t_u)]
        return lambda: nnUNetTrainer.train_step(trainer, {"data": data, "target": labels})
    x_l, tl, x_u = student_batch(trainer, x, target, B // 2)
    return lambda: to_host(trainer.semi_supervised_step(x_l, tl, x_u))


def main():
    if sys.argv[1:2] == ["--render"]:  # step_cost.py --render A.json B.json ...: the Markdown table
        print(render_table(sys.argv[2:]))
        return
    if sys.argv[1:2] == ["--render-peers"]:  # step_cost.py --render-peers A.json ...: the peers' step costs
        print(render_peer_table(sys.argv[2:]))
        return
    if sys.argv[1:2] == ["--render-levers"]:  # step_cost.py --render-levers A.json ...: the --ab speed-ups
        print(render_lever_table(sys.argv[2:]))
        return
    p = make_parser()
    a = p.parse_args()
    use_trainer_defaults(a)
    device = torch.device(a.device)
    if a.cpu_bf16 and device.type != "cpu":
        p.error("--cpu-bf16 is bf16 autocast of the 2D model on the CPU (nnUNetTrainerMN.cpu_bf16_2d, CPU only); on "
                "CUDA nnU-Net's autocast covers the 2D model already")
    if a.memory and (device.type != "cpu" or not os.path.exists("/proc/self/clear_refs")):
        p.error("--memory measures CPU resident memory through Linux /proc; on CUDA the peak GPU memory of "
                "every step kind is recorded anyway")
    phases = tuple(k for k in (*PHASES, *PEERS) if k in a.kinds or k == "nnunet") if a.only is None else (a.only,)
    bench = build_steps(a, phases)
    base, mn = bench["base"], bench["mn"]
    res = {**bench["meta"], "steps": a.steps, "clock": a.clock}
    if a.only:
        res["rss_after_setup_gb"] = rss_gb()
        reset_peak_rss()
    res.update(timed_round_robin(bench["steps"], a.steps, a.warmup, device, a.clock))
    if "predict" in phases:
        mn.set_levers(True)  # only the 3D network predicts: the levers do not touch prediction
        res.update(timed_round_robin({"predict_nnunet": predictor_for(base, device),
                                      "predict_mn": predictor_for(mn, device)}, max(2, a.steps // 3), 1, device,
                                     a.clock))
    if a.only:
        res["peak_rss_gb"] = peak_rss_gb()
    if a.only is None:
        res["ratio_to_nnunet"] = ratios(res)
        if a.ab:
            plain = {k[:-len(PLAIN)]: v for k, v in res.items() if k.endswith(PLAIN)}
            res["ratio_to_nnunet" + PLAIN] = ratios({**plain, "nnunet": res["nnunet"]})
            res["lever_speedup"] = {k: v["mean_s"] / res[k]["mean_s"] for k, v in plain.items()}
    if a.memory and a.only is None:
        res["memory_cpu"] = phase_memory(a)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
    print(json.dumps(res, indent=2))


def ratios(res: dict) -> dict:
    """Mean step time of each M&N and peer kind timed in `res` over nnU-Net's, the stage-2 pair (mean of the 3D- and
    the 2D-student step) and prediction (M&N's network over nnU-Net's)."""
    t0 = res["nnunet"]["mean_s"]
    out = {k: res[k]["mean_s"] / t0 for k in ("stage1", "3d_student", "2d_student", "2d_teacher", *PEERS) if k in res}
    if "3d_student" in res and "2d_student" in res:
        out["mean_stage2_epoch_pair"] = (res["3d_student"]["mean_s"] + res["2d_student"]["mean_s"]) / 2 / t0
    if "predict_mn" in res:
        out["predict"] = res["predict_mn"]["mean_s"] / res["predict_nnunet"]["mean_s"]
    return out


LEVER_NAMES = {"teacher_merge_lora": "merged LoRA", "teacher_inference_mode": "inference mode",
               "channels_last_2d": "channels-last", "cpu_bf16_2d": "bf16"}


def lever_text(on) -> str:
    """' + merged LoRA, inference mode' etc. for the levers switched on ('' for none)."""
    names = [v for k, v in LEVER_NAMES.items() if on and on.get(k)]
    if on and on.get("teacher_slice_chunk"):
        names.append(f"teacher chunk {on['teacher_slice_chunk']}")
    return " + " + ", ".join(names) if names else ""


def render_table(paths) -> str:
    """Markdown table of step_cost.py results (one row per JSON file): time ratios to nnUNetTrainer, measured
    in the same process, and the peak memory of each step kind."""
    head = ("| 2D model (fine-tuning) | slice share | nnU-Net step (s) | stage 1 | 3D student | of which 2D teacher | "
            "2D student | stage-2 pair | prediction | step memory: nnU-Net / stage 1 / 3D st. / 2D st. (GiB) |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]
    for path in paths:
        with open(path) as f:
            r = json.load(f)
        q = r["ratio_to_nnunet"]
        mem = r.get("memory_cpu")
        if mem:
            m = " / ".join(f"{mem[k]['step_increase_gb']:.2f}" if k in mem else "–"
                           for k in ("nnunet", "stage1", "3d_student", "2d_student"))
        elif r["nnunet"].get("peak_gb") is not None:
            m = " / ".join(f"{r[k]['peak_gb']:.2f}" if k in r else "–"
                           for k in ("nnunet", "stage1", "3d_student", "2d_student")) + " (GPU)"
        else:
            m = "not measured"
        views = r.get("slice_axes") or [0]
        share = f"{r.get('student2d_slice_fraction', 1.0):g}" + (f", axes {views}" if len(views) > 1 else "")
        kinds = ("stage1", "3d_student", "2d_teacher", "2d_student", "mean_stage2_epoch_pair", "predict")
        plans = f", {r['plans']} plans" if r.get("plans") in ("hippocampus", "la") else ""  # a preset (-d: none)
        lines.append(f"| {r['2d_model']}{lever_text(r.get('levers'))}{plans} | {share} | {r['nnunet']['mean_s']:.3g} | "
                     + " | ".join(f"{q[k]:.2f}×" if k in q else "–" for k in kinds) + f" | {m} |")
        q0 = r.get("ratio_to_nnunet" + PLAIN)
        if q0:  # --ab: the same process without the levers
            lines.append(f"| {r['2d_model']}{plans}, same run without them | {share} | {r['nnunet']['mean_s']:.3g} | "
                         + " | ".join(f"{q0[k]:.2f}×" if k in q0 else "–" for k in kinds) + " | |")
    return "\n".join(lines)


PEER_NAMES = {"mean_teacher": "Mean Teacher", "uamt": "UA-MT", "dtc": "DTC", "self_training": "self-training student"}


def render_peer_table(paths) -> str:
    """Markdown table of the peers' step kinds (one row per JSON file): time ratios to nnUNetTrainer's step, measured
    in the same process, and the step's peak memory where measured."""
    lines = ["| plans (patch, batch) | clock, threads | nnU-Net step (s) | "
             + " | ".join(PEER_NAMES.values()) + " | step memory: nnU-Net / " + " / ".join(PEER_NAMES.values())
             + " (GiB) |", "|---|---|---|" + "---|" * (len(PEER_NAMES) + 1)]
    for path in paths:
        with open(path) as f:
            r = json.load(f)
        q = r["ratio_to_nnunet"]
        mem = r.get("memory_cpu")
        m = " / ".join(f"{mem[k]['step_increase_gb']:.2f}" if k in mem else "–" for k in ("nnunet", *PEER_NAMES)) \
            if mem else "not measured"
        patch = "×".join(map(str, r["patch_size"]))
        lines.append(f"| {r.get('plans', '')} ({patch}, {r['batch_size']}) | {r.get('clock', 'wall')}, "
                     f"{r.get('threads', '?')} | {r['nnunet']['mean_s']:.3g} | "
                     + " | ".join(f"{q[k]:.2f}×" if k in q else "–" for k in PEER_NAMES) + f" | {m} |")
    return "\n".join(lines)


def lever_args(a) -> list:
    """The command-line flags of the levers in `a` (for the --memory subprocesses)."""
    on = levers(a)
    flags = [f"--{k.replace('_2d', '').replace('_', '-')}" for k in ("teacher_merge_lora", "teacher_inference_mode",
                                                                    "channels_last_2d", "cpu_bf16_2d") if on[k]]
    return flags + (["--teacher-chunk", str(a.teacher_chunk)] if a.teacher_chunk else [])


def render_lever_table(paths) -> str:
    """Markdown table of --ab runs: per step kind, the time without the levers over the time with them (> 1: the
    levers make it faster), both measured in the same process, in turns."""
    kinds = ("stage1", "3d_student", "2d_teacher", "2d_student")
    lines = ["| 2D model | levers | plans | clock | stage 1 | 3D student | 2D teacher | 2D student |",
             "|---|---|---|---|---|---|---|---|"]
    for path in paths:
        with open(path) as f:
            r = json.load(f)
        sp = r["lever_speedup"]
        lines.append(f"| {r['2d_model']} | {lever_text(r['levers'])[3:]} | {r.get('plans', '')} | "
                     f"{r.get('clock', 'wall')} | " + " | ".join(f"{sp[k]:.2f}×" if k in sp else "–" for k in kinds)
                     + " |")
    return "\n".join(lines)


def phase_memory(a) -> dict:
    """Peak resident memory (GiB) of a fresh process that sets up the trainers and runs one step kind only."""
    out = {}
    for phase in (k for k in (*PHASES[:-1], *PEERS) if k in a.kinds or k == "nnunet"):
        tmp = f"{a.out}.{phase}.json"
        cmd = [sys.executable, __file__, *(["--plans", a.plans] if a.plans else ["-d", a.d]), "-c", a.c,
               "--device", a.device, "--steps", "2", "--warmup", "1", "--finetune", a.finetune, "--model", a.model,
               "--slice-fraction", str(a.slice_fraction),
               "--only", phase, "--out", tmp] + (["--slice-axes", *map(str, a.slice_axes)] if a.slice_axes else []) \
            + lever_args(a)
        subprocess.run(cmd, check=True, capture_output=True)
        with open(tmp) as f:
            r = json.load(f)
        os.remove(tmp)
        out[phase] = {"peak_rss_gb": r["peak_rss_gb"], "rss_after_setup_gb": r["rss_after_setup_gb"],
                      "step_increase_gb": r["peak_rss_gb"] - r["rss_after_setup_gb"]}
    return out


if __name__ == "__main__":
    main()
