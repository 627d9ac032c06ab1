"""GPU check of the semi-supervised trainers: real training loops with AMP and nnU-Net's torch.compile,
a checkpoint written mid-run and a resume from it (what `--c` does), on the plans of dataset `-d`.

    python benchmarks/gpu_check.py -d 504 --out results.json

The M&N run uses SegFormer-B2's architecture built from its config (no download possible there).
"""
import argparse
import json
import os
import time

import numpy as np
import torch

from step_cost import SEGFORMER_B2, load_trainer


def run(cls, dataset, epochs_first, epochs_total):
    t0 = time.time()
    trainer = load_trainer(cls, dataset, "3d_fullres", torch.device("cuda"))
    trainer.num_epochs = epochs_first  # first run stops early, as if it had been killed
    trainer.run_training()
    latest = os.path.join(trainer.output_folder, "checkpoint_final.pth")
    resumed = load_trainer(cls, dataset, "3d_fullres", torch.device("cuda"))
    resumed.load_checkpoint(latest)
    resumed.num_epochs = epochs_total
    resumed.run_training()
    log = resumed.logger.get_checkpoint()
    out = {k: [float(v) for v in log[k]] for k in ("train_losses", "mean_fg_dice", "b_u", "lrs") if k in log}
    out.update({"resumed_from_epoch": epochs_first, "final_epoch": resumed.current_epoch,
                "compiled": resumed._do_i_compile(), "amp_scaler_scale": float(resumed.grad_scaler.get_scale()),
                "wall_s": time.time() - t0, "finite_losses": bool(np.all(np.isfinite(log["train_losses"])))})
    for k in ("loss_u_3d", "loss_u_2d", "agreement", "dice_2d", "stage"):
        if k in log:
            out[k] = [float(v) for v in log[k]]
    locations = getattr(resumed, "pseudo_class_locations", None)
    if locations is not None:
        out["pseudo_mask_cases_with_foreground"] = sum(any(len(v) for v in c.values()) for c in locations.values())
        out["pseudo_mask_cases"] = len(locations)
    return out


def main():
    from nnunetv2_mn.trainers.mean_teacher import nnUNetTrainerMeanTeacher
    from nnunetv2_mn.trainers.mn import nnUNetTrainerMN

    p = argparse.ArgumentParser()
    p.add_argument("-d", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    schedule = {"num_epochs": 6, "num_iterations_per_epoch": 25, "num_val_iterations_per_epoch": 5, "save_every": 2}

    class MNGpuCheck(nnUNetTrainerMN):
        schedule_overrides = schedule
        branch2d_config = SEGFORMER_B2
        stage1_fraction = 2 / 6
        sampling = "fixed"
        sampling_kwargs = {"ratio": 0.5}

    class MTGpuCheck(nnUNetTrainerMeanTeacher):
        schedule_overrides = schedule

    class MNPseudoFgGpuCheck(MNGpuCheck):
        unlabeled_foreground_bias = 0.5
        pseudo_mask_refresh_fraction = 2 / 6

    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
               "nnUNetTrainerMN (SegFormer-B2 arch, LoRA)": run(MNGpuCheck, a.d, 3, 6),
               "nnUNetTrainerMeanTeacher": run(MTGpuCheck, a.d, 3, 6),
               "nnUNetTrainerMN, pseudo-foreground crops (bias 0.5)": run(MNPseudoFgGpuCheck, a.d, 3, 6)}
    with open(a.out, "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
