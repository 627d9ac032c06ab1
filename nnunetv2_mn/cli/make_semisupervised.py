"""nnUNetv2_mn_make_semisupervised: split a labelled nnU-Net raw data set or MSD task folder into N labelled, M test
and the remaining unlabelled cases. See nnunetv2_mn.data.make_semisupervised."""
import argparse
import os
import shlex
import sys

from batchgenerators.utilities.file_and_folder_operations import load_json

from nnunetv2_mn.data.make_semisupervised import SPLIT_RECORD, DatasetSplitError, make_semisupervised
from nnunetv2_mn.paths import UNLABELED_RAW_FOLDER


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Split a labelled nnU-Net raw data set or MSD task folder into N "
                                            "labelled, M test and the remaining unlabelled cases.")
    p.add_argument("-d", required=True, help="source: nnU-Net dataset id/name, or a folder (nnU-Net raw or MSD "
                                             "TaskNN_Name, e.g. /work/shared/data/Task04_Hippocampus)")
    p.add_argument("-o", type=int, required=True, help="target dataset id")
    p.add_argument("--name", default=None, help="target dataset name (default: {source name}_{N}lab)")
    p.add_argument("--num_labeled", type=int, required=True)
    p.add_argument("--num_test", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="rebuild the target's raw folder if it exists")
    return p


def main(argv=None) -> None:
    a = build_parser().parse_args(argv)
    command = shlex.join(["nnUNetv2_mn_make_semisupervised"] + list(sys.argv[1:] if argv is None else argv))
    try:
        path = make_semisupervised(a.d, a.o, a.num_labeled, a.num_test, a.seed, a.name, a.overwrite, command)
    except (DatasetSplitError, FileExistsError) as e:
        raise SystemExit(f"ERROR: {e}")
    rec = load_json(os.path.join(path, SPLIT_RECORD))
    print(f"Wrote {path}\n  imagesTr/labelsTr: {rec['num_labeled']} labelled\n"
          f"  {UNLABELED_RAW_FOLDER}: {rec['num_unlabeled']} unlabelled\n"
          f"  imagesTs/labelsTs: {rec['num_test']} test\n  split record: {os.path.join(path, SPLIT_RECORD)}\n"
          f"Next:\n  nnUNetv2_plan_and_preprocess -d {a.o} -c 3d_fullres --verify_dataset_integrity -npfp 2 -np 2\n"
          f"  nnUNetv2_mn_preprocess_unlabeled -d {a.o} -c 3d_fullres -np 2")


if __name__ == "__main__":
    main()
