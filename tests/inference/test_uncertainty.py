"""Issue 13 (3): voxel uncertainty at predict time (nnUNetv2_mn_predict_uncertainty).

Unit tests of the entropy, of the 2D/3D disagreement and of the mirroring average against hand-computed values, of
when the kept 2D model is used, and of the summary; then a model trained briefly with the stock command: the new
command writes the same segmentations as nnUNetv2_predict, maps with the image's geometry, a summary, and a higher
uncertainty for a noisy copy of a case than for the case; that model kept no 2D model, so the summary says the
disagreement is not available and --disagreement stops. An M&N model, which keeps its 2D model, gets the
disagreement map with the image's geometry and its means in the summary.
"""
import csv
import itertools
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

import nnunetv2_mn.inference.uncertainty as U
from nnunetv2_mn.inference.ensemble import MODEL2D_FOLDER, load_model2d, predict_2d_probabilities
from nnunetv2_mn.inference.uncertainty import (DISAGREEMENT_FOLDER, LogitsAndProbabilities, disagreement_2d3d,
                                               nnUNetPredictorWithUncertainty, normalized_entropy, summarize)

TRAINER = "nnUNetTrainerMeanTeacher_debug"


def test_normalized_entropy_by_hand():
    p = torch.tensor([[0.5, 1.0, 0.25], [0.5, 0.0, 0.75]])
    expected = [1.0, 0.0, -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)) / math.log(2)]
    torch.testing.assert_close(normalized_entropy(p), torch.tensor(expected))
    torch.testing.assert_close(normalized_entropy(torch.full((3, 2), 1 / 3)), torch.ones(2))


def test_disagreement_is_total_variation_by_hand():
    p3d = torch.tensor([[0.5, 1.0, 0.2, 0.3], [0.5, 0.0, 0.8, 0.7]])
    assert torch.equal(disagreement_2d3d(p3d, p3d.clone()), torch.zeros(4))  # same probabilities: 0 exactly
    p2d = torch.tensor([[0.5, 0.0, 0.6, 0.3], [0.5, 1.0, 0.4, 0.7]])
    torch.testing.assert_close(disagreement_2d3d(p3d, p2d), torch.tensor([0.0, 1.0, 0.4, 0.0]))
    # three classes: 1/2 (0.3 + 0 + 0.3); symmetric; the further apart, the higher
    p, q = torch.tensor([[0.2], [0.3], [0.5]]), torch.tensor([[0.5], [0.3], [0.2]])
    torch.testing.assert_close(disagreement_2d3d(p, q), torch.tensor([0.3]))
    assert torch.equal(disagreement_2d3d(q, p), disagreement_2d3d(p, q))
    assert disagreement_2d3d(p, (p + q) / 2) < disagreement_2d3d(p, q)
    # a random volume: in [0, 1], 0 where the 2D model is replaced by the 3D one
    torch.manual_seed(0)
    a, b = torch.softmax(torch.randn(3, 4, 5, 6), 0), torch.softmax(torch.randn(3, 4, 5, 6), 0)
    b[:, :2] = a[:, :2]
    d = disagreement_2d3d(a, b)
    assert d.shape == (4, 5, 6) and torch.all(d[:2] == 0) and torch.all(d[2:] > 0) and d.max() <= 1
    with pytest.raises(ValueError, match="differ in shape"):
        disagreement_2d3d(a, b[:2])


def test_kept_2d_model_used_when_every_fold_has_it(tmp_path, monkeypatch):
    """Which folds kept a 2D model decides: default = use it when all have it (else say why), True = require it,
    False = never. nnU-Net's own initialisation and the 2D model's loading are stubbed out."""
    monkeypatch.setattr(nnUNetPredictor, "initialize_from_trained_model_folder", lambda self, *a, **k: None)
    loaded = []
    monkeypatch.setattr(U, "load_models2d", lambda d, folds, lm: loaded.append(folds) or [("model", {})] * len(folds))
    model_dir = tmp_path / "model"
    for fold in (0, 1):
        (model_dir / f"fold_{fold}").mkdir(parents=True)
    kept = model_dir / "fold_0" / MODEL2D_FOLDER
    kept.mkdir()
    (kept / "model2d.json").write_text("{}")
    (kept / "weights.pth").write_bytes(b"")

    def init(disagreement, folds):
        predictor = nnUNetPredictorWithUncertainty(device=torch.device("cpu"), disagreement=disagreement)
        predictor.initialize_from_trained_model_folder(str(model_dir), folds)
        return predictor

    for default in (None, True):
        predictor = init(default, [0])
        assert predictor.disagreement_unavailable is None and len(predictor.models2d) == 1
    assert loaded == [[0], [0]]
    predictor = init(None, [0, 1])  # fold 1 kept none: entropy only, and why
    assert predictor.models2d == [] and loaded == [[0], [0]]
    missing = str(model_dir / "fold_1" / MODEL2D_FOLDER / "model2d.json")
    assert missing in predictor.disagreement_unavailable and "nnUNetTrainerMN" in predictor.disagreement_unavailable
    assert str(kept / "model2d.json") not in predictor.disagreement_unavailable
    with pytest.raises(FileNotFoundError, match="asked for") as error:
        init(True, [0, 1])
    assert missing in str(error.value) and "nnUNetTrainerMN" in str(error.value)
    predictor = init(False, [0])
    assert predictor.models2d == [] and "switched off" in predictor.disagreement_unavailable
    assert loaded == [[0], [0]]


