"""Semi-supervised splits: counts, determinism, a test set that does not depend on N, the record, no overwrite."""
import json
import os

import pytest

from nnunetv2_mn.data.make_semisupervised import SPLIT_RECORD, DatasetSplitError, make_semisupervised, split_cases
from nnunetv2_mn.data.synthetic import make_synthetic_dataset

FOLDERS = ("imagesTr", "labelsTr", "imagesUnlabeled", "imagesTs", "labelsTs")


@pytest.fixture
def source(nnunet_dirs):
    """Dataset500_Src: 12 labelled cases and 2 images already in imagesUnlabeled."""
    return make_synthetic_dataset(500, name="Src", num_labeled=12, num_unlabeled=2, num_test=0, shape=(8, 12, 12))


def _counts(path):
    return {d: len(os.listdir(os.path.join(path, d))) for d in FOLDERS if os.path.isdir(os.path.join(path, d))}


def _record(path):
    return json.load(open(os.path.join(path, SPLIT_RECORD)))


def _snapshot(folder):
    return sorted((os.path.join(r, f), os.stat(os.path.join(r, f)).st_size, os.stat(os.path.join(r, f)).st_mtime_ns)
                  for r, _, files in os.walk(folder) for f in files)


def test_counts_and_record(source):
    before = _snapshot(source)
    path = make_semisupervised(500, 501, num_labeled=3, num_test=4, seed=0)
    assert os.path.basename(path) == "Dataset501_Src_3lab"
    assert _counts(path) == {"imagesTr": 3, "labelsTr": 3, "imagesUnlabeled": 5 + 2, "imagesTs": 4, "labelsTs": 4}
    rec = _record(path)
    assert (rec["num_labeled"], rec["num_unlabeled"], rec["num_test"], rec["seed"]) == (3, 7, 4, 0)
    assert rec["source"] == source and rec["source_layout"] == "nnunet" and "make_semisupervised" in rec["command"]
    assert sorted(rec["unlabeled_from_source_imagesUnlabeled"]) == ["case_012", "case_013"]
    assert not set(rec["labeled"]) & set(rec["test"]) and not set(rec["labeled"] + rec["test"]) & set(rec["unlabeled"])
    assert sorted(f[:-12] for f in os.listdir(os.path.join(path, "imagesTr"))) == rec["labeled"]
    assert sorted(f[:-7] for f in os.listdir(os.path.join(path, "labelsTs"))) == rec["test"]
    dj = json.load(open(os.path.join(path, "dataset.json")))
    assert (dj["numTraining"], dj["numTest"], dj["numUnlabeled"]) == (3, 4, 7)
    assert _snapshot(source) == before  # the source is read-only input


def test_deterministic_and_test_set_independent_of_n(source):
    r3 = _record(make_semisupervised(500, 510, num_labeled=3, num_test=4, seed=0))
    r5 = _record(make_semisupervised("Dataset500_Src", 511, num_labeled=5, num_test=4, seed=0))
    again = _record(make_semisupervised(source, 512, num_labeled=3, num_test=4, seed=0, target_name="Again"))
    other = _record(make_semisupervised(500, 513, num_labeled=3, num_test=4, seed=1))
    assert r3["test"] == r5["test"] == again["test"]
    assert set(r3["labeled"]) < set(r5["labeled"])  # nested labelled sets
    assert (again["labeled"], again["unlabeled"]) == (r3["labeled"], r3["unlabeled"])
    assert other["test"] != r3["test"]


def test_split_cases_test_set_stable_for_every_n():
    ids = [f"c{i:03d}" for i in range(50)]
    splits = [split_cases(ids, n, 10, seed=7) for n in range(1, 41)]
    assert all(s["test"] == splits[0]["test"] for s in splits)
    assert all(len(s["labeled"]) + len(s["unlabeled"]) + len(s["test"]) == 50 for s in splits)
    with pytest.raises(DatasetSplitError, match="Cannot take"):
        split_cases(ids, 45, 10, seed=0)


def test_refuses_to_overwrite(source):
    make_semisupervised(500, 520, num_labeled=2, num_test=2)
    with pytest.raises(FileExistsError, match="--overwrite"):
        make_semisupervised(500, 520, num_labeled=2, num_test=2)
    with pytest.raises(DatasetSplitError, match="already used"):
        make_semisupervised(500, 520, num_labeled=2, num_test=2, target_name="Else")
    with pytest.raises(DatasetSplitError, match="is the source"):
        make_semisupervised(500, 500, num_labeled=2, target_name="Src", overwrite=True)
    path = make_semisupervised(500, 520, num_labeled=4, num_test=2, target_name="Src_2lab", overwrite=True)
    assert _counts(path)["imagesTr"] == 4


@pytest.mark.hippocampus
def test_msd_hippocampus_folder(hippocampus_dir, nnunet_dirs):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    path = make_semisupervised(str(hippocampus_dir), 504, num_labeled=4, num_test=6, seed=0)
    assert os.path.basename(path) == "Dataset504_Hippocampus_4lab"
    assert _counts(path) == {"imagesTr": 4, "labelsTr": 4, "imagesUnlabeled": 190, "imagesTs": 6, "labelsTs": 6}
    assert all(f.endswith("_0000.nii.gz") for d in ("imagesTr", "imagesUnlabeled", "imagesTs")
               for f in os.listdir(os.path.join(path, d)))
    dj = json.load(open(os.path.join(path, "dataset.json")))
    assert dj["channel_names"] == {"0": "MRI"} and dj["file_ending"] == ".nii.gz" and dj["numTraining"] == 4
    assert dj["labels"] == {"background": 0, "Anterior": 1, "Posterior": 2} and "modality" not in dj
    assert _record(path)["source_layout"] == "msd"
    verify_dataset_integrity(path, num_processes=1)

    r8 = _record(make_semisupervised(str(hippocampus_dir), 508, num_labeled=8, num_test=6, seed=0))
    assert r8["test"] == _record(path)["test"] and set(_record(path)["labeled"]) < set(r8["labeled"])
