"""nnUNetv2_mn_preprocess_unlabeled: preprocess imagesUnlabeled/ of an nnU-Net data set with its own plans.
See nnunetv2_mn.data.unlabeled."""
import argparse

from nnunetv2_mn.data.unlabeled import UnlabeledDataError, preprocess_unlabeled


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Preprocess imagesUnlabeled/ of an nnU-Net data set with its plans into "
                                            "nnUNet_preprocessed/DatasetXXX_Name/{data_identifier}_unlabeled/.")
    p.add_argument("-d", required=True, help="dataset id or name")
    p.add_argument("-c", nargs="+", default=["3d_fullres"], help="configurations (default: 3d_fullres)")
    p.add_argument("-p", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    p.add_argument("-np", type=int, default=2, help="worker processes (default: 2)")
    p.add_argument("--include_imagesTs", action="store_true",
                   help="also preprocess imagesTs/ as unlabelled data (transductive setting)")
    p.add_argument("--accept_geometry", action="store_true",
                   help="preprocess unlabelled images whose spacing or orientation differs from the labelled images "
                        "(a warning lists them instead of an error)")
    return p


def main(argv=None) -> None:
    a = build_parser().parse_args(argv)
    try:
        results = preprocess_unlabeled(a.d, a.c, a.p, a.np, a.include_imagesTs, accept_geometry=a.accept_geometry)
    except UnlabeledDataError as e:
        raise SystemExit(f"ERROR: {e}")
    for c, r in results.items():
        print(f"{c}: {len(r['processed'])} preprocessed, {len(r['unchanged'])} unchanged, "
              f"{len(r['removed'])} removed; {len(r['processed']) + len(r['unchanged'])} cases in {r['output_folder']}")


if __name__ == "__main__":
    main()
