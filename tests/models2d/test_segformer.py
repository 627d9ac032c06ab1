import re
import time

import pytest
import torch
from torch import nn

from nnunetv2_mn.models2d import Pretrained2DModelNotFound, build_branch2d, check_branch2d_offline
from nnunetv2_mn.models2d.segformer import SegFormerBranch
from nnunetv2_mn.settings import DEFAULT_2D_MODEL as DEFAULT_SEGFORMER_CHECKPOINT

K = 3


def make(config, finetune, seed=0):
    torch.manual_seed(seed)
    return SegFormerBranch(K, finetune, config=config)


def test_head_replaces_classifier_and_reaches_full_resolution(tiny_segformer_config, checks):
    branch = make(tiny_segformer_config, "whole")
    assert isinstance(branch.model.decode_head.classifier, nn.Identity)
    up = branch.head.up
    assert isinstance(up, nn.ConvTranspose2d) and up.kernel_size == (4, 4) and up.stride == (4, 4)
    assert up.in_channels == tiny_segformer_config.decoder_hidden_size + 3 and up.out_channels == K
    for shape in [(2, 3, 32, 32), (1, 3, 30, 37), (1, 3, 35, 64)]:
        checks.forward_shape(branch, K, shape)


def test_lora_targets_use_transformers5_names(tiny_segformer_config):
    branch = make(tiny_segformer_config, "lora")
    leaves = [t.rpartition(".")[2] for t in branch.lora_targets]
    blocks = sum(tiny_segformer_config.depths)
    assert sorted(set(leaves)) == ["fc1", "fc2", "k_proj", "o_proj", "q_proj", "v_proj"]
    assert len(branch.lora_targets) == 6 * blocks
    assert all(t.startswith("model.segformer.") for t in branch.lora_targets)
    lora_a = branch.get_submodule(branch.lora_targets[0]).lora_A["default"]
    assert lora_a.out_features == SegFormerBranch.lora_r == 64


def test_trainable_subsets(tiny_segformer_config, checks):
    lora = checks.trainable_names(make(tiny_segformer_config, "lora"))
    assert any(".lora_A." in n for n in lora) and any(".lora_B." in n for n in lora)
    assert "model.segformer.stages.0.blocks.0.layernorm_before.weight" in lora      # encoder LayerNorm
    assert "model.segformer.stages.0.layer_norm.weight" in lora
    assert "model.decode_head.linear_fuse.weight" not in lora                       # decode head frozen ...
    assert "model.decode_head.batch_norm.bias" in lora                              # ... but biases train
    assert not any(n.endswith("base_layer.weight") for n in lora)                   # pretrained W frozen
    assert "model.segformer.stages.0.patch_embeddings.proj.weight" not in lora
    assert {"head.up.weight", "head.up.bias"} <= lora

    decoder = checks.trainable_names(make(tiny_segformer_config, "decoder"))
    assert decoder and all(n.startswith(("model.decode_head.", "head.")) for n in decoder)
    assert "model.decode_head.linear_fuse.weight" in decoder

    branch = make(tiny_segformer_config, "whole")
    assert checks.trainable_names(branch) == {n for n, _ in branch.named_parameters()}


@pytest.mark.parametrize("finetune", ["lora", "decoder", "whole"])
def test_train_step_and_exact_reload(tiny_segformer_config, checks, finetune):
    branch = make(tiny_segformer_config, finetune)
    x = checks.train_steps(branch, K)
    state = checks.reload_exact(branch, lambda: make(tiny_segformer_config, finetune), x)
    if finetune != "whole":  # the frozen pretrained base is never saved
        assert not any(k.endswith("base_layer.weight") or "patch_embeddings.proj.weight" in k for k in state)


def test_missing_directory_raises_clear_error(tmp_path):
    with pytest.raises(Pretrained2DModelNotFound) as info:
        SegFormerBranch(K, "lora", source=str(tmp_path / "no_such_model"))
    message = str(info.value)
    assert "does not exist" in message and "save_pretrained" in message
    assert "HF_HUB_OFFLINE=1" in message and "nnUNet_MN_2d_model" in message


def test_hub_id_offline_fails_fast_with_clear_error():
    start = time.time()
    with pytest.raises(Pretrained2DModelNotFound) as info:
        SegFormerBranch(K, "lora", source=DEFAULT_SEGFORMER_CHECKPOINT)
    assert time.time() - start < 10
    assert DEFAULT_SEGFORMER_CHECKPOINT in str(info.value) and "save_pretrained" in str(info.value)


