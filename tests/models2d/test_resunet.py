import pytest
import torch
from torch import nn

from nnunetv2_mn.models2d import Pretrained2DModelNotFound, build_branch2d, check_branch2d_offline
from nnunetv2_mn.models2d.resunet import ResUNetBranch

K = 3
ENCODER = "test_resnet"          # timm's tiny test ResNet (0.4 M parameters), levels at strides 2..32
DECODER = (32, 16, 16, 8, 8)


def make(finetune, seed=0, **kwargs):
    torch.manual_seed(seed)
    return ResUNetBranch(K, finetune, encoder_name=ENCODER, decoder_channels=DECODER, **kwargs)


def test_forward_full_resolution_any_size(checks):
    branch = make("whole")
    for shape in [(2, 3, 32, 32), (1, 3, 37, 45), (1, 3, 16, 70)]:
        checks.forward_shape(branch, K, shape)
    assert ResUNetBranch.encoder_name == "resnet50"  # the paper's ResUNet


def test_trainable_subsets_and_lora_targets(checks):
    decoder = make("decoder")
    assert checks.trainable_names(decoder) == {n for n, _ in decoder.named_parameters() if n.startswith("decoder.")}
    lora = make("lora")
    convs = {n: m for n, m in lora.named_modules() if n in lora.lora_targets}
    assert convs and all(m.get_base_layer().groups == 1 for m in convs.values())
    names = checks.trainable_names(lora)
    assert any(".lora_A." in n for n in names)
    assert not any(n.startswith("encoder.") and n.endswith("base_layer.weight") for n in names)
    assert "encoder.bn1.weight" in names                             # encoder norms train under LoRA
    assert all(n in names for n, _ in lora.decoder.named_parameters(prefix="decoder"))


def test_frozen_encoder_keeps_batchnorm_statistics():
    branch = make("decoder").train()
    bns = [m for n, m in branch.named_modules() if n.startswith("encoder.") and isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert all(m.training for m in branch.decoder.modules() if isinstance(m, nn.BatchNorm2d))
    stats = [m.running_mean.clone() for m in bns]
    branch(torch.randn(2, 3, 32, 32))
    assert all(torch.equal(s, m.running_mean) for s, m in zip(stats, bns))
    assert not any(k.startswith("encoder.") for k in branch.trainable_state_dict())


@pytest.mark.parametrize("finetune", ["lora", "decoder", "whole"])
def test_train_step_and_exact_reload(checks, finetune):
    branch = make(finetune)
    x = checks.train_steps(branch, K)
    checks.reload_exact(branch, lambda: make(finetune), x)


def test_encoder_weights_from_local_file(tmp_path):
    import timm

    torch.manual_seed(5)
    classifier = timm.create_model(ENCODER, pretrained=False)
    torch.save(classifier.state_dict(), tmp_path / "enc.pth")
    branch = make("whole", source=str(tmp_path / "enc.pth"))
    ref = classifier.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in branch.encoder.state_dict().items())
    assert str(tmp_path / "enc.pth") in branch.describe()

    broken = dict(ref)
    broken.pop("conv1.0.weight")
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(RuntimeError, match="conv1.0.weight"):
        make("whole", source=str(tmp_path / "broken.pth"))
    with pytest.raises(Pretrained2DModelNotFound, match="does not exist"):
        make("whole", source=str(tmp_path / "missing.pth"))


def test_registry():
    branch = build_branch2d("resunet", K, "decoder", encoder_name=ENCODER, decoder_channels=DECODER)
    assert isinstance(branch, ResUNetBranch) and branch.finetune == "decoder"
    with pytest.raises(ValueError, match="config"):
        build_branch2d("resunet", K, config=object())
    with pytest.raises(ValueError, match="Unknown 2D model kind"):
        build_branch2d("unet2d", K)
    ok, message = check_branch2d_offline("resunet", "/nonexistent/weights.pth")
    assert not ok and "does not exist" in message
