"""Issue 13 (3): voxel uncertainty at predict time (nnUNetv2_mn_predict_uncertainty).

Unit tests of the entropy and of the mirroring average against hand-computed values; then a model trained briefly
with the stock command: the new command writes the same segmentations as nnUNetv2_predict, maps with the image's
geometry, a summary, and a higher uncertainty for a noisy copy of a case than for the case.
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

from nnunetv2_mn.inference.uncertainty import LogitsAndProbabilities, nnUNetPredictorWithUncertainty, normalized_entropy

TRAINER = "nnUNetTrainerMeanTeacher_debug"


def test_normalized_entropy_by_hand():
    p = torch.tensor([[0.5, 1.0, 0.25], [0.5, 0.0, 0.75]])
    expected = [1.0, 0.0, -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)) / math.log(2)]
    torch.testing.assert_close(normalized_entropy(p), torch.tensor(expected))
    torch.testing.assert_close(normalized_entropy(torch.full((3, 2), 1 / 3)), torch.ones(2))


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


def _predict(cli, ws, command, inputs, out):
    args = [command, "-i", str(inputs), "-o", str(out), "-d", ws["dataset_id"], "-c", "3d_fullres", "-tr", TRAINER,
            "-f", "all", "-device", "cpu", "-npp", "1", "-nps", "1"]  # with mirroring (TTA)
    return cli(args, ws["env"])


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
        assert umap.GetSize() == image.GetSize() and umap.GetSpacing() == pytest.approx(image.GetSpacing())
        assert umap.GetOrigin() == pytest.approx(image.GetOrigin())
        assert umap.GetDirection() == pytest.approx(image.GetDirection())
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
