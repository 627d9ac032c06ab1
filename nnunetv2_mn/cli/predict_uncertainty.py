"""nnUNetv2_mn_predict_uncertainty: `nnUNetv2_predict` (same main arguments, same segmentations) that also writes a
per-case uncertainty map, the 2D/3D disagreement map when the M&N run kept its 2D model, and a per-case summary to
sort cases for review. See nnunetv2_mn.inference.uncertainty."""
import argparse
import os

from nnunetv2_mn.cli.predict_args import add_predict_arguments, predictor_setup
from nnunetv2_mn.inference.uncertainty import (DISAGREEMENT_FOLDER, UNCERTAINTY_FOLDER,
                                               nnUNetPredictorWithUncertainty, summarize)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="nnUNetv2_predict plus, per case, the entropy of the mean softmax over the test-time mirrorings "
                    f"(and folds), normalised to [0, 1], as an image in OUTPUT/{UNCERTAINTY_FOLDER}/ with the input's "
                    f"geometry, and OUTPUT/{UNCERTAINTY_FOLDER}/summary.json and .csv (mean uncertainty inside the "
                    "predicted foreground and over the image; most uncertain first). Without mirroring "
                    "(--disable_tta) the map is the entropy of the single softmax. When every fold used kept the "
                    "fine-tuned 2D model of an M&N trainer (fold_x/model2d/), also the 2D/3D disagreement, "
                    "1/2 sum_c |P3D_c - P2D_c| per voxel in [0, 1], in "
                    f"OUTPUT/{UNCERTAINTY_FOLDER}/{DISAGREEMENT_FOLDER}/ and its means in the summary; otherwise the "
                    "summary says it is not available.")
    add_predict_arguments(p, "nnUNetTrainer", disable_tta_help="no mirroring (faster; the map is then the entropy "
                                                                "of a single prediction)",
                          chk_help="checkpoint of the 3D network. Default: checkpoint_final.pth (the 2D model of the "
                                   "disagreement is always the one kept at the end of training)", npp_nps_help=" (>= 1)")
    p.add_argument("--save_probabilities", action="store_true", help="also write nnU-Net's .npz probabilities")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--disagreement", action="store_true",
                   help="require the 2D/3D disagreement: stop with an error when a fold did not keep its 2D model "
                        "(default: written when every fold kept it, left out otherwise)")
    g.add_argument("--no_disagreement", action="store_true",
                   help="entropy map only, even when the 2D model was kept (saves the 2D model's pass)")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    if args.npp < 1 or args.nps < 1:
        raise SystemExit("-npp and -nps must be >= 1 (nnU-Net's sequential mode is not offered here)")
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    folds, settings = predictor_setup(args)
    disagreement = True if args.disagreement else False if args.no_disagreement else None
    predictor = nnUNetPredictorWithUncertainty(**settings, disagreement=disagreement)
    try:
        predictor.initialize_from_trained_model_folder(get_output_folder(args.d, args.tr, args.p, args.c), folds,
                                                       checkpoint_name=args.chk)
    except FileNotFoundError as e:
        if disagreement:
            raise SystemExit(f"error: {e}")
        raise
    os.makedirs(args.o, exist_ok=True)
    predictor.predict_from_files(args.i, args.o, save_probabilities=args.save_probabilities, overwrite=True,
                                 num_processes_preprocessing=args.npp, num_processes_segmentation_export=args.nps,
                                 folder_with_segs_from_prev_stage=args.prev_stage_predictions)
    rows = summarize(args.o, predictor.dataset_json["file_ending"], predictor.disagreement_unavailable)
    print(f"\nUncertainty maps and summary in {os.path.join(args.o, UNCERTAINTY_FOLDER)}; most uncertain first:")
    for r in rows:
        fg = "no foreground" if r["mean_uncertainty_foreground"] is None else f"{r['mean_uncertainty_foreground']:.4f}"
        line = f"  {r['case']}: foreground {fg}, image {r['mean_uncertainty_image']:.4f}"
        if predictor.disagreement_unavailable is None:
            d = "-" if r["mean_disagreement_foreground"] is None else f"{r['mean_disagreement_foreground']:.4f}"
            line += f"; 2D/3D disagreement: foreground {d}, image {r['mean_disagreement_image']:.4f}"
        print(line)
    if predictor.disagreement_unavailable is not None:
        print(f"2D/3D disagreement not available: {predictor.disagreement_unavailable}")


if __name__ == "__main__":
    main()