def test_summary_means_inside_predicted_foreground(tmp_path):
    def write(array, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(sitk.GetImageFromArray(array), str(path))

    seg = np.zeros((2, 3, 4), np.uint8)
    seg[0, :2, :2] = 1
    seg[1, 0, 0] = 2  # 5 foreground voxels
    unc, dis = np.full(seg.shape, 0.1, np.float32), np.zeros(seg.shape, np.float32)
    unc[seg > 0], dis[seg > 0] = 0.6, 0.5
    dis[1, 0, 0] = 1.0
    write(seg, tmp_path / "a.nii.gz")
    write(unc, tmp_path / "uncertainty" / "a.nii.gz")
    write(np.zeros_like(seg), tmp_path / "b.nii.gz")  # nothing segmented
    write(unc, tmp_path / "uncertainty" / "b.nii.gz")
    with pytest.raises(FileNotFoundError, match="disagreement map of a"):
        summarize(str(tmp_path), ".nii.gz")
    write(dis, tmp_path / "uncertainty" / DISAGREEMENT_FOLDER / "a.nii.gz")
    write(dis, tmp_path / "uncertainty" / DISAGREEMENT_FOLDER / "b.nii.gz")
    rows = summarize(str(tmp_path), ".nii.gz")
    assert [r["case"] for r in rows] == ["a", "b"] and rows[0]["foreground_voxels"] == 5
    assert rows[0]["mean_uncertainty_foreground"] == pytest.approx(0.6)
    assert rows[0]["mean_disagreement_foreground"] == pytest.approx((4 * 0.5 + 1.0) / 5)
    assert rows[0]["mean_disagreement_image"] == pytest.approx((4 * 0.5 + 1.0) / 24)
    assert rows[1]["mean_disagreement_foreground"] is None
    assert rows[1]["mean_disagreement_image"] == pytest.approx(0.125)
    summary = json.loads((tmp_path / "uncertainty" / "summary.json").read_text())
    assert summary["disagreement_available"] and "total-variation" in summary["disagreement"]
    assert summary["cases"] == rows
    # no 2D model: the maps are not read, the columns are empty and the summary says why
    rows = summarize(str(tmp_path), ".nii.gz", "no kept 2D model: x/model2d.json not found")
    assert all(r["mean_disagreement_foreground"] is None and r["mean_disagreement_image"] is None for r in rows)
    summary = json.loads((tmp_path / "uncertainty" / "summary.json").read_text())
    assert not summary["disagreement_available"]
    assert summary["disagreement"] == "not available: no kept 2D model: x/model2d.json not found"
    with open(tmp_path / "uncertainty" / "summary.csv") as f:
        assert [r["mean_disagreement_foreground"] for r in csv.DictReader(f)] == ["", ""]


def test_mirroring_averages_logits_as_nnunet_and_softmax_beside_them():
    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 3, 3, padding=1)  # random weights: not flip-equivariant
    x = torch.randn(1, 1, 4, 5, 6)
    stock = nnUNetPredictor(device=torch.device("cpu"), use_mirroring=True)
    stock.network, stock.allowed_mirroring_axes = net, (0, 1, 2)
    ours = nnUNetPredictorWithUncertainty(device=torch.device("cpu"), use_mirroring=True)
    ours.network, ours.allowed_mirroring_axes = LogitsAndProbabilities(net), (0, 1, 2)
    both = ours._internal_maybe_mirror_and_predict(x)
    assert torch.equal(both[:, :3], stock._internal_maybe_mirror_and_predict(x))  # bit for bit
    flips = [()] + [c for i in range(1, 4) for c in itertools.combinations((2, 3, 4), i)]
    with torch.no_grad():
        mean_softmax = sum(torch.softmax(torch.flip(net(torch.flip(x, f)), f) if f else net(x), 1) for f in flips) / 8
    torch.testing.assert_close(both[:, 3:], mean_softmax)
    # without mirroring: the network's logits and their softmax
    stock.use_mirroring = ours.use_mirroring = False
    both = ours._internal_maybe_mirror_and_predict(x)
    assert torch.equal(both[:, :3], stock._internal_maybe_mirror_and_predict(x))
    torch.testing.assert_close(both[:, 3:], torch.softmax(both[:, :3], 1))


