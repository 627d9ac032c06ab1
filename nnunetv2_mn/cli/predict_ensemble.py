"""nnUNetv2_mn_predict_ensemble: `nnUNetv2_predict` (its arguments, its output layout) whose probabilities mix nnU-Net's
3D sliding window with the kept 2D model of an M&N run, P = (1 - w) P_3D + w P_2D. See
nnunetv2_mn.inference.ensemble."""
import argparse
import os

from nnunetv2_mn.cli.predict_args import add_predict_arguments, predictor_setup
from nnunetv2_mn.inference.ensemble import check_weight_2d, nnUNetPredictor2D3D


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="nnUNetv2_predict with the 2D model kept by an M&N trainer (fold_x/model2d/): per case the 3D "
                    "probabilities (nnU-Net's sliding window, mirroring, fold average) and the 2D model's (every slice "
                    "of the preprocessed volume along its slice axes, folds averaged) are mixed with weight "
                    "--weight_2d, then exported as nnU-Net does. --weight_2d 0 gives exactly nnUNetv2_predict's files.")
    add_predict_arguments(p, "nnUNetTrainerMN", disable_tta_help="no mirroring of the 3D network (the 2D model "
                                                                  "never mirrors)",
                          chk_help="checkpoint of the 3D network. Default: checkpoint_final.pth (the 2D model is "
                                   "always the one of the end of training)",
                          npp_nps_help=" (-npp 0 -nps 0: nnU-Net's sequential mode)")
    p.add_argument("--weight_2d", type=float, default=0.5,
                   help="weight w of the 2D model's probabilities in [0, 1] (0 = the 3D network alone, 1 = the 2D "
                        "model alone). Default: 0.5")
    p.add_argument("--save_probabilities", action="store_true", help="also write the (mixed) probabilities (.npz)")
    p.add_argument("--continue_prediction", action="store_true", help="do not overwrite existing files")
    p.add_argument("-num_parts", type=int, default=1, help="number of separate calls. Default: 1")
    p.add_argument("-part_id", type=int, default=0, help="which of -num_parts this call is (0-based)")
    return p


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_weight_2d(args.weight_2d)
    except ValueError as e:
        parser.error(str(e))
    if not 0 <= args.part_id < args.num_parts:
        parser.error("-part_id must be in [0, -num_parts)")
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    folds, settings = predictor_setup(args)
    predictor = nnUNetPredictor2D3D(**settings, weight_2d=args.weight_2d)
    predictor.initialize_from_trained_model_folder(get_output_folder(args.d, args.tr, args.p, args.c), folds,
                                                   checkpoint_name=args.chk)
    os.makedirs(args.o, exist_ok=True)
    if args.npp == 0 and args.nps == 0:
        predictor.predict_from_files_sequential(args.i, args.o, save_probabilities=args.save_probabilities,
                                                overwrite=not args.continue_prediction,
                                                folder_with_segs_from_prev_stage=args.prev_stage_predictions)
    else:
        predictor.predict_from_files(args.i, args.o, save_probabilities=args.save_probabilities,
                                     overwrite=not args.continue_prediction, num_processes_preprocessing=args.npp,
                                     num_processes_segmentation_export=args.nps,
                                     folder_with_segs_from_prev_stage=args.prev_stage_predictions,
                                     num_parts=args.num_parts, part_id=args.part_id)


if __name__ == "__main__":
    main()
