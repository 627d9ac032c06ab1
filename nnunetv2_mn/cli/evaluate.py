"""nnUNetv2_mn_evaluate: Dice, Jaccard, HD95 and ASD per foreground label of a folder of predicted segmentations.
See nnunetv2_mn.evaluation.evaluate."""
import argparse
import os
from typing import Optional, Sequence

from nnunetv2_mn.evaluation.evaluate import SUMMARY_NAME, evaluate_folder, markdown_table


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Dice/Jaccard/HD95/ASD of a prediction folder (medpy definitions).")
    p.add_argument("-ref", required=True, help="folder with reference segmentations")
    p.add_argument("-pred", required=True, help="folder with predicted segmentations")
    p.add_argument("-djfile", required=True, help="dataset.json (labels, file_ending)")
    p.add_argument("-o", default=None, help=f"output JSON (default: PRED/{SUMMARY_NAME}); Markdown goes next to it")
    p.add_argument("--voxel", action="store_true", help="distances in voxels instead of mm")
    p.add_argument("-np", type=int, default=2, help="number of worker processes (default 2)")
    p.add_argument("--one_empty_distance", type=float, default=None,
                   help="HD95/ASD when exactly one mask is empty (default: NaN, excluded from means)")
    p.add_argument("--subset", action="store_true", help="evaluate only predicted cases when the reference folder "
                                                         "has more")
    return p


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        summary = evaluate_folder(args.ref, args.pred, args.djfile, args.o, args.voxel, args.np,
                                  one_empty_distance=args.one_empty_distance, allow_subset=args.subset)
    except (FileNotFoundError, KeyError, ValueError) as e:
        parser.exit(1, f"{parser.prog}: error: {e}\n")
    print(markdown_table(summary))
    print(f"Written: {args.o or os.path.join(args.pred, SUMMARY_NAME)} (+ .md)")


if __name__ == "__main__":
    main()