@pytest.fixture
def trained(synthetic_own_results, tmp_path_factory, cli):
    ws = synthetic_own_results
    cli(["nnUNetv2_train", ws["dataset_id"], "3d_fullres", "all", "-tr", TRAINER, "-device", "cpu"], ws["env"])
    # inputs: the held-out cases and a noisy copy of each (same geometry)
    inputs = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    pairs = []
    for f in sorted((ws["raw"] / "imagesTs").glob("*_0000.nii.gz")):
        case = f.name[:-len("_0000.nii.gz")]
        img = sitk.ReadImage(str(f))
        arr = sitk.GetArrayFromImage(img).astype(np.float32)
        sitk.WriteImage(img, str(inputs / f.name))
        # strong noise: z-score normalisation would undo a global intensity shift or scale, and a bias-field copy
        # (x 0.2 to x 1.8 across the image) did not raise the uncertainty of this 12-iteration model
        noisy = sitk.GetImageFromArray((arr + rng.normal(0, 3 * arr.std(), arr.shape)).astype(np.float32))
        noisy.CopyInformation(img)
        sitk.WriteImage(noisy, str(inputs / f"{case}noisy_0000.nii.gz"))
        pairs.append((case, f"{case}noisy"))
    return ws, inputs, pairs


def _predict(cli, ws, command, inputs, out, *extra, check=True):
    args = [command, "-i", str(inputs), "-o", str(out), "-d", ws["dataset_id"], "-c", "3d_fullres", "-tr", TRAINER,
            "-f", "all", "-device", "cpu", "-npp", "1", "-nps", "1", *extra]  # with mirroring (TTA)
    return cli(args, ws["env"], check=check)


def _assert_same_geometry(written: sitk.Image, image: sitk.Image) -> None:
    assert written.GetSize() == image.GetSize() and written.GetSpacing() == pytest.approx(image.GetSpacing())
    assert written.GetOrigin() == pytest.approx(image.GetOrigin())
    assert written.GetDirection() == pytest.approx(image.GetDirection())


@pytest.mark.slow
def test_same_segmentation_as_nnunet_plus_maps_and_summary(trained, tmp_path, cli):
    ws, inputs, pairs = trained
    _predict(cli, ws, "nnUNetv2_predict", inputs, tmp_path / "stock")
    proc = _predict(cli, ws, "nnUNetv2_mn_predict_uncertainty", inputs, tmp_path / "ours")
    assert "most uncertain first" in proc.stdout
    cases = sorted(p.name for p in (tmp_path / "stock").glob("*.nii.gz"))
    assert len(cases) == 4 and cases == sorted(p.name for p in (tmp_path / "ours").glob("*.nii.gz"))
    for name in cases:
        stock = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "stock" / name)))
        ours = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ours" / name)))
        np.testing.assert_array_equal(ours, stock)
        # the map has the input image's geometry and values in [0, 1]
        image = sitk.ReadImage(str(inputs / name.replace(".nii.gz", "_0000.nii.gz")))
        umap = sitk.ReadImage(str(tmp_path / "ours" / "uncertainty" / name))
        _assert_same_geometry(umap, image)
        u = sitk.GetArrayFromImage(umap)
        assert u.dtype == np.float32 and 0 <= u.min() and u.max() <= 1 and u.max() > 0

    summary = json.loads((tmp_path / "ours" / "uncertainty" / "summary.json").read_text())
    rows = {r["case"]: r for r in summary["cases"]}
    assert len(rows) == 4
    fg = [r["mean_uncertainty_foreground"] for r in summary["cases"] if r["mean_uncertainty_foreground"] is not None]
    assert fg == sorted(fg, reverse=True)  # most uncertain first
    with open(tmp_path / "ours" / "uncertainty" / "summary.csv") as f:
        assert [r["case"] for r in csv.DictReader(f)] == [r["case"] for r in summary["cases"]]
    # the noisy copies are more uncertain than the clean cases
    for clean, perturbed in pairs:
        assert rows[perturbed]["mean_uncertainty_image"] > rows[clean]["mean_uncertainty_image"], (clean, rows)

    # Mean Teacher keeps no 2D model: entropy maps only, the summary and the output say why; asking for the
    # disagreement stops before predicting, naming the missing file and the trainers that keep it
    assert not summary["disagreement_available"]
    assert not (tmp_path / "ours" / "uncertainty" / DISAGREEMENT_FOLDER).exists()
    assert summary["disagreement"].startswith("not available: no kept 2D model")
    assert "fold_all/model2d/model2d.json" in summary["disagreement"]
    assert all(r["mean_disagreement_foreground"] is None for r in summary["cases"])
    assert "2D/3D disagreement not available" in proc.stdout
    asked = _predict(cli, ws, "nnUNetv2_mn_predict_uncertainty", inputs, tmp_path / "asked", "--disagreement",
                     check=False)
    assert asked.returncode != 0 and not (tmp_path / "asked").exists()
    assert "fold_all/model2d/model2d.json not found" in asked.stderr and "nnUNetTrainerMN" in asked.stderr


