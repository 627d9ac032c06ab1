"""Where unlabelled data lives, in nnU-Net's conventions.

raw:          $nnUNet_raw/DatasetXXX_Name/imagesUnlabeled/{CASE}_{XXXX}{file_ending}
preprocessed: $nnUNet_preprocessed/DatasetXXX_Name/{data_identifier}_unlabeled/
"""
import os

UNLABELED_RAW_FOLDER = "imagesUnlabeled"
UNLABELED_SUFFIX = "_unlabeled"


def unlabeled_raw_dir(raw_dataset_dir: str) -> str:
    return os.path.join(raw_dataset_dir, UNLABELED_RAW_FOLDER)


def unlabeled_preprocessed_dir(preprocessed_dataset_dir: str, data_identifier: str) -> str:
    return os.path.join(preprocessed_dataset_dir, data_identifier + UNLABELED_SUFFIX)
