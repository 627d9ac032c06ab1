"""Expected wall time of a row: step costs per device and the trainer's own schedule (who learns when)."""
from typing import Dict, Sequence

from .spec import DatasetSpec, Schedule

# ====================================================================================================== cost model
#: Wall seconds on 2 otherwise idle CPU cores (torch with 2 threads, fp32) for the Hippocampus plans
#: (3d_fullres patch 40x48x40, batch 2, PlainConvUNet 32-256; the 2D model sees 2 x 40 = 80 slices of
#: 48x40 per step). The nnU-Net step: 1.6 s (the cpu schedule's baseline row, 41 s for an epoch of 25 steps and
#: 5 validation steps on idle cores). The M&N steps relative to it from docs/benchmarks/cost.md (EfficientNet-Lite0,
#: LoRA: stage 1 1.37x, 3D student 1.06x, 2D student 0.51x -> 2D train 0.37x, 2D forward of a patch 0.12x, 3D
#: forward 0.28x); the other 2D models scaled by their earlier measured ratios to EfficientNet-Lite0 (ResNet-50
#: U-Net, decoder-only) or by docs/models2d.md's 160x160 ratios (SegFormer-B2). The rest (start-up, prediction,
#: evaluation) are estimates; the report shows the measured times.
CPU_COST = {
    "3d_train": 1.6, "3d_forward": 0.45,
    "2d_train": {"effnet_lite0/whole": 0.49, "effnet_lite0/lora": 0.6, "effnet_lite0/decoder": 0.28,
                 "resunet/whole": 0.94, "resunet/lora": 1.05, "resunet/decoder": 0.49,
                 "segformer/lora": 2.04, "segformer/whole": 1.75, "segformer/decoder": 1.44},
    "2d_forward": {"effnet_lite0/whole": 0.17, "effnet_lite0/lora": 0.2, "effnet_lite0/decoder": 0.17,
                   "resunet/whole": 0.19, "resunet/lora": 0.22, "resunet/decoder": 0.19,
                   "segformer/lora": 0.73, "segformer/whole": 0.56, "segformer/decoder": 0.73},
    "epoch": 3.0,  # checkpoint, progress.png, log lines
    "train_start": 45.0,  # interpreter, imports, trainer init, data loaders, unlabelled-data check
    "predict_start": 20.0, "predict_case": 1.5,  # ~2 sliding-window tiles per test case, no mirroring
    "pseudo_mask_case": 1.2,  # M&N pseudo-foreground crops: 3D sliding window on one unlabelled case
    "tta_factor": 8,  # mirroring over 3 axes
    "evaluate": 15.0,
    "prep": {"make": 15.0, "plan_per_case": 0.6, "plan_start": 40.0, "unlabeled_per_case": 0.5,
             "unlabeled_start": 20.0},
}
#: H100 (docs/benchmarks/gpu_h100.md, AMP, compiled 3D net): 3D step 15 ms, M&N stage 1 202 ms,
#: 3D student 69 ms (of which 44 ms the 2D teacher), 2D student 153 ms; other 2D models scaled by
#: docs/models2d.md's GPU ms/slice. Rough: for planning a GPU session, not for the report.
GPU_COST = {
    "3d_train": 0.015, "3d_forward": 0.006,
    "2d_train": {"segformer/lora": 0.15, "segformer/whole": 0.13, "segformer/decoder": 0.085,
                 "effnet_lite0/whole": 0.085, "effnet_lite0/lora": 0.10, "effnet_lite0/decoder": 0.05,
                 "resunet/whole": 0.10, "resunet/lora": 0.11, "resunet/decoder": 0.06},
    "2d_forward": {"segformer/lora": 0.088, "segformer/whole": 0.08, "segformer/decoder": 0.088,
                   "effnet_lite0/whole": 0.05, "effnet_lite0/lora": 0.06, "effnet_lite0/decoder": 0.05,
                   "resunet/whole": 0.06, "resunet/lora": 0.07, "resunet/decoder": 0.06},
    "epoch": 2.0, "train_start": 120.0, "predict_start": 30.0, "predict_case": 0.1, "pseudo_mask_case": 0.05,
    "tta_factor": 8,
    "evaluate": 15.0,
    "prep": CPU_COST["prep"],
}


def cost_profile(schedule: Schedule) -> dict:
    return GPU_COST if schedule.device.startswith("cuda") else CPU_COST


def cotraining_schedule(attrs: dict, num_epochs: int):
    """The M&N trainer's own schedule object (who learns when) for a row's settings."""
    from nnunetv2_mn.mn.cotraining import CoTrainingSchedule

    return CoTrainingSchedule(num_epochs, attrs.get("stage1_fraction", 0.125), attrs.get("stage2_students", "pair"),
                              attrs.get("first_student", "3d"), attrs.get("co_training", True),
                              attrs.get("pseudo_mask_refresh_fraction", 0.125))


