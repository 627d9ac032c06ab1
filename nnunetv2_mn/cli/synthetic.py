"""nnUNetv2_mn_synthetic: write a small synthetic nnU-Net raw data set with labelled, unlabelled and test cases.
See nnunetv2_mn.data.synthetic."""
import argparse

from nnunetv2_mn.data.synthetic import make_synthetic_dataset
from nnunetv2_mn.paths import UNLABELED_RAW_FOLDER


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Write a synthetic nnU-Net raw data set with labelled (imagesTr), "
                                            "unlabelled (imagesUnlabeled) and test (imagesTs/labelsTs) cases.")
    p.add_argument("-d", type=int, required=True, help="dataset id (DatasetXXX_Name in $nnUNet_raw)")
    p.add_argument("--name", default="MNSynthetic")
    p.add_argument("--num_labeled", type=int, default=4)
    p.add_argument("--num_unlabeled", type=int, default=8)
    p.add_argument("--num_test", type=int, default=4)
    p.add_argument("--shape", type=int, nargs=3, default=[24, 40, 40], metavar=("Z", "Y", "X"))
    p.add_argument("--spacing", type=float, nargs=3, default=[2.0, 1.0, 1.0], metavar=("Z", "Y", "X"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing data set of the same name")
    return p


def main(argv=None) -> None:
    a = build_parser().parse_args(argv)
    try:
        path = make_synthetic_dataset(a.d, a.name, a.num_labeled, a.num_unlabeled, a.num_test, a.shape,
                                      a.spacing, a.seed, overwrite=a.overwrite)
    except (FileExistsError, ValueError, RuntimeError) as e:
        raise SystemExit(f"ERROR: {e}")
    print(f"Wrote {path}\n  imagesTr/labelsTr: {a.num_labeled} labelled cases\n"
          f"  {UNLABELED_RAW_FOLDER}: {a.num_unlabeled} unlabelled images\n"
          f"  imagesTs/labelsTs: {a.num_test} test cases\n"
          f"  shape (z, y, x) {tuple(a.shape)}, spacing {tuple(a.spacing)}, seed {a.seed}\n"
          f"Next:\n  nnUNetv2_plan_and_preprocess -d {a.d} -c 3d_fullres --verify_dataset_integrity -npfp 2 -np 2\n"
          f"  nnUNetv2_mn_preprocess_unlabeled -d {a.d} -c 3d_fullres -np 2")


if __name__ == "__main__":
    main()
