import pytest
import torch

from nnunetv2_mn.models2d import Pretrained2DModelNotFound, build_branch2d, check_branch2d_offline
from nnunetv2_mn.models2d.hf_auto import HFSegmentationBranch

K = 4


def upernet_swin_config(num_labels=7):
    from transformers import SwinConfig, UperNetConfig

    backbone = SwinConfig(embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=4,
                          out_features=["stage1", "stage2", "stage3", "stage4"])
    return UperNetConfig(backbone_config=backbone, hidden_size=16, auxiliary_in_channels=32, num_labels=num_labels)


def dpt_config():
    from transformers import DPTConfig

    return DPTConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, image_size=32,
                     patch_size=8, backbone_out_indices=[0, 1], neck_hidden_sizes=[8, 16], fusion_hidden_size=16,
                     head_in_index=-1, num_labels=3)


def make(config, finetune, seed=0):
    torch.manual_seed(seed)
    return HFSegmentationBranch(K, finetune, config=config)


def test_upernet_lora_targets_transformers5_names_and_output_shape(checks):
    config = upernet_swin_config()
    branch = make(config, "lora")
    leaves = {t.rpartition(".")[2] for t in branch.lora_targets}
    assert leaves == {"q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"}
    assert len(branch.lora_targets) == 6 * sum(config.backbone_config.depths)
    assert not any("downsample" in t for t in branch.lora_targets)       # patch merging is no attention/MLP
    assert branch.model.config.num_labels == K and branch.model.auxiliary_head is None
    assert config.num_labels == 7                                        # the caller's config is untouched
    checks.forward_shape(branch, K, (2, 3, 32, 48))


def test_dpt_lora_targets_vit_names_and_upsampling(checks):
    branch = make(dpt_config(), "lora")
    leaves = {t.rpartition(".")[2] for t in branch.lora_targets}
    assert leaves == {"query", "key", "value", "dense"}
    assert all(t.startswith("model.dpt.encoder.") for t in branch.lora_targets)
    checks.forward_shape(branch, K, (2, 3, 32, 32))  # DPT itself returns 2x the input size


def test_trainable_subsets(checks):
    config = upernet_swin_config()
    lora = checks.trainable_names(make(config, "lora"))
    assert any(".lora_B." in n for n in lora)
    assert "model.decode_head.classifier.weight" in lora
    assert not any(n.startswith("model.backbone.") and n.endswith("base_layer.weight") for n in lora)
    assert any(n.startswith("model.backbone.") and "layernorm" in n for n in lora)
    decoder = checks.trainable_names(make(config, "decoder"))
    assert decoder and not any(n.startswith("model.backbone.") for n in decoder)
    whole = make(config, "whole")
    assert checks.trainable_names(whole) == {n for n, _ in whole.named_parameters()}


@pytest.mark.parametrize("finetune", ["lora", "decoder", "whole"])
def test_train_step_and_exact_reload(checks, finetune):
    config = upernet_swin_config()
    branch = make(config, finetune)
    x = checks.train_steps(branch, K)
    checks.reload_exact(branch, lambda: make(config, finetune), x)


def test_from_pretrained_resizes_head(tmp_path):
    from transformers import UperNetForSemanticSegmentation

    torch.manual_seed(3)
    original = UperNetForSemanticSegmentation(upernet_swin_config(num_labels=7))
    original.save_pretrained(tmp_path / "upernet")
    branch = HFSegmentationBranch(K, "lora", source=str(tmp_path / "upernet"))
    assert branch.model.decode_head.classifier.out_channels == K
    assert any("decode_head.classifier" in str(k) for k in branch.loading_info["mismatched_keys"])
    backbone = {k.replace(".base_layer", ""): v for k, v in branch.model.backbone.state_dict().items()
                if ".lora_" not in k}
    ref = original.backbone.state_dict()
    assert backbone.keys() == ref.keys() and all(torch.equal(v, ref[k]) for k, v in backbone.items())
    assert build_branch2d("hf", K, source=str(tmp_path / "upernet")).kind == "hf"
    ok, message = check_branch2d_offline("hf", str(tmp_path / "upernet"))
    assert ok, message


def test_missing_source_raises_clear_error(tmp_path):
    with pytest.raises(Pretrained2DModelNotFound, match="save_pretrained"):
        HFSegmentationBranch(K, "lora", source=str(tmp_path / "nothing_here"))
    with pytest.raises(Pretrained2DModelNotFound, match="HF_HUB_OFFLINE"):
        HFSegmentationBranch(K, "lora", source="openmmlab/upernet-convnext-tiny")
    ok, message = check_branch2d_offline("hf", None)
    assert not ok
