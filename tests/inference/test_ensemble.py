"""Issue 13 (4): 2D+3D ensemble prediction (nnUNetv2_mn_predict_ensemble).

A model trained with the stock command (nnUNetv2_train -tr nnUNetTrainerMN_debug) keeps its 2D model in
fold_0/model2d; the new command at weight 0 writes exactly nnUNetv2_predict's files, at weight 0.5 the stock layout
with probabilities (1 - w) P_3D + w P_2D.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

from nnunetv2_mn.inference.ensemble import (MODEL2D_FOLDER, load_model2d, nnUNetPredictor2D3D,
                                            predict_2d_probabilities)

pytestmark = pytest.mark.slow


def _files(folder: Path) -> dict:
    """Every file's bytes; the record of the call's arguments without its output folder."""
    files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
    args = json.loads(files.pop("predict_from_raw_data_args.json"))
    assert Path(args.pop("output_folder_or_list_of_truncated_output_files")) == folder
    return {**files, "args": args}


def test_kept_2d_model_and_ensemble_prediction(trained_mn, tmp_path, cli):
    ws, model_dir = trained_mn, trained_mn["model_dir"]  # nnUNetv2_train -tr nnUNetTrainerMN_debug, fold 0
    kept = model_dir / "fold_0" / MODEL2D_FOLDER
    info = json.loads((kept / "model2d.json").read_text())
    assert (info["kind"], info["finetune"], info["slice_axes"], info["num_classes"]) == ("segformer", "lora", [0], 3)
    assert info["config"]["model_type"] == "segformer" and (kept / "weights.pth").is_file()

    common = ["-i", str(ws["raw"] / "imagesTs"), "-d", ws["dataset_id"], "-c", "3d_fullres", "-tr", ws["trainer"],
              "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1"]
    stock, w0, w5 = tmp_path / "stock", tmp_path / "w0", tmp_path / "w05"
    cli(["nnUNetv2_predict", "-o", str(stock), *common], ws["env"])
    cli(["nnUNetv2_mn_predict_ensemble", "-o", str(w0), "--weight_2d", "0", *common], ws["env"])
    assert _files(stock) == _files(w0)  # byte for byte: segmentations, dataset.json, plans.json
    cli(["nnUNetv2_mn_predict_ensemble", "-o", str(w5), "--disable_tta", "--save_probabilities", *common], ws["env"])
    cases = sorted(p.name for p in (ws["raw"] / "labelsTs").iterdir())
    assert sorted(p.name for p in w5.glob("*.nii.gz")) == cases  # nnU-Net's output layout
    for npz in w5.glob("*.npz"):
        probs = np.load(npz)["probabilities"]
        np.testing.assert_allclose(probs.sum(0), 1, atol=1e-3)
    bad = cli(["nnUNetv2_mn_predict_ensemble", "-o", str(tmp_path / "bad"), "--weight_2d", "1.5", *common],
              ws["env"], check=False)
    assert bad.returncode != 0 and "[0, 1]" in bad.stderr

    # the mixed probabilities on a preprocessed case: (1 - w) softmax(stock logits) + w P_2D, returned as log; P_2D
    # from nnU-Net's sliding window over the 2D model's slice predictions (tests/inference/test_model2d.py)
    torch.manual_seed(0)
    data = torch.randn(1, 20, 36, 40)  # not a multiple of the patch: padded for the 2D model as for the 3D one
    plain = nnUNetPredictor(device=torch.device("cpu"), use_mirroring=False)
    plain.initialize_from_trained_model_folder(str(model_dir), [0])
    ours = nnUNetPredictor2D3D(device=torch.device("cpu"), use_mirroring=False, weight_2d=0.25)
    ours.initialize_from_trained_model_folder(str(model_dir), [0])
    model, info = load_model2d(str(kept))
    with torch.no_grad():
        p2d = predict_2d_probabilities(plain, [(model, info)], data)
        p3d = torch.softmax(plain.predict_logits_from_preprocessed_data(data).float(), 0)
        mixed = torch.softmax(ours.predict_logits_from_preprocessed_data(data), 0)
    torch.testing.assert_close(mixed, 0.75 * p3d + 0.25 * p2d, atol=1e-5, rtol=1e-4)
    with pytest.raises(FileNotFoundError, match="model2d.json"):
        load_model2d(str(tmp_path))
