"""Cost of one training step of nnUNetTrainerMN relative to nnUNetTrainer on the same plans and batch.

Measures, in one process and on one device, the mean time (and peak GPU memory on CUDA) of:
  nnunet      stock nnUNetTrainer.train_step (the baseline)
  stage1      M&N stage 1: 3D and 2D models each learn from the labelled batch
  3d_student  M&N 3D epoch: 2D teacher pseudo-masks (no grad) + 3D student step, b_u = B // 2
  2d_student  M&N 2D epoch: 3D teacher pseudo-masks (no grad) + 2D student step, b_u = B // 2
  2d_teacher  the 2D teacher's slice-wise inference alone (part of 3d_student)
  predict     sliding-window prediction of one volume with the stock predictor, nnU-Net vs M&N checkpoint net
Random inputs of the plans' patch and batch size (the cost depends on shapes only). The 2D model is
SegFormer-B2's architecture built from its config (random weights: no download), LoRA as nnUNetTrainerMN.

    python benchmarks/step_cost.py -d 504 -c 3d_fullres --device cuda --out docs/benchmarks/cost_h100.json
"""
import argparse
import json
import os
import platform
import time

import numpy as np
import torch

SEGFORMER_B2 = {"model_type": "segformer", "depths": [3, 4, 6, 3], "hidden_sizes": [64, 128, 320, 512],
                "num_attention_heads": [1, 2, 5, 8], "decoder_hidden_size": 768}


def load_trainer(cls, dataset, configuration, device):
    from batchgenerators.utilities.file_and_folder_operations import join, load_json
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    folder = join(nnUNet_preprocessed, maybe_convert_to_dataset_name(dataset))
    plans = load_json(join(folder, "nnUNetPlans.json"))
    plans["continue_training"] = False
    trainer = cls(plans, configuration, "all", load_json(join(folder, "dataset.json")), device=device)
    trainer.initialize()
    return trainer


def random_batch(trainer, n):
    ps = trainer.configuration_manager.patch_size
    x = torch.randn(n, trainer.num_input_channels, *ps, device=trainer.device)
    with torch.no_grad():
        outs = trainer.network(x[:1])
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    k = trainer.label_manager.num_segmentation_heads
    target = [torch.randint(0, k, (n, 1, *o.shape[2:]), device=trainer.device).float() for o in outs]
    return x, target


def timed(fn, steps, warmup, device):
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda" else None
    return {"mean_s": float(np.mean(t)), "std_s": float(np.std(t)), "peak_gb": peak}


def main():
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2_mn.training.mn import nnUNetTrainerMN

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-d", required=True)
    p.add_argument("-c", default="3d_fullres")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--finetune", default="lora")
    p.add_argument("--model", default="segformer-b2", choices=["segformer-b2", "effnet_lite0"],
                   help="2D model: SegFormer-B2's architecture (random weights) or the offline EfficientNet-Lite0 U-Net")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    device = torch.device(a.device)

    class MNCost(nnUNetTrainerMN):
        branch2d_kind = "segformer" if a.model == "segformer-b2" else "effnet_lite0"
        branch2d_source = None
        branch2d_config = SEGFORMER_B2 if a.model == "segformer-b2" else None
        branch2d_finetune = a.finetune

    base = load_trainer(nnUNetTrainer, a.d, a.c, device)
    mn = load_trainer(MNCost, a.d, a.c, device)
    B = base.batch_size
    x, target = random_batch(base, B)
    b_u = B // 2
    res = {"device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
           "torch": torch.__version__, "patch_size": list(base.configuration_manager.patch_size), "batch_size": B,
           "b_u": b_u, "amp": device.type == "cuda", "compile_3d": base._do_i_compile(), "2d_model": f"{a.model} ({a.finetune})", "trainable_2d": mn.branch2d.describe(), "steps": a.steps}
    res["nnunet"] = timed(lambda: base.train_step({"data": x, "target": target}), a.steps, a.warmup, device)
    del base
    mn.phase = "both"
    res["stage1"] = timed(lambda: mn.semi_supervised_step(x, target, None), a.steps, a.warmup, device)
    tl = [t[:B - b_u] for t in target]
    mn.phase = "3d"
    mn.branch2d.eval()
    res["3d_student"] = timed(lambda: mn.semi_supervised_step(x[:B - b_u], tl, x[B - b_u:]), a.steps, a.warmup, device)

    def teacher():
        with torch.no_grad(), mn.autocast():
            mn.forward_2d(x[B - b_u:], teacher=True)
    res["2d_teacher"] = timed(teacher, a.steps, a.warmup, device)
    mn.phase = "2d"
    mn.branch2d.train()
    mn.network.eval()
    res["2d_student"] = timed(lambda: mn.semi_supervised_step(x[:B - b_u], tl, x[B - b_u:]), a.steps, a.warmup, device)
    t0 = res["nnunet"]["mean_s"]
    res["ratio_to_nnunet"] = {k: res[k]["mean_s"] / t0 for k in ("stage1", "3d_student", "2d_student", "2d_teacher")}
    res["ratio_to_nnunet"]["mean_stage2_epoch_pair"] = (res["3d_student"]["mean_s"] + res["2d_student"]["mean_s"]) / 2 / t0
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
