"""Issue #12's cost levers in nnUNetTrainerMN: the teacher's passes with LoRA merged, channels-last, opt-in bf16 on CPU
(`teacher_merge_lora`, `channels_last_2d`, `cpu_bf16_2d`, `slice_pass`). Each test breaks if the trainer stops wiring a
lever into its 2D passes, or if a lever leaks into what the student learns or what a checkpoint holds."""
import copy
import json

import numpy as np
import pytest
import torch

from nnunetv2_mn.mn.slicing import predict_slices
from nnunetv2_mn.trainers import nnUNetTrainerMN, nnUNetTrainerMN_CPUbf16, nnUNetTrainerMN_debug


class _Bf16(nnUNetTrainerMN_debug):
    cpu_bf16_2d = nnUNetTrainerMN_CPUbf16.cpu_bf16_2d


class _Plain(nnUNetTrainerMN_debug):
    teacher_merge_lora = False
    channels_last_2d = False


class _Whole(nnUNetTrainerMN_debug):
    branch2d_finetune = "whole"


def _batch(trainer, b_l, b_u, seed=0):
    """(data_l, target_l, data_u): random one-channel patches, labels 0..2 per deep-supervision output."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b_l + b_u, 1, *trainer.configuration_manager.patch_size, generator=g)
    with torch.no_grad():
        outs = trainer.network(x[:1])
    target = [torch.randint(0, 3, (b_l, 1, *o.shape[2:]), generator=g).float() for o in outs]
    return x[:b_l], target, x[b_l:] if b_u else None


def _initialised(make_trainer, cls):
    trainer = make_trainer(cls)
    trainer.initialize()
    return trainer


def _perturb_lora(branch, seed=1):
    """LoRA's B starts at zero (a merge would add nothing): give every adapter a non-zero update."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in branch.named_parameters():
            if "lora_" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


def _watch_merged(branch):
    """Record, for every forward of the first LoRA layer, whether its adapters were merged at that moment."""
    seen = []
    layer = branch.lora_layers()[0]
    layer.register_forward_pre_hook(lambda m, args: seen.append(bool(m.merged)))
    return seen


def test_defaults_and_slice_pass(make_trainer):
    """Defaults: merged LoRA for a teacher, channels-last, no bf16; never merged for a student or without adapters."""
    assert (nnUNetTrainerMN.teacher_merge_lora, nnUNetTrainerMN.channels_last_2d, nnUNetTrainerMN.cpu_bf16_2d) == \
        (True, True, False)
    assert nnUNetTrainerMN_CPUbf16.cpu_bf16_2d and issubclass(nnUNetTrainerMN_CPUbf16, nnUNetTrainerMN)
    trainer = _initialised(make_trainer, nnUNetTrainerMN_debug)
    teacher, student = trainer.slice_pass(teacher=True), trainer.slice_pass(teacher=False)
    assert teacher.merge_lora and not student.merge_lora
    assert teacher.channels_last and student.channels_last and not (teacher.cpu_bf16 or student.cpu_bf16)
    assert not teacher.inference_mode  # measured: no gain on CPU (docs/benchmarks/cost.md)
    whole = _initialised(make_trainer, _Whole)  # no adapters: nothing to merge
    assert not whole.slice_pass(teacher=True).merge_lora and whole.slice_pass(teacher=True).channels_last
    plain = _initialised(make_trainer, _Plain)
    assert not plain.slice_pass(teacher=True).merge_lora and not plain.slice_pass(teacher=True).channels_last


