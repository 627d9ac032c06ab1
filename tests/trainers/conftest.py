"""Build trainers directly in Python on the session's planned synthetic dataset."""
import json

import pytest
import torch


@pytest.fixture
def make_trainer(planned_synthetic, tmp_path, monkeypatch):
    """make_trainer(cls, fold='all') -> an initialised trainer writing into a fresh results folder."""
    ws = planned_synthetic
    monkeypatch.setenv("nnUNet_raw", ws["env"]["nnUNet_raw"])
    monkeypatch.setenv("nnUNet_preprocessed", ws["env"]["nnUNet_preprocessed"])
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")

    def make(cls, fold="all", preprocessed=None):
        pre = preprocessed or ws["preprocessed"]
        plans = json.loads((pre / "nnUNetPlans.json").read_text())
        plans["continue_training"] = False
        dataset_json = json.loads((pre / "dataset.json").read_text())
        return cls(plans, "3d_fullres", fold, dataset_json, device=torch.device("cpu"))

    return make
