"""nnUNetTrainerSelfTraining through the stock console scripts: teacher epochs, pseudo-labels of the unlabelled
cases, a freshly initialised student on labelled + pseudo-labelled cases, --c in the student's epochs, predict."""
import re

import numpy as np
import pytest
import torch

from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

TRAINER = "nnUNetTrainerSelfTraining_debug"
pytestmark = pytest.mark.slow


def test_self_training_teacher_pseudo_labels_student_resume_predict(planned_synthetic, tmp_path, stock_workflow):
    ws = planned_synthetic
    wf = stock_workflow(ws, TRAINER)
    wf.train()
    out = wf.output_folder
    log_text = sorted(out.glob("training_log_*.txt"))[-1].read_text()
    assert "pseudo-labels of 4 unlabelled cases written" in log_text
    assert "the student starts from a fresh initialisation" in log_text

    # every unlabelled case became a training case whose label is a prediction with the dataset's label values
    folder = out / "pseudo_labels"
    unlabelled = {p.name.split("_0000")[0] for p in (ws["raw"] / "imagesUnlabeled").iterdir()}
    assert (folder / "complete.txt").is_file() and set(nnUNetDatasetBlosc2.get_identifiers(str(folder))) == unlabelled
    data, seg, _, props = nnUNetDatasetBlosc2(str(folder)).load_case(sorted(unlabelled)[0])
    assert set(np.unique(np.asarray(seg))) <= {0, 1, 2} and set(props["class_locations"]) == {1, 2}

    final = torch.load(out / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    log = final["logging"]
    # teacher epochs: labelled only; student epochs: labelled and pseudo-labelled, drawn uniformly (4 of 9 cases)
    assert log["b_u"][:2] == [0, 0] and sum(log["b_u"][2:]) > 0
    # the default 'add': the whole labelled batch (B = 2) in every step, the pseudo-labelled samples on top
    assert log["b_l"] == [2] * len(log["b_u"])
    # the learning rate restarts for the student
    assert log["lrs"][2] == pytest.approx(log["lrs"][0]) and log["lrs"][1] < log["lrs"][0]

    # --c in the student's epochs takes the pseudo-labels back (here: from the final checkpoint, nothing left to do)
    wf.resume()
    # without them it refuses instead of training the student on nothing
    (folder / "complete.txt").unlink()
    proc = wf.train("--c", check=False)
    assert proc.returncode != 0 and "pseudo-labels of its teacher" in proc.stdout + proc.stderr

    pred = wf.predict(tmp_path / "pred")
    assert sorted(p.name for p in pred.glob("*.nii.gz")) == sorted(p.name for p in (ws["raw"] / "labelsTs").iterdir())
    assert re.search(r"Epoch 3", log_text)