def updates_3d(attrs: dict, schedule: Schedule) -> int:
    """Optimizer steps of the 3D network over the row (nnU-Net: epochs x iterations)."""
    if attrs.get("family") == "mn":
        return cotraining_schedule(attrs, schedule.num_epochs).steps(schedule.iterations)["3d"]
    return schedule.num_epochs * schedule.iterations


def estimate_row(attrs: dict, schedule: Schedule, num_test: int, num_unlabeled: int = 0,
                 cost: dict = None, num_labeled: int = 0) -> Dict[str, float]:
    """Expected wall seconds of one row: {'train', 'predict', 'evaluate', 'total'} (see CPU_COST).

    Upper bound for the semi-supervised steps: every stage-2 batch is taken to hold one unlabelled patch
    (b_u = 1 of B = 2) whose teacher prediction costs half a batch forward; with `unlabeled_samples='add'` that
    patch comes on top of the B labelled ones, so a stage-2 student step trains on 3 samples (1.5x). With
    `unlabeled_foreground_bias` > 0, M&N also predicts every unlabelled case at each pseudo-mask refresh.
    Self-training draws uniformly from the pooled cases, E[b_u] = B n_u / (n_l + n_u): with the pseudo-labelled
    samples on top, a student step trains on B + E[b_u] samples (1.95x for 8 labelled and 152 unlabelled cases).
    """
    cost = cost or cost_profile(schedule)
    e, it, v = schedule.num_epochs, schedule.iterations, schedule.val_iterations
    t3, f3 = cost["3d_train"], cost["3d_forward"]
    family = attrs.get("family", "nnunet")
    added = 1.5 if attrs.get("unlabeled_samples") == "add" else 1.0  # stage-2 samples per step / B
    if family == "mn":
        key = f"{attrs['branch2d_kind']}/{attrs['branch2d_finetune']}"
        t2, f2 = cost["2d_train"][key], cost["2d_forward"][key]
        t2 *= attrs.get("student2d_slice_fraction", 1.0)  # the student learns from this share of the slices
        views = len(attrs.get("slice_axes") or (0,))  # each view runs the 2D model on its own slices
        t2, f2 = t2 * views, f2 * views
        student = {"3d": added * t3 + f2 / 2, "2d": f3 / 2 + added * t2}
        sched = cotraining_schedule(attrs, e)
        train_steps = sum(t3 + t2 if sched.stage(epoch) == 1 else sum(student[m] for m in sched.students(epoch, i))
                          for epoch in range(e) for i in range(it))
        if attrs.get("unlabeled_foreground_bias", 0) > 0:
            train_steps += num_unlabeled * cost["pseudo_mask_case"] * sched.num_refreshes()
        val = e * v * (f3 + f2)
    elif family == "self_training":  # nnU-Net steps, and one prediction of every unlabelled case
        stage2 = e - int(round(attrs.get("stage1_fraction", 0.5) * e))
        share = num_unlabeled / max(1, num_labeled + num_unlabeled)  # uniform sampling over the pool
        per_step = 1 + share if attrs.get("unlabeled_samples") == "add" else 1.0
        train_steps = (e - stage2 + per_step * stage2) * it * t3 + num_unlabeled * cost["pseudo_mask_case"]
        val = e * v * f3
    elif family == "mean_teacher":
        train_steps = e * it * (t3 + f3)  # student step + EMA teacher forward on the whole batch
        val = e * v * f3
    elif family == "uamt":  # + 8 noisy teacher passes on the unlabelled sample (4 forwards of 2 copies)
        train_steps = e * it * (t3 + 5 * f3)
        val = e * v * f3
    elif family == "dtc":  # a 1x1x1 head and the labels' signed distance: about an nnU-Net step (an estimate)
        train_steps = e * it * t3 * 1.1
        val = e * v * f3
    else:
        train_steps = e * it * t3
        val = e * v * f3
    train = cost["train_start"] + train_steps + val + e * cost["epoch"]
    predict = cost["predict_start"] + num_test * cost["predict_case"] * (cost["tta_factor"] if schedule.tta else 1)
    out = {"train": train, "predict": predict, "evaluate": cost["evaluate"]}
    out["total"] = sum(out.values())
    return out


def estimate_prep(specs: Sequence[DatasetSpec], unlabeled_keys: Sequence[str], cost: dict = None) -> Dict[str, float]:
    """Expected wall seconds of building, planning and preprocessing each data set."""
    p = (cost or CPU_COST)["prep"]
    out = {}
    for s in specs:
        seconds = p["make"] + p["plan_start"] + p["plan_per_case"] * s.num_labeled
        if s.key in unlabeled_keys:
            seconds += p["unlabeled_start"] + p["unlabeled_per_case"] * s.num_unlabeled
        out[s.folder] = seconds
    return out


