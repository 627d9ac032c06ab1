"""The arguments every prediction command of this package shares with `nnUNetv2_predict`, declared once."""
import argparse
import os


def add_predict_arguments(p: argparse.ArgumentParser, default_trainer: str, disable_tta_help: str,
                          chk_help: str, npp_nps_help: str = "") -> None:
    """-i -o -d -p -tr -c -f -step_size --disable_tta --verbose -chk -npp -nps -prev_stage_predictions -device
    --disable_progress_bar --not_on_device, with nnU-Net's defaults."""
    p.add_argument("-i", required=True, help="input folder (files named like imagesTr: CASE_0000.nii.gz)")
    p.add_argument("-o", required=True, help="output folder (created if missing)")
    p.add_argument("-d", required=True, help="dataset name or id")
    p.add_argument("-p", default="nnUNetPlans", help="plans identifier. Default: nnUNetPlans")
    p.add_argument("-tr", default=default_trainer, help=f"trainer class used for training. Default: {default_trainer}")
    p.add_argument("-c", required=True, help="configuration, e.g. 3d_fullres")
    p.add_argument("-f", nargs="+", default=(0, 1, 2, 3, 4), help="folds. Default: 0 1 2 3 4")
    p.add_argument("-step_size", type=float, default=0.5, help="sliding-window step size. Default: 0.5")
    p.add_argument("--disable_tta", action="store_true", help=disable_tta_help)
    p.add_argument("--verbose", action="store_true")
    p.add_argument("-chk", default="checkpoint_final.pth", help=chk_help)
    p.add_argument("-npp", type=int, default=int(os.environ.get("nnUNet_npp", 3)),
                   help=f"preprocessing processes{npp_nps_help}. Default: 3")
    p.add_argument("-nps", type=int, default=int(os.environ.get("nnUNet_nps", 3)),
                   help=f"segmentation export processes{npp_nps_help}. Default: 3")
    p.add_argument("-prev_stage_predictions", default=None, help="previous stage's predictions (cascade)")
    p.add_argument("-device", default="cuda", choices=["cuda", "cpu", "mps"], help="Default: cuda")
    p.add_argument("--disable_progress_bar", action="store_true")
    p.add_argument("--not_on_device", action="store_true", help="keep the sliding-window results on the CPU")


def predictor_setup(args) -> tuple:
    """(folds, keyword arguments of nnUNetPredictor) from the shared arguments; sets torch's threads for the device
    as `nnUNetv2_predict` does."""
    import multiprocessing

    import torch

    folds = [f if f == "all" else int(f) for f in args.f]
    if args.device == "cpu":
        torch.set_num_threads(multiprocessing.cpu_count())
    elif args.device == "cuda":
        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)
    return folds, dict(tile_step_size=args.step_size, use_gaussian=True, use_mirroring=not args.disable_tta,
                       perform_everything_on_device=not args.not_on_device, device=torch.device(args.device),
                       verbose=args.verbose, verbose_preprocessing=args.verbose,
                       allow_tqdm=not args.disable_progress_bar)
