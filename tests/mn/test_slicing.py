"""Slicing 3D patches for the 2D model and stacking the predictions back (Eq. 2, 8)."""
import pytest
import torch

from nnunetv2_mn.mn.slicing import (TEACHER_PASS, SlicePass, predict_slices, predict_views, sample_slice_index,
                                    slices_to_volume, take_slices, to_three_channels, volume_to_slices)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_round_trip(axis):
    x = torch.randn(2, 3, 5, 6, 7)
    s = volume_to_slices(x, axis)
    assert s.shape == (2 * x.shape[2 + axis], 3, *[n for i, n in enumerate(x.shape[2:]) if i != axis])
    torch.testing.assert_close(slices_to_volume(s, 2, axis), x)


def test_slices_are_the_volume_planes_in_order():
    x = torch.randn(2, 1, 4, 5, 6)
    s = volume_to_slices(x, 0)
    torch.testing.assert_close(s[0, 0], x[0, 0, 0])
    torch.testing.assert_close(s[3, 0], x[0, 0, 3])
    torch.testing.assert_close(s[4, 0], x[1, 0, 0])  # second volume follows the first
    s2 = volume_to_slices(x, 2)
    torch.testing.assert_close(s2[7, 0], x[1, 0, :, :, 1])


def test_three_channel_mapping():
    one = torch.randn(4, 1, 8, 8)
    assert torch.equal(to_three_channels(one)[:, 2], one[:, 0])
    two = torch.randn(4, 2, 8, 8)
    torch.testing.assert_close(to_three_channels(two)[:, 2], two.mean(1))
    five = torch.randn(4, 5, 8, 8)
    out = to_three_channels(five)
    torch.testing.assert_close(out[:, 1], five[:, [1, 4]].mean(1))
    assert out.shape == (4, 3, 8, 8)


@pytest.mark.parametrize("chunk", [0, 3, 100])
def test_predict_slices_is_slice_wise_and_chunking_changes_nothing(chunk):
    conv = torch.nn.Conv2d(3, 2, 3, padding=1)
    x = torch.randn(2, 1, 5, 8, 9)
    out = predict_slices(conv, x, axis=0, chunk_size=chunk)
    assert out.shape == (2, 2, 5, 8, 9)
    torch.testing.assert_close(out[1, :, 3], conv(x[1:2, :, 3].expand(-1, 3, -1, -1))[0])


@pytest.mark.parametrize("n,fraction,k", [(40, 0.25, 10), (7, 0.25, 2), (3, 0.01, 1)])
def test_sample_slice_index_draws_distinct_sorted_positions(n, fraction, k):
    seen = set()
    for _ in range(20):
        index = sample_slice_index(n, fraction)
        assert index.shape == (k,) and index.dtype == torch.long
        assert torch.equal(index, index.sort().values) and len(set(index.tolist())) == k
        assert 0 <= int(index.min()) and int(index.max()) < n
        seen.update(index.tolist())
    assert len(seen) > k  # a fresh subset each call


def test_sample_slice_index_all_slices_and_bad_fractions():
    assert sample_slice_index(40, 1.0) is None
    assert sample_slice_index(2, 0.9) is None  # rounds to every slice
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="slice fraction"):
            sample_slice_index(40, bad)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_take_slices_commutes_with_slice_wise_prediction(axis):
    conv = torch.nn.Conv2d(3, 2, 3, padding=1)
    x = torch.randn(2, 1, 5, 6, 7)
    index = torch.tensor([0, 3])
    sub = take_slices(x, index, axis)
    assert sub.shape[2 + axis] == 2 and torch.equal(sub.select(2 + axis, 1), x.select(2 + axis, 3))
    torch.testing.assert_close(predict_slices(conv, sub, axis), take_slices(predict_slices(conv, x, axis), index, axis))
    assert take_slices(x, None, axis) is x


