import pytest
import torch

from nnunetv2_mn.models2d import build_branch2d, check_branch2d_offline
from nnunetv2_mn.models2d.effnet_lite0 import (PREPROCESSING, TIMM_NAME, EffNetLite0UNetBranch,
                                                build_effnet_lite0_classifier, convert_lite0_state_dict,
                                                packaged_weights_path, preprocess_imagenet)

K = 3
CAT = {281, 282, 283, 284, 285}          # tabby, tiger cat, Persian, Siamese, Egyptian cat
CUP = {967, 968, 504}                    # espresso, cup, coffee mug


@pytest.fixture(scope="module")
def packaged_state():
    return torch.load(packaged_weights_path(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def images():
    from skimage import data

    return {"chelsea": preprocess_imagenet(data.chelsea()), "coffee": preprocess_imagenet(data.coffee())}


def _timm_classifier():
    import timm

    return timm.create_model(TIMM_NAME, pretrained=False)


def test_every_key_matched_and_shape_checked(packaged_state):
    model = _timm_classifier()
    converted = convert_lite0_state_dict(packaged_state, model)
    assert len(converted) == len(packaged_state) == len(model.state_dict()) == 296
    assert set(converted) == set(model.state_dict())
    assert all(converted[k].shape == v.shape for k, v in model.state_dict().items())
    assert torch.equal(converted["blocks.6.0.conv_pwl.weight"], packaged_state["_blocks.15._project_conv.weight"])

    dropped = dict(packaged_state)
    dropped.pop("_blocks.3._bn1.running_var")
    with pytest.raises(ValueError, match="missing"):
        convert_lite0_state_dict(dropped, model)
    reshaped = dict(packaged_state)
    reshaped["_fc.weight"] = reshaped["_fc.weight"][:10]
    with pytest.raises(ValueError, match="shape"):
        convert_lite0_state_dict(reshaped, model)


def test_architecture_matches_the_tf_port():
    model = _timm_classifier()
    assert model.bn1.eps == 1e-3                        # TF BatchNorm epsilon
    assert type(model.conv_stem).__name__ == "Conv2dSame"  # TF 'SAME' padding
    assert PREPROCESSING["mean"] == (0.5, 0.5, 0.5) and PREPROCESSING["size"] == 224


def test_pretrained_classifies_imagenet_images_random_does_not(images):
    pretrained = build_effnet_lite0_classifier(pretrained=True)
    torch.manual_seed(0)
    random = build_effnet_lite0_classifier(pretrained=False)
    with torch.no_grad():
        p = {name: pretrained(x).softmax(1)[0] for name, x in images.items()}
        r = {name: random(x).softmax(1)[0] for name, x in images.items()}
    assert p["chelsea"].argmax().item() in CAT and p["coffee"].argmax().item() in CUP
    assert p["chelsea"][sorted(CAT)].sum() > 0.5 and p["coffee"][sorted(CUP)].sum() > 0.5
    assert r["chelsea"].argmax().item() not in CAT and r["coffee"].argmax().item() not in CUP
    assert r["chelsea"][sorted(CAT)].sum() < 0.05 and r["coffee"][sorted(CUP)].sum() < 0.05


def test_branch_encoder_carries_the_imagenet_weights(packaged_state, checks):
    branch = EffNetLite0UNetBranch(K, "whole")
    converted = convert_lite0_state_dict(packaged_state, _timm_classifier())
    encoder = branch.encoder.state_dict()
    assert all(torch.equal(v, converted[k]) for k, v in encoder.items())
    assert set(converted) - set(encoder) == {k for k in converted if k.startswith(("conv_head.", "bn2.", "classifier."))}
    assert "ImageNet" in branch.describe()
    checks.forward_shape(branch, K, (2, 3, 40, 56))


@pytest.mark.parametrize("finetune", ["lora", "whole"])
def test_train_step_and_exact_reload(checks, finetune):
    def make():
        torch.manual_seed(0)
        return EffNetLite0UNetBranch(K, finetune, decoder_channels=(16, 16, 8, 8, 8))

    branch = make()
    x = checks.train_steps(branch, K, steps=2, size=(2, 3, 32, 32))
    checks.reload_exact(branch, make, x)


def test_random_source_and_registry():
    random = build_branch2d("effnet_lite0", K, "whole", source="random")
    assert "random init" in random.describe()
    ok, message = check_branch2d_offline("effnet_lite0")
    assert ok and "ImageNet" in message
