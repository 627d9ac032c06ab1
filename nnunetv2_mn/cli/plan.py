"""nnUNetv2_mn_plan: nnU-Net's 3d_fullres plan with the GPU memory target shared by the M&N 2D model; extracts the
fingerprint if missing, plans, optionally preprocesses, prints a summary. See nnunetv2_mn.plans.planner."""
import argparse
import os

from nnunetv2_mn.plans.planner import CONFIGURATION, DEFAULT_PLANS_NAME, MemoryBudgetError, MNExperimentPlanner
from nnunetv2_mn.settings import DEFAULT_2D_MODEL, PLANS_KEY_2D_MODEL


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nnUNetv2_mn_plan", description=(
        "Plan nnU-Net's 3d_fullres for M&N: the GPU memory target is shared between nnU-Net's 3D network and the "
        "2D model, which sees every slice of every patch. Writes a separate plans file (default nnUNetMNPlans)."))
    p.add_argument("-d", required=True, help="dataset id or name")
    p.add_argument("-gpu_memory_target", type=float, default=8, help="GPU memory for both models, GB (default 8)")
    p.add_argument("-pl_name", default=DEFAULT_PLANS_NAME, help=f"plans name (default {DEFAULT_PLANS_NAME})")
    p.add_argument("--2d_model", dest="model_2d", default=None,
                   help=f"hub id or local directory of the 2D model, stored as '{PLANS_KEY_2D_MODEL}' (default: "
                        f"not stored; the trainer uses env nnUNet_MN_2d_model or {DEFAULT_2D_MODEL})")
    p.add_argument("--slice_axis", type=int, default=0, choices=(0, 1, 2),
                   help="patch axis the 2D model slices along (default 0: nnU-Net's largest-spacing axis)")
    p.add_argument("--bytes_per_pixel", type=float, default=None,
                   help=f"2D training memory per pixel-slice in bytes (default "
                        f"{MNExperimentPlanner.segformer_bytes_per_pixel:g}, measured for SegFormer-B2 + LoRA)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing plans file of the same name")
    p.add_argument("-np", type=int, default=4, help="processes for fingerprint extraction / preprocessing (4)")
    p.add_argument("--preprocess", action="store_true", help="also run nnU-Net's 3d_fullres preprocessing")
    return p


def _fmt(shape) -> str:
    return "x".join(str(int(i)) for i in shape)


def main(argv=None) -> None:
    a = build_parser().parse_args(argv)
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    try:
        name = maybe_convert_to_dataset_name(a.d if not str(a.d).isdigit() else int(a.d))
    except RuntimeError as e:
        raise SystemExit(f"ERROR: {e}")
    dataset_id = int(name[7:10])
    plans_file = os.path.join(str(nnUNet_preprocessed), name, a.pl_name + ".json")
    if os.path.isfile(plans_file) and not a.overwrite:
        raise SystemExit(f"ERROR: {plans_file} exists. Pick another -pl_name or pass --overwrite to replace it.")
    if not os.path.isfile(os.path.join(str(nnUNet_preprocessed), name, "dataset_fingerprint.json")):
        from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprint_dataset
        print(f"No fingerprint for {name}: extracting it (nnUNetv2_extract_fingerprint -d {dataset_id}; add "
              f"--verify_dataset_integrity there for a new data set).")
        extract_fingerprint_dataset(dataset_id, num_processes=a.np, check_dataset_integrity=False, clean=True)
    try:
        planner = MNExperimentPlanner(dataset_id, a.gpu_memory_target, plans_name=a.pl_name, mn_2d_model=a.model_2d,
                                      mn_slice_axis=a.slice_axis, bytes_per_pixel_2d=a.bytes_per_pixel,
                                      overwrite=a.overwrite)
        plans = planner.plan_experiment()
    except (FileExistsError, MemoryBudgetError, ValueError) as e:
        raise SystemExit(f"ERROR: {e}")
    if a.preprocess:
        from nnunetv2.experiment_planning.plan_and_preprocess_api import preprocess
        preprocess([dataset_id], a.pl_name, (CONFIGURATION,), (a.np,))
    c, ref = plans["configurations"][CONFIGURATION], planner.mn_unbudgeted_plan
    patch = c["patch_size"]
    print(f"\nM&N plans written to {planner.plans_file} (configuration {CONFIGURATION})\n"
          f"  GPU memory target      {c['mn_gpu_memory_target_gb']:g} GB, of which 3D target "
          f"{c['mn_3d_memory_target_gb']:.2f} GB + 2D estimate {c['mn_estimated_2d_memory_gb']:.2f} GB\n"
          f"  patch size, batch size {_fmt(patch)}, {c['batch_size']} (nnU-Net alone: {_fmt(ref['patch_size'])}, "
          f"{ref['batch_size']})\n"
          f"  3D estimate            {c['mn_estimated_3d_memory_gb']:.2f} GB (nnU-Net's VRAM model)\n"
          f"  2D estimate            {c['mn_estimated_2d_memory_gb']:.2f} GB: {c['mn_2d_slices_per_step']} slices of "
          f"{_fmt([s for i, s in enumerate(patch) if i != a.slice_axis])} x {planner.bytes_per_pixel_2d:g} B/pixel\n"
          f"  slice axis             {a.slice_axis} (spacing {c['spacing'][a.slice_axis]:.3g})\n"
          f"  2D model               {a.model_2d or f'trainer default ({DEFAULT_2D_MODEL})'}; "
          f"env nnUNet_MN_2d_model overrides it")
    steps = [] if a.preprocess else [f"nnUNetv2_preprocess -d {dataset_id} -plans_name {a.pl_name} -c {CONFIGURATION}"]
    steps += [f"nnUNetv2_mn_preprocess_unlabeled -d {dataset_id} -c {CONFIGURATION} -p {a.pl_name}",
              f"nnUNetv2_train {dataset_id} {CONFIGURATION} 0 -tr nnUNetTrainerMN -p {a.pl_name}"]
    print("Next:\n" + "\n".join("  " + s for s in steps))


if __name__ == "__main__":
    main()