@pytest.mark.slow
def test_disagreement_map_of_kept_2d_model(trained_mn, tmp_path, cli):
    ws, model_dir = trained_mn, trained_mn["model_dir"]  # nnUNetv2_train -tr nnUNetTrainerMN_debug, fold 0
    # the held-out cases with an origin and a direction of their own: the maps must carry the input's geometry
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for f in sorted((ws["raw"] / "imagesTs").glob("*_0000.nii.gz")):
        img = sitk.ReadImage(str(f))
        img.SetOrigin((12.5, -30.0, 4.25))
        img.SetDirection((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
        sitk.WriteImage(img, str(inputs / f.name))
    out = tmp_path / "out"
    args = ["nnUNetv2_mn_predict_uncertainty", "-i", str(inputs), "-o", str(out), "-d", ws["dataset_id"],
            "-c", "3d_fullres", "-tr", ws["trainer"], "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1",
            "--disable_tta"]
    proc = cli(args, ws["env"])
    assert "2D/3D disagreement: foreground" in proc.stdout
    summary = json.loads((out / "uncertainty" / "summary.json").read_text())
    assert summary["disagreement_available"] and "total-variation" in summary["disagreement"]
    names = sorted(p.name for p in out.glob("*.nii.gz"))
    assert len(names) == 2 and len(summary["cases"]) == 2
    for row in summary["cases"]:
        name = row["case"] + ".nii.gz"
        image = sitk.ReadImage(str(inputs / name.replace(".nii.gz", "_0000.nii.gz")))
        dmap = sitk.ReadImage(str(out / "uncertainty" / DISAGREEMENT_FOLDER / name))
        _assert_same_geometry(dmap, image)
        d = sitk.GetArrayFromImage(dmap)
        assert d.dtype == np.float32 and 0 <= d.min() and d.max() <= 1 and d.max() > 0
        fg = sitk.GetArrayFromImage(sitk.ReadImage(str(out / name))) > 0
        assert fg.any() and row["mean_disagreement_foreground"] == pytest.approx(float(d[fg].mean()), rel=1e-5)
        assert row["mean_disagreement_image"] == pytest.approx(float(d.mean()), rel=1e-5)

    # on the network's grid: 1/2 sum_c |softmax(nnU-Net's logits) - the 2D model's probabilities| (the ensemble's
    # P_3D and P_2D; a volume larger than the patch: several overlapping tiles, whose mean softmax is not P_3D)
    torch.manual_seed(0)
    data = torch.randn(1, 20, 36, 40)
    plain = nnUNetPredictor(device=torch.device("cpu"), use_mirroring=False)
    plain.initialize_from_trained_model_folder(str(model_dir), [0])
    ours = nnUNetPredictorWithUncertainty(device=torch.device("cpu"), use_mirroring=False, disagreement=True)
    ours.initialize_from_trained_model_folder(str(model_dir), [0])
    model, info = load_model2d(str(model_dir / "fold_0" / MODEL2D_FOLDER))
    with torch.no_grad():
        p3d = torch.softmax(plain.predict_logits_from_preprocessed_data(data).float(), 0)
        p2d = predict_2d_probabilities(plain, [(model, info)], data)  # the ensemble's P_2D
        logits = plain.predict_logits_from_preprocessed_data(data)
        assert torch.equal(ours.predict_logits_from_preprocessed_data(data), logits)  # the segmentation is the 3D one
    expected = 0.5 * (p3d - p2d).abs().sum(0)
    np.testing.assert_allclose(ours.last_disagreement, expected.numpy(), atol=1e-5)
    assert ours.last_disagreement.max() > 0

    # switched off, into the same folder: the maps of the first run are removed, the summary says why
    cli(args + ["--no_disagreement"], ws["env"])
    assert not list((out / "uncertainty" / DISAGREEMENT_FOLDER).iterdir())
    summary = json.loads((out / "uncertainty" / "summary.json").read_text())
    assert summary["disagreement"] == "not available: switched off (--no_disagreement)"
