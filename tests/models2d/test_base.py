import pytest
import torch
from torch import nn

from nnunetv2_mn.models2d.base import Branch2D


class Toy(Branch2D):
    kind = "toy"

    def __init__(self, finetune="decoder"):
        super().__init__(2, finetune)
        self.encoder = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4))
        self.decoder = nn.Sequential(nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2))
        self.setup_finetuning()

    def is_trainable(self, name, param):
        return self.finetune == "whole" or name.startswith("decoder.")

    def forward(self, x):
        return self.decoder(self.encoder(x))


class ToyTransformer(Branch2D):
    """Attention/MLP-named linear layers and a head; no LoRA code of its own, only its trainable rule."""

    kind = "toy_transformer"
    lora_r = 4

    def __init__(self, finetune="lora"):
        super().__init__(2, finetune)
        self.encoder = nn.ModuleDict({"q_proj": nn.Linear(3, 8), "norm": nn.LayerNorm(8), "fc1": nn.Linear(8, 8)})
        self.head = nn.Linear(8, 2)
        self.setup_finetuning()

    def is_trainable(self, name, param):
        return self.finetune == "whole" or name.startswith("head.")

    def forward(self, x):
        h = x.permute(0, 2, 3, 1)
        h = self.encoder["fc1"](self.encoder["norm"](self.encoder["q_proj"](h)))
        return self.head(h).permute(0, 3, 1, 2)


def test_unknown_strategy_rejected():
    with pytest.raises(ValueError, match="fine-tuning strategy"):
        Toy("adapter")


def test_frozen_norm_stays_in_eval_and_is_not_saved():
    toy = Toy("decoder").train()
    assert not toy.encoder[1].training and toy.decoder[1].training
    before = toy.encoder[1].running_mean.clone()
    toy(torch.randn(2, 3, 8, 8))
    assert torch.equal(before, toy.encoder[1].running_mean)
    assert set(toy.trainable_state_dict()) == {k for k in toy.state_dict() if k.startswith("decoder.")}
    toy.eval()
    assert not toy.decoder[1].training
    whole = Toy("whole").train()
    assert whole.encoder[1].training and set(whole.trainable_state_dict()) == set(whole.state_dict())


def test_load_trainable_state_dict_is_strict():
    a, b = Toy(), Toy()
    state = a.trainable_state_dict()
    b.load_trainable_state_dict(state)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in state.items())
    state.pop("decoder.0.weight")
    with pytest.raises(RuntimeError, match="missing"):
        b.load_trainable_state_dict(state)
    assert "toy (decoder)" in a.describe()


def test_lora_and_freezing_come_from_the_base():
    toy = ToyTransformer("lora")
    assert toy.lora_targets == ["encoder.fc1", "encoder.q_proj"]
    q_proj = toy.encoder["q_proj"]
    assert q_proj.lora_A["default"].out_features == 4                       # subclass setting
    assert q_proj.scaling["default"] == Branch2D.lora_alpha / 4 and q_proj.lora_dropout["default"].p == 0.1
    trainable = {n for n, p in toy.named_parameters() if p.requires_grad}
    assert trainable == {f"encoder.{m}.lora_{ab}.default.weight" for m in ("q_proj", "fc1") for ab in "AB"} \
        | {"head.weight", "head.bias"}                                       # adapters + the subclass's rule
    assert set(toy.trainable_state_dict()) == trainable
    assert toy.describe().endswith("; LoRA on 2 layers")
    assert toy(torch.randn(2, 3, 5, 6)).shape == (2, 2, 5, 6)
    whole = ToyTransformer("whole")
    assert whole.lora_targets == [] and "LoRA" not in whole.describe()
    assert all(p.requires_grad for p in whole.parameters())


def test_lora_without_targets_is_an_error():
    with pytest.raises(ValueError, match="no LoRA target module"):
        Toy("lora")


def test_package_exports():
    import nnunetv2_mn.models2d as m

    assert set(m.BRANCH_CLASSES) == {"segformer", "hf", "resunet", "effnet_lite0"}
    assert m.ResUNetBranch.kind == "resunet" and m.branch_class("effnet_lite0").kind == "effnet_lite0"
    with pytest.raises(AttributeError):
        m.NoSuchThing


