"""The kept 2D model (`save_model2d` / `load_model2d`): a tri-planar model's view weights travel with it, and the
2D+3D prediction fuses its views with them, as its last pseudo-masks were fused in training; it runs through
nnU-Net's sliding window, so that the 2D model sees slices of the patch size it learned on."""
import json

import pytest
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.utilities.label_handling.label_handling import LabelManager
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager
from torch import nn
from transformers import SegformerConfig

from nnunetv2_mn.inference.ensemble import INFO_FILE, load_model2d, predict_2d_probabilities, save_model2d
from nnunetv2_mn.mn.slicing import fuse_views, predict_slices
from nnunetv2_mn.models2d import build_branch2d

CONFIG = dict(depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 32, 64], num_attention_heads=[1, 1, 2, 2],
              decoder_hidden_size=32)


def _keep(folder, view_weights, slice_axes=(0, 1, 2)):
    torch.manual_seed(0)
    config = SegformerConfig(**CONFIG, num_labels=3)
    branch = build_branch2d("segformer", num_classes=3, finetune="lora", config=config).eval()
    save_model2d(branch, str(folder), {"kind": "segformer", "finetune": "lora", "source": None,
                                       "config": {**CONFIG, "model_type": "segformer"}, "kwargs": {},
                                       "num_classes": 3, "slice_axes": slice_axes, "view_weights": view_weights})
    return branch


def _predictor(patch_size, network=None):
    """nnU-Net's predictor with the parts its sliding window reads: patch size, three classes, a 3D network."""
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.configuration_manager = ConfigurationManager({"patch_size": list(patch_size), "architecture": {}})
    predictor.label_manager = LabelManager({"background": 0, "a": 1, "b": 2}, None)
    predictor.network, predictor.allowed_mirroring_axes = network or nn.Identity(), (0, 1, 2)
    return predictor


@torch.no_grad()
def test_the_views_are_fused_with_the_kept_weights(tmp_path):
    weights = (0.2, 0.3, 0.5)
    branch = _keep(tmp_path, weights)
    model, info = load_model2d(str(tmp_path))
    assert info["view_weights"] == list(weights)
    data = torch.randn(1, 32, 32, 32)  # one tile
    p = predict_2d_probabilities(_predictor((32, 32, 32)), [(model, info)], data)
    per_view = [predict_slices(branch, data[None], axis) for axis in (0, 1, 2)]
    torch.testing.assert_close(p, fuse_views(per_view, weights)[0], atol=1e-3, rtol=0)  # nnU-Net sums in fp16
    assert (p - fuse_views(per_view)[0]).abs().max() > 2e-2  # not the equal-weight mean


@torch.no_grad()
def test_the_2d_model_sees_slices_of_the_patch_size_on_a_larger_volume(tmp_path):
    # a volume larger than the patch along two axes (one of them odd): sliced whole, the 2D model's output moves
    # with the slice size; through nnU-Net's sliding window every slice has the patch's size
    _keep(tmp_path, None, slice_axes=(0, 2))
    model, info = load_model2d(str(tmp_path))
    seen = []
    model.register_forward_hook(lambda module, args, out: seen.append(tuple(args[0].shape[-2:])))
    network = nn.Conv3d(1, 3, 1)
    predictor = _predictor((32, 40, 36), network)
    data = torch.randn(1, 32, 45, 37)
    p = predict_2d_probabilities(predictor, [(model, info)], data)
    assert p.shape == (3, 32, 45, 37) and p.dtype == torch.float32
    torch.testing.assert_close(p.sum(0), torch.ones(32, 45, 37))  # corners too
    assert seen and set(seen) == {(40, 36), (32, 40)}  # slices along axis 0 and along axis 2 of a 32x40x36 patch
    # the 3D network, its mirroring and its Gaussian weighting are back
    assert predictor.network is network and predictor.use_mirroring and predictor.use_gaussian


def test_equal_weights_when_none_were_kept(tmp_path):
    _keep(tmp_path, None)
    info_file = tmp_path / INFO_FILE
    assert json.loads(info_file.read_text())["view_weights"] is None
    legacy = json.loads(info_file.read_text())
    del legacy["view_weights"]  # a model kept before the weights were saved
    info_file.write_text(json.dumps(legacy))
    assert load_model2d(str(tmp_path))[1]["view_weights"] is None


def test_weights_that_do_not_fit_the_views_are_refused_naming_the_file(tmp_path):
    _keep(tmp_path, (0.5, 0.5))  # two weights, three slice axes
    with pytest.raises(ValueError, match=f"{tmp_path / INFO_FILE}.*one per slice axis"):
        load_model2d(str(tmp_path))
    with pytest.raises(ValueError, match="view_weights"):
        save_model2d(None, str(tmp_path / "x"), {"kind": "segformer"})