def test_teacher_pass_runs_merged_and_the_model_is_unmerged_afterwards(make_trainer):
    trainer = _initialised(make_trainer, nnUNetTrainerMN_debug)
    branch = trainer.branch2d
    _perturb_lora(branch)
    seen = _watch_merged(branch)
    bases = [(m.get_base_layer().weight, m.get_base_layer().weight.data.clone()) for m in branch.lora_layers()]
    data_l, target_l, data_u = _batch(trainer, 1, 1)

    out = trainer.train_3d_student(data_l, target_l, data_u)  # the 2D model as teacher
    assert seen and all(seen), "the 2D teacher's pass did not run with merged LoRA"
    assert np.isfinite(out["loss_u_3d"])
    assert not any(m.merged for m in branch.lora_layers())
    for weight, before in bases:  # the unmerged base weights are back, bit for bit
        assert torch.equal(weight.data, before)

    seen.clear()
    with torch.no_grad():  # validation: the 2D model predicts as a teacher (eval mode), merged as well
        branch.eval()
        trainer.forward_2d(data_u, teacher=True)
    assert seen and all(seen) and not any(m.merged for m in branch.lora_layers())

    seen.clear()
    trainer.train_2d_student(data_l, target_l, data_u)  # the 2D model as student: unmerged adapters
    trainer.stage1_step(data_l, target_l)
    assert seen and not any(seen)


def test_student_gradients_reach_the_lora_parameters_after_a_teacher_pass(make_trainer):
    trainer = _initialised(make_trainer, nnUNetTrainerMN_debug)
    branch = trainer.branch2d
    _perturb_lora(branch)
    data_l, target_l, data_u = _batch(trainer, 1, 1)
    trainer.train_3d_student(data_l, target_l, data_u)  # merges and unmerges
    lora = {n: p for n, p in branch.named_parameters() if "lora_" in n}
    assert lora and all(p.requires_grad for p in lora.values())
    before = {n: p.detach().clone() for n, p in lora.items()}
    out = trainer.train_2d_student(data_l, target_l, data_u)
    assert np.isfinite(out["loss_2d"])
    for n, p in lora.items():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
    assert all(p.grad.abs().sum() > 0 for p in lora.values())
    assert all(not torch.equal(before[n], p) for n, p in lora.items())  # AdamW moved every adapter


def test_merged_teacher_pseudo_masks_equal_the_unmerged_ones(make_trainer):
    trainer = _initialised(make_trainer, nnUNetTrainerMN_debug)
    branch = trainer.branch2d
    _perturb_lora(branch)
    branch.eval()
    seen = _watch_merged(branch)
    _, _, x = _batch(trainer, 0, 2)
    with torch.no_grad():
        merged = torch.softmax(trainer.forward_2d(x, teacher=True), 1)
        assert seen and all(seen)
        seen.clear()
        trainer.teacher_merge_lora = False
        unmerged = torch.softmax(trainer.forward_2d(x, teacher=True), 1)
        plain = torch.softmax(predict_slices(branch, x, trainer.slice_axes[0]), 1)  # no SlicePass at all
    assert seen and not any(seen)
    torch.testing.assert_close(merged, unmerged, rtol=0, atol=1e-5)
    torch.testing.assert_close(merged, plain, rtol=0, atol=1e-5)
    # the merge matters: without the adapters the masks differ (else this test would prove nothing)
    with torch.no_grad():
        for m in branch.lora_layers():
            m.enable_adapters(False)
        base_only = torch.softmax(predict_slices(branch, x, trainer.slice_axes[0]), 1)
        for m in branch.lora_layers():
            m.enable_adapters(True)
    assert (base_only - plain).abs().max() > 1e-3