def _lora_branch():
    """A small Branch2D with LoRA on a convolution and a linear layer, adapters non-zero (peft starts B at 0)."""
    from torch import nn

    from nnunetv2_mn.models2d.base import Branch2D

    class ConvLinear(Branch2D):
        kind = "conv_linear"
        lora_r = 2

        def __init__(self):
            super().__init__(2, "lora")
            self.conv = nn.Conv2d(3, 4, 1)
            self.fc1 = nn.Linear(4, 4)
            self.head = nn.Conv2d(4, 2, 3, padding=1)
            self.setup_finetuning()

        def lora_target_modules(self):
            return ["conv", "fc1"]

        def is_trainable(self, name, param):
            return name.startswith("head.")

        def forward(self, x):
            h = self.fc1(self.conv(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            return self.head(torch.relu(h))

    torch.manual_seed(0)
    branch = ConvLinear()
    with torch.no_grad():
        for name, p in branch.named_parameters():
            if ".lora_B." in name:
                p.normal_(0, 0.05)
    return branch.eval()


@pytest.mark.parametrize("settings", [TEACHER_PASS, SlicePass(merge_lora=True), SlicePass(inference_mode=True),
                                      SlicePass(channels_last=True), SlicePass(True, True, True)])
def test_teacher_pass_settings_give_the_plain_pass_output(settings):
    branch = _lora_branch()
    x = torch.randn(2, 1, 5, 8, 9)
    with torch.no_grad():
        plain = predict_slices(branch, x, 0, 3)
        fast = predict_slices(branch, x, 0, 3, settings)
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4)
    assert not fast.is_inference() and fast.dtype == torch.float32
    assert not any(m.merged for m in branch.lora_layers())  # adapters active again afterwards


def test_teacher_pass_output_is_a_target_a_student_can_learn_from():
    """Pseudo-masks from an inference-mode pass serve in a student's loss and its backward (the 3D student's KL)."""
    teacher = _lora_branch()
    x = torch.randn(1, 1, 4, 6, 6)
    with torch.no_grad():
        p = torch.softmax(predict_slices(teacher, x, 0, 0, TEACHER_PASS), 1)
    student = torch.randn(1, 2, 4, 6, 6, requires_grad=True)
    loss = (p * (torch.log(p) - torch.log_softmax(student, 1))).sum(1).mean()
    loss.backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()
    teacher.train()  # and the teacher learns as a student afterwards
    predict_slices(teacher, x, 0).sum().backward()
    assert teacher.conv.lora_A["default"].weight.grad is not None


def test_merged_teacher_over_several_views_merges_once_and_matches():
    branch = _lora_branch()
    x = torch.randn(1, 1, 5, 6, 7)
    with torch.no_grad():
        plain_fused, plain_logits = predict_views(branch, x, (0, 1, 2))
        fused, logits = predict_views(branch, x, (0, 1, 2), settings=TEACHER_PASS)
    torch.testing.assert_close(fused, plain_fused, rtol=1e-4, atol=1e-4)
    for a, b in zip(logits, plain_logits):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert not any(m.merged for m in branch.lora_layers())


def test_cpu_bf16_pass_returns_fp32_logits_close_to_the_fp32_pass():
    branch = _lora_branch()
    x = torch.randn(2, 1, 4, 8, 8)
    with torch.no_grad():
        plain = predict_slices(branch, x, 0)
        bf16 = predict_slices(branch, x, 0, 0, SlicePass(cpu_bf16=True))
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, plain)
    assert (bf16 - plain).abs().max() <= 0.02 * plain.abs().max()  # bf16's 8-bit mantissa


def test_pass_settings_work_on_plain_callables_too():
    conv = torch.nn.Conv2d(3, 2, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.randn(2, 1, 5, 8, 9)
    with torch.no_grad():
        torch.testing.assert_close(predict_slices(conv, x, 1, 4, TEACHER_PASS), predict_slices(conv, x, 1))