def test_from_pretrained_real_path(tiny_segformer_config, tmp_path):
    from transformers import SegformerForSemanticSegmentation

    torch.manual_seed(1)
    original = SegformerForSemanticSegmentation(tiny_segformer_config).eval()
    original.save_pretrained(tmp_path / "tiny")
    branch = SegFormerBranch(K, "lora", source=str(tmp_path / "tiny"))
    assert not branch.loading_info["missing_keys"] and not branch.loading_info["unexpected_keys"]
    loaded = branch.model.segformer
    ref = original.segformer.state_dict()
    pretrained = {k.replace(".base_layer", ""): v for k, v in loaded.state_dict().items() if ".lora_" not in k}
    assert pretrained.keys() == ref.keys()
    assert all(torch.equal(v, ref[k]) for k, v in pretrained.items())
    assert "weights: " + str(tmp_path / "tiny") in branch.describe()


# transformers 4.x key names (official M&N environment) -> current ones, inverted to write an old checkpoint
_OLD_NAMES = [
    (r"^segformer\.stages\.(\d+)\.patch_embeddings\.", r"segformer.encoder.patch_embeddings.\1."),
    (r"^segformer\.stages\.(\d+)\.blocks\.", r"segformer.encoder.block.\1."),
    (r"^segformer\.stages\.(\d+)\.layer_norm\.", r"segformer.encoder.layer_norm.\1."),
    (r"attention\.q_proj\.", "attention.self.query."), (r"attention\.k_proj\.", "attention.self.key."),
    (r"attention\.v_proj\.", "attention.self.value."),
    (r"attention\.sequence_reduction\.sequence_reduction\.", "attention.self.sr."),
    (r"attention\.sequence_reduction\.layer_norm\.", "attention.self.layer_norm."),
    (r"attention\.o_proj\.", "attention.output.dense."), (r"mlp\.fc1\.", "mlp.dense1."),
    (r"mlp\.fc2\.", "mlp.dense2."), (r"layernorm_before\.", "layer_norm_1."), (r"layernorm_after\.", "layer_norm_2."),
    (r"^decode_head\.linear_projections\.", "decode_head.linear_c."),
]


def test_checkpoint_with_transformers4_names_loads_completely(tiny_segformer_config, tmp_path):
    from safetensors.torch import load_file, save_file
    from transformers import SegformerForSemanticSegmentation

    torch.manual_seed(2)
    original = SegformerForSemanticSegmentation(tiny_segformer_config).eval()
    original.save_pretrained(tmp_path / "old")
    path = tmp_path / "old" / "model.safetensors"
    state = load_file(path)
    renamed = {}
    for key, value in state.items():
        for pattern, old in _OLD_NAMES:
            key = re.sub(pattern, old, key)
        renamed[key] = value
    assert "segformer.encoder.block.0.0.attention.self.query.weight" in renamed
    save_file(renamed, path, metadata={"format": "pt"})

    branch = SegFormerBranch(K, "decoder", source=str(tmp_path / "old"))
    assert not branch.loading_info["missing_keys"], branch.loading_info["missing_keys"][:5]
    original.decode_head.classifier = nn.Identity()
    loaded, ref = branch.model.state_dict(), original.state_dict()
    assert loaded.keys() == ref.keys() and all(torch.equal(loaded[k], ref[k]) for k in ref)
    x = torch.randn(1, 3, 32, 32)
    branch.eval()
    with torch.no_grad():
        torch.testing.assert_close(branch.model(pixel_values=x).logits, original(pixel_values=x).logits)


def test_registry_and_offline_check(tiny_segformer_config, tmp_path):
    branch = build_branch2d("segformer", K, config=tiny_segformer_config)
    assert isinstance(branch, SegFormerBranch) and branch.finetune == "lora"

    from transformers import SegformerForSemanticSegmentation

    SegformerForSemanticSegmentation(tiny_segformer_config).save_pretrained(tmp_path / "tiny")
    ok, message = check_branch2d_offline("segformer", str(tmp_path / "tiny"))
    assert ok and message.startswith("OK")
    ok, message = check_branch2d_offline("segformer", str(tmp_path / "missing"))
    assert not ok and "nnUNet_MN_2d_model" in message
    ok, message = check_branch2d_offline("segformer", None)  # the default hub id, not cached here
    assert not ok and DEFAULT_SEGFORMER_CHECKPOINT in message