def test_pretrained_flag_tells_whether_the_frozen_base_can_be_rebuilt(tmp_path):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation
    from nnunetv2_mn.models2d import build_branch2d

    cfg = SegformerConfig(depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 32, 64], num_attention_heads=[1, 1, 1, 2],
                          decoder_hidden_size=32)
    assert not build_branch2d("segformer", 3, "lora", config=cfg).pretrained
    SegformerForSemanticSegmentation(cfg).save_pretrained(tmp_path / "m")
    assert build_branch2d("segformer", 3, "lora", source=str(tmp_path / "m"), local_files_only=True).pretrained
    assert build_branch2d("effnet_lite0", 3, "whole").pretrained
    assert not build_branch2d("effnet_lite0", 3, "whole", source="random").pretrained


def _randomise_lora(branch):
    """peft starts lora_B at zero (B·A = 0, merging would change nothing): give every adapter a non-zero B."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in branch.named_parameters():
            if ".lora_B." in name:
                p.normal_(0, 0.5)
    return branch


def _lora_branches(tiny_segformer_config):
    from nnunetv2_mn.models2d import build_branch2d

    return {"toy": ToyTransformer("lora"),
            "segformer": build_branch2d("segformer", 3, "lora", config=tiny_segformer_config),  # linear adapters
            "effnet_lite0": build_branch2d("effnet_lite0", 3, "lora", source="random")}         # 1x1-conv adapters


@pytest.mark.parametrize("kind", ["toy", "segformer", "effnet_lite0"])
def test_teacher_mode_merges_lora_with_the_same_output_and_restores_everything(kind, tiny_segformer_config, checks):
    branch = _randomise_lora(_lora_branches(tiny_segformer_config)[kind]).eval()
    x = torch.randn(2, 3, 32, 32)
    layers = branch.lora_layers()
    assert len(layers) == len(branch.lora_targets) > 0
    bases = {id(m): m.get_base_layer().weight.data_ptr() for m in layers}
    state = {k: v.clone() for k, v in branch.state_dict().items()}
    keys, grads = list(branch.trainable_state_dict()), {n: p.requires_grad for n, p in branch.named_parameters()}
    with torch.no_grad():
        expected = branch(x)
        with branch.teacher_mode() as teacher:
            assert teacher is branch and all(m.merged for m in layers)
            assert all(m.get_base_layer().weight.data_ptr() != bases[id(m)] for m in layers)  # merged into a copy
            merged = branch(x)
        assert not any(m.merged for m in layers)
        again = branch(x)
    assert not torch.equal(merged, expected)  # merged weights really were used ...
    torch.testing.assert_close(merged, expected, rtol=1e-4, atol=1e-4)  # ... and give the same output
    assert torch.equal(again, expected)
    # the very storage of the unmerged base is back, bit for bit; what trains and what is saved did not change
    assert all(m.get_base_layer().weight.data_ptr() == bases[id(m)] for m in layers)
    assert branch.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in branch.state_dict().items())
    assert list(branch.trainable_state_dict()) == keys
    assert {n: p.requires_grad for n, p in branch.named_parameters()} == grads
    # the adapters learn afterwards (lr 1e-3: with the randomised, large B above, AdamW at 1e-2 overshoots on the
    # EfficientNet-Lite0 U-Net for most seeds, merged or not)
    checks.train_steps(branch, 3 if kind != "toy" else 2, steps=3, lr=1e-3)


def test_teacher_mode_does_nothing_in_train_mode_or_without_lora():
    toy = _randomise_lora(ToyTransformer("lora")).train()
    with toy.teacher_mode():
        assert not any(m.merged for m in toy.lora_layers())  # dropout active: a merged pass would differ
    whole = ToyTransformer("whole").eval()
    assert whole.lora_layers() == []
    with whole.teacher_mode():
        pass


def test_teacher_mode_restores_the_adapters_after_an_error():
    toy = _randomise_lora(ToyTransformer("lora")).eval()
    bases = [m.get_base_layer().weight.data_ptr() for m in toy.lora_layers()]
    with pytest.raises(RuntimeError, match="boom"):
        with toy.teacher_mode():
            raise RuntimeError("boom")
    assert not any(m.merged for m in toy.lora_layers())
    assert [m.get_base_layer().weight.data_ptr() for m in toy.lora_layers()] == bases


def test_teacher_mode_merges_in_the_weights_precision_under_autocast():
    toy = _randomise_lora(ToyTransformer("lora")).eval()
    x = torch.randn(2, 3, 5, 6)
    with torch.no_grad():
        expected = toy(x)
        with torch.autocast("cpu", dtype=torch.bfloat16), toy.teacher_mode():
            assert all(m.get_base_layer().weight.dtype == torch.float32 for m in toy.lora_layers())
        with toy.teacher_mode():
            torch.testing.assert_close(toy(x), expected, rtol=1e-5, atol=1e-5)
