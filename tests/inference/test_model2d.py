"""The kept 2D model (`save_model2d` / `load_model2d`): a tri-planar model's view weights travel with it, and the
2D+3D prediction fuses its views with them, as its last pseudo-masks were fused in training."""
import json

import pytest
import torch
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


@torch.no_grad()
def test_the_views_are_fused_with_the_kept_weights(tmp_path):
    weights = (0.2, 0.3, 0.5)
    branch = _keep(tmp_path, weights)
    model, info = load_model2d(str(tmp_path))
    assert info["view_weights"] == list(weights)
    data = torch.randn(1, 32, 32, 32)
    p = predict_2d_probabilities([(model, info)], data, (32, 32, 32), torch.device("cpu"))
    per_view = [predict_slices(branch, data[None], axis) for axis in (0, 1, 2)]
    torch.testing.assert_close(p, fuse_views(per_view, weights)[0], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(p, fuse_views(per_view)[0], atol=1e-4)  # not the equal-weight mean


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