def test_channels_last_applied_to_the_2d_model_and_its_slices(make_trainer):
    trainer = _initialised(make_trainer, nnUNetTrainerMN_debug)
    convs = [p for p in trainer.branch2d.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    fed = []
    trainer.branch2d.register_forward_pre_hook(
        lambda m, args: fed.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    data_l, target_l, data_u = _batch(trainer, 1, 1)
    trainer.train_3d_student(data_l, target_l, data_u)
    trainer.train_2d_student(data_l, target_l, data_u)
    assert fed and all(fed)
    # still channels-last after a student's step
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)

    plain = _initialised(make_trainer, _Plain)
    assert not all(p.is_contiguous(memory_format=torch.channels_last)
                   for p in plain.branch2d.parameters() if p.dim() == 4)


def test_bf16_variant_runs_every_step_on_cpu_with_finite_losses(make_trainer):
    trainer = _initialised(make_trainer, _Bf16)
    assert trainer.slice_pass(teacher=True).cpu_bf16 and trainer.slice_pass(teacher=False).cpu_bf16
    autocast = []
    trainer.branch2d.register_forward_pre_hook(lambda m, args: autocast.append(torch.is_autocast_enabled("cpu")))
    data_l, target_l, data_u = _batch(trainer, 1, 1)
    outs = [trainer.stage1_step(data_l, target_l), trainer.train_3d_student(data_l, target_l, data_u),
            trainer.train_2d_student(data_l, target_l, data_u)]
    assert np.isfinite(outs[0]["loss_2d"]) and np.isfinite(outs[0]["loss_3d"])
    assert np.isfinite(outs[1]["loss_3d"]) and np.isfinite(outs[1]["loss_u_3d"])
    assert np.isfinite(outs[2]["loss_2d"]) and np.isfinite(outs[2]["loss_u_2d"])
    assert autocast and all(autocast)
    # the 3D network is not under bf16: only the 2D model's passes are
    assert not torch.is_autocast_enabled("cpu")
    # fp32 logits for the losses, whatever ran inside
    assert trainer.forward_2d(data_l, axis=trainer.slice_axes[0]).dtype == torch.float32


def test_cpu_bf16_on_a_gpu_device_is_an_error(make_trainer, planned_synthetic):
    make_trainer(nnUNetTrainerMN_debug)  # sets the nnU-Net paths
    pre = planned_synthetic["preprocessed"]
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    dataset_json = json.loads((pre / "dataset.json").read_text())
    with pytest.raises(ValueError, match="cpu_bf16_2d = True .* CPU only.*-device cpu"):
        _Bf16(plans, "3d_fullres", "all", dataset_json, device=torch.device("cuda"))


def test_checkpoint_after_a_teacher_pass_holds_the_unmerged_weights(make_trainer, tmp_path):
    trainer = _initialised(make_trainer, nnUNetTrainerMN_debug)
    branch = trainer.branch2d
    _perturb_lora(branch)
    fresh = copy.deepcopy(branch)  # unmerged; a 3D-student step does not change the 2D model
    data_l, target_l, data_u = _batch(trainer, 1, 1)
    trainer.train_3d_student(data_l, target_l, data_u)
    path = str(tmp_path / "ckpt.pth")
    trainer.save_checkpoint(path)
    saved = torch.load(path, map_location="cpu", weights_only=False)["mn_branch2d"]
    expected = fresh.state_dict()  # a random-init base: the whole 2D model is stored, base weights included
    assert set(saved) == set(expected)
    for k, v in expected.items():
        assert torch.equal(saved[k], v), k
    other = _initialised(make_trainer, nnUNetTrainerMN_debug)
    other.load_checkpoint(path)
    for (k, a), b in zip(other.branch2d.state_dict().items(), expected.values()):
        assert torch.equal(a, b), k
    # inside a teacher's pass the base weights are merged: no checkpoint may be written then
    branch.eval()
    with branch.teacher_mode(), pytest.raises(RuntimeError, match="merged"):
        trainer.save_checkpoint(str(tmp_path / "during.pth"))


def test_step_cost_sets_the_trainers_own_lever_settings():
    """benchmarks/step_cost.py measures the trainer's wiring: its flags set the trainer's attributes (a lever not named
    is off) and --trainer-defaults switches on what nnUNetTrainerMN ships with."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "step_cost.py"
    spec = importlib.util.spec_from_file_location("step_cost_script", path)
    sc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sc)
    a = sc.make_parser().parse_args(["--plans", "hippocampus", "--out", "x"])
    sc.use_trainer_defaults(a)
    cls = sc.mn_cost_class(a)
    assert not (cls.teacher_merge_lora or cls.channels_last_2d or cls.cpu_bf16_2d)  # plain passes
    a = sc.make_parser().parse_args(["--plans", "hippocampus", "--trainer-defaults", "--cpu-bf16", "--out", "x"])
    sc.use_trainer_defaults(a)
    cls = sc.mn_cost_class(a)
    assert (cls.teacher_merge_lora, cls.channels_last_2d, cls.cpu_bf16_2d) == (True, True, True)
    assert sc.lever_args(a) == ["--teacher-merge-lora", "--channels-last", "--cpu-bf16"]
