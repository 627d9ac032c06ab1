"""nnUNetTrainerMN in Python: the steps of each phase, LRG on the trainer's own schedule, checkpoints."""
import numpy as np
import pytest
import torch

from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor  # noqa: F401  (the stock predictor imports)
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2_mn.trainers import nnUNetTrainerMN, nnUNetTrainerMN_debug


class _MNLRG(nnUNetTrainerMN_debug):
    """LRG with Eq. 10's floor rounding."""
    sampling = "lrg"
    sampling_kwargs = {}
    sampling_rounding = "floor"


def _params(module):
    return [p.detach().clone() for p in module.parameters() if p.requires_grad]


def _changed(before, module):
    return any(not torch.equal(a, b) for a, b in zip(before, [p for p in module.parameters() if p.requires_grad]))


def _step(trainer, phase, data_l, target_l, data_u):
    """One step of a phase: 'both' (stage 1), '3d' or '2d' (that model is the student)."""
    if phase == "both":
        return trainer.stage1_step(data_l, target_l)
    return getattr(trainer, f"train_{phase}_student")(data_l, target_l, data_u)


def test_each_phase_trains_only_its_student(make_trainer, random_batch):
    trainer = make_trainer(nnUNetTrainerMN_debug)
    trainer.initialize()
    data_l, target_l, data_u = random_batch(trainer, 1, 1)
    for phase, trains_3d, trains_2d in (("both", True, True), ("3d", True, False), ("2d", False, True)):
        p3, p2 = _params(trainer.network), _params(trainer.branch2d)
        out = _step(trainer, phase, data_l, target_l, None if phase == "both" else data_u)
        assert _changed(p3, trainer.network) == trains_3d and _changed(p2, trainer.branch2d) == trains_2d
        # nnU-Net's train_losses is the 3D network's loss; each model's L_c has its own key
        assert np.isfinite(out["loss"]) == trains_3d
        assert np.isfinite(out.get("loss_3d", np.nan)) == trains_3d
        assert np.isfinite(out.get("loss_2d", np.nan)) == trains_2d
        if phase != "both":
            assert np.isfinite(out[f"loss_u_{phase}"])
            assert np.isnan(out["agreement"]) or 0.0 <= out["agreement"] <= 1.0


class _QuarterSlices(nnUNetTrainerMN_debug):
    student2d_slice_fraction = 0.25


def test_2d_student_learns_from_a_subset_of_slices(make_trainer, random_batch):
    """student2d_slice_fraction: the 2D model sees round(f * S) slices per patch when it learns (stage 1, 2D
    epochs), inputs and targets at the same positions; the 3D teacher still sees the whole patch."""
    trainer = make_trainer(_QuarterSlices)
    trainer.initialize()
    data_l, target_l, data_u = random_batch(trainer, 1, 1)
    n_slices = data_l.shape[2 + trainer.slice_axis]
    k = max(1, round(0.25 * n_slices))
    seen_2d, seen_3d, seen_targets = [], [], []
    trainer.branch2d.register_forward_hook(lambda m, args, out: seen_2d.append(args[0].shape[0]))
    trainer.network.register_forward_hook(lambda m, args, out: seen_3d.append(tuple(args[0].shape[2:])))
    loss_2d, loss_u_2d = trainer.loss_2d, trainer.loss_u_2d
    trainer.loss_2d = lambda out, tgt: seen_targets.append(tgt.shape) or loss_2d(out, tgt)
    trainer.loss_u_2d = lambda out, tgt: seen_targets.append(tgt.shape) or loss_u_2d(out, tgt)
    for phase in ("both", "2d"):
        p2 = _params(trainer.branch2d)
        out = _step(trainer, phase, data_l, target_l, None if phase == "both" else data_u)
        assert np.isfinite(out["loss_2d"]) and _changed(p2, trainer.branch2d)
    assert seen_2d == [k, 2 * k]  # stage 1: one labelled patch; 2D epoch: labelled + unlabelled patch
    assert all(s == tuple(trainer.configuration_manager.patch_size) for s in seen_3d)
    assert [t[2 + trainer.slice_axis] for t in seen_targets] == [k, k, k]

    # inputs and targets are the same slices
    index = torch.tensor([1, n_slices - 1])
    trainer.student_slices = lambda x, axis=0: index
    fed = []
    trainer.forward_2d = lambda x, teacher=False, axis=None: fed.append(x) or nnUNetTrainerMN.forward_2d(
        trainer, x, teacher, axis)
    got = []
    trainer.loss_2d = lambda out, tgt: got.append(tgt) or loss_2d(out, tgt)
    trainer.stage1_step(data_l, target_l)
    axis = trainer.slice_axis
    assert torch.equal(fed[-1], data_l.index_select(2 + axis, index))
    assert torch.equal(got[-1], target_l[0].index_select(2 + axis, index))


def test_student_slice_fraction_is_checked(make_trainer):
    class Bad(nnUNetTrainerMN_debug):
        student2d_slice_fraction = 0.0
    with pytest.raises(ValueError, match="student2d_slice_fraction"):
        make_trainer(Bad)


def test_lrg_uses_each_students_learning_rate(make_trainer):
    trainer = make_trainer(_MNLRG)
    trainer.initialize()
    trainer.num_labeled_cases, trainer.num_unlabeled_cases = 5, 4
    trainer.batch_size = 10
    seen = {}
    for epoch in range(trainer.num_epochs):
        trainer.current_epoch = epoch
        trainer.on_train_epoch_start()
        for model, opt, init in (("3d", trainer.optimizer, trainer.initial_lr),
                                 ("2d", trainer.optimizer_2d, trainer.initial_lr_2d)):
            lr = opt.param_groups[0]["lr"]
            share = 0.0 if trainer.phase == "both" else (init - lr) / init
            assert trainer.unlabeled_shares[model] == pytest.approx(share)
        student = "2d" if trainer.phase == "2d" else "3d"
        b_u = trainer.draw_b_u(student)
        assert b_u == int(np.floor(trainer.unlabeled_shares[student] * 10 + 1e-9))  # floor rounding: Eq. 10
        seen[epoch] = (trainer.phase, b_u)
    assert [p for p, _ in seen.values()] == ["both", "3d", "2d", "3d"]
    assert seen[3][1] > seen[1][1] > 0


def _fixed_unlabeled_share(trainer, share):
    trainer.unlabeled_shares = {"3d": share, "2d": share}


def test_default_stage2_trains_both_students_in_every_iteration(make_trainer):
    """stage2_students='pair': each stage-2 iteration is a 3D-student step and then a 2D-student step, each with
    its own b_u drawn from its own learning rate's share, from the same labelled and unlabelled batches; the 3D
    network takes one optimizer step per iteration, as in nnU-Net."""
    from nnunetv2_mn.trainers import nnUNetTrainerMN_debugPair

    trainer = make_trainer(nnUNetTrainerMN_debugPair)
    trainer.on_train_start()
    try:
        trainer.current_epoch = trainer.unlabeled_start_epoch
        trainer.on_train_epoch_start()
        assert trainer.phase == "pair"
        calls = []
        for name in ("train_3d_student", "train_2d_student", "stage1_step"):
            method = getattr(trainer, name)
            setattr(trainer, name, lambda *a, _m=method, _n=name: calls.append((_n, a[0].shape[0])) or _m(*a))
        steps3, steps2 = [], []
        trainer.optimizer.register_step_post_hook(lambda *a: steps3.append(1))
        trainer.optimizer_2d.register_step_post_hook(lambda *a: steps2.append(1))
        for _ in range(3):
            out = trainer.train_step(next(trainer.dataloader_train))
            assert np.isfinite(out["loss"]) and np.isfinite(out["loss_3d"]) and np.isfinite(out["loss_2d"])
        assert [c[0] for c in calls] == ["train_3d_student", "train_2d_student"] * 3
        assert len(steps3) == len(steps2) == 3
    finally:
        trainer.on_train_end()


def test_the_paper_and_per_iteration_alternation(make_trainer):
    from nnunetv2_mn.trainers import nnUNetTrainerMN_debug

    class PerIteration(nnUNetTrainerMN_debug):
        stage2_students = "iterations"

    for cls, expected in ((nnUNetTrainerMN_debug, ["train_3d_student"] * 3 + ["train_2d_student"] * 3),
                          (PerIteration, ["train_3d_student", "train_2d_student", "train_3d_student"] * 2)):
        trainer = make_trainer(cls)
        trainer.on_train_start()
        try:
            calls = []
            for name in ("train_3d_student", "train_2d_student"):
                method = getattr(trainer, name)
                setattr(trainer, name, lambda *a, _m=method, _n=name: calls.append(_n) or _m(*a))
            for epoch in (1, 2):
                trainer.current_epoch = epoch
                trainer.on_train_epoch_start()
                for _ in range(3):
                    trainer.train_step(next(trainer.dataloader_train))
            assert calls == expected
        finally:
            trainer.on_train_end()


def test_checkpoint_roundtrip_and_stock_predictor_weights(make_trainer, tmp_path, random_batch):
    trainer = make_trainer(nnUNetTrainerMN_debug)
    trainer.initialize()
    trainer.phase = "2d"
    data_l, target_l, data_u = random_batch(trainer, 1, 1)
    trainer.train_2d_student(data_l, target_l, data_u)  # moves the 2D model and its AdamW state
    trainer.current_epoch = 2
    trainer._best_ema = 0.5
    path = str(tmp_path / "ckpt.pth")
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    # a random-init (config) base cannot be rebuilt elsewhere: the whole 2D model is stored
    assert ckpt["mn_branch2d_full"] and set(ckpt["mn_branch2d"]) == set(trainer.branch2d.state_dict())
    # the stock predictor builds the plain 3D network and loads network_weights strictly
    net = nnUNetTrainer.build_network_architecture(
        trainer.plans_manager, trainer.configuration_manager, 1, trainer.label_manager.num_segmentation_heads,
        enable_deep_supervision=False)
    net.load_state_dict(ckpt["network_weights"])

    other = make_trainer(nnUNetTrainerMN_debug)
    other.load_checkpoint(path)
    assert other.current_epoch == 3 and other.phase == "2d"
    for a, b in zip(trainer.branch2d.state_dict().values(), other.branch2d.state_dict().values()):
        torch.testing.assert_close(a, b)
    for a, b in zip(trainer.network.state_dict().values(), other.network.state_dict().values()):
        torch.testing.assert_close(a, b)
    s1, s2 = trainer.optimizer_2d.state_dict(), other.optimizer_2d.state_dict()
    for k in s1["state"]:
        torch.testing.assert_close(s1["state"][k]["exp_avg"], s2["state"][k]["exp_avg"])
    # the same step after reloading gives the same 2D weights: training continues exactly
    torch.manual_seed(0)
    trainer.train_2d_student(data_l, target_l, data_u)
    torch.manual_seed(0)
    other.train_2d_student(data_l, target_l, data_u)
    for a, b in zip(trainer.branch2d.parameters(), other.branch2d.parameters()):
        torch.testing.assert_close(a, b)


def test_a_checkpoint_of_another_2d_model_is_refused(make_trainer, tmp_path):
    trainer = make_trainer(nnUNetTrainerMN_debug)
    trainer.initialize()
    path = str(tmp_path / "ckpt.pth")
    trainer.save_checkpoint(path)

    class Whole(nnUNetTrainerMN_debug):
        branch2d_finetune = "whole"

    with pytest.raises(RuntimeError, match="differs from this trainer"):
        make_trainer(Whole).load_checkpoint(path)


def test_pretrained_2d_model_missing_offline_stops_before_training(make_trainer, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("nnUNet_MN_2d_model", str(tmp_path / "no_such_model"))
    trainer = make_trainer(nnUNetTrainerMN)
    from nnunetv2_mn.models2d import Pretrained2DModelNotFound
    with pytest.raises(Pretrained2DModelNotFound, match="save_pretrained|HF_HUB_OFFLINE"):
        trainer.initialize()


def test_pretrained_base_is_not_stored_and_comes_back_from_its_source(make_trainer, tmp_path, monkeypatch,
                                                                     random_batch):
    """LoRA on a pretrained model (a tiny SegFormer saved with save_pretrained, loaded through the real
    from_pretrained path): the checkpoint holds the trainable weights only, and a new trainer that loads the
    base from the same source and the checkpoint on top reproduces the model exactly."""
    from transformers import AutoConfig, SegformerForSemanticSegmentation
    from nnunetv2_mn.trainers.variants.schedules import TINY_SEGFORMER

    model_dir = tmp_path / "tiny_segformer"
    SegformerForSemanticSegmentation(AutoConfig.for_model(**TINY_SEGFORMER)).save_pretrained(model_dir)
    monkeypatch.setenv("nnUNet_MN_2d_model", str(model_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    class Pretrained(nnUNetTrainerMN_debug):
        branch2d_config = None

    trainer = make_trainer(Pretrained)
    trainer.initialize()
    data_l, target_l, _ = random_batch(trainer, 2, 0)
    trainer.stage1_step(data_l, target_l)
    path = str(tmp_path / "ckpt.pth")
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    trainable = {n for n, p in trainer.branch2d.named_parameters() if p.requires_grad}
    assert not ckpt["mn_branch2d_full"] and trainable <= set(ckpt["mn_branch2d"])
    assert len(ckpt["mn_branch2d"]) < len(trainer.branch2d.state_dict())
    other = make_trainer(Pretrained)
    other.load_checkpoint(path)
    for (k, a), b in zip(trainer.branch2d.state_dict().items(), other.branch2d.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)


def test_pseudo_foreground_crops_of_unlabelled_cases(make_trainer, planned_synthetic):
    """Sec. 3.1: hard pseudo-masks of the 3D model give foreground locations; the unlabelled loader then
    centres the requested share of its crops on them (probabilistically, since only b_u samples are used)."""
    class Biased(nnUNetTrainerMN_debug):
        unlabeled_foreground_bias = 1.0
        pseudo_mask_refresh_fraction = 0.5  # every 2 of the 4 epochs

    trainer = make_trainer(Biased)
    trainer.initialize()
    trainer.unlabeled_ids = trainer.check_unlabeled_data()
    trainer.current_epoch = trainer.unlabeled_start_epoch
    assert trainer.pseudo_mask_refresh_due()
    locations = trainer.compute_pseudo_class_locations()
    assert set(locations) == set(trainer.unlabeled_ids)
    for per_class in locations.values():
        assert set(per_class) == {1, 2}
        for arr in per_class.values():
            assert arr.dtype == np.int16 and (arr.size == 0 or arr.shape[1] == 4)
    trainer.use_pseudo_class_locations(locations)
    loader = trainer.dataloader_unlabeled.data_loader
    case = trainer.unlabeled_ids[0]
    assert loader._data.load_case(case)[3]["class_locations"] is locations[case]
    assert all(loader.get_do_oversample(j) for j in range(4))
    trainer.current_epoch += 1
    assert not trainer.pseudo_mask_refresh_due()  # refreshed every pseudo_mask_refresh_fraction of the epochs
    trainer.current_epoch += 1
    assert trainer.pseudo_mask_refresh_due()
    plain = make_trainer(nnUNetTrainerMN_debug)
    plain.initialize()
    plain.current_epoch = plain.unlabeled_start_epoch
    assert not plain.pseudo_mask_refresh_due()  # off by default
    plain_loader = plain.get_unlabeled_dataloader(trainer.unlabeled_ids).data_loader
    assert plain_loader._data.load_case(case)[3]["class_locations"] == {}
    assert not any(plain_loader.get_do_oversample(j) for j in range(4))


def test_2d_model_source_precedence(make_trainer, monkeypatch):
    from nnunetv2_mn.trainers import nnUNetTrainerMN_EffNetLite0

    monkeypatch.delenv("nnUNet_MN_2d_model", raising=False)
    monkeypatch.delenv("nnUNet_MN_2d_weights", raising=False)
    seg = make_trainer(nnUNetTrainerMN)
    assert seg.branch2d_source_and_origin()[0] == "nvidia/segformer-b2-finetuned-ade-512-512"
    seg.configuration_manager.configuration["mn_2d_model"] = "/plans/model"
    assert seg.branch2d_source_and_origin()[0] == "/plans/model"
    monkeypatch.setenv("nnUNet_MN_2d_model", "/env/model")
    assert seg.branch2d_source_and_origin() == ("/env/model", "environment variable nnUNet_MN_2d_model")
    cnn = make_trainer(nnUNetTrainerMN_EffNetLite0)
    cnn.configuration_manager.configuration["mn_2d_model"] = "/plans/model"
    assert cnn.branch2d_source_and_origin()[0] is None  # neither the SegFormer env var nor the plans key
    monkeypatch.setenv("nnUNet_MN_2d_weights", "/env/lite0.pth")
    assert cnn.branch2d_source_and_origin()[0] == "/env/lite0.pth"


def test_paper_optimizers_variant(make_trainer):
    """optimizers='paper': AdamW for both models (1e-4 / 1e-3), warm-up + cosine per stage, restart at stage 2."""
    from nnunetv2_mn.mn.lr_schedules import StagedCosineLR

    class Paper(nnUNetTrainerMN_debug):
        optimizers = "paper"
        stage2_lr_restart = True

    class NoRestart(Paper):
        stage2_lr_restart = False

    with pytest.raises(ValueError, match="restarts at stage 2"):
        make_trainer(NoRestart)
    trainer = make_trainer(Paper)
    trainer.initialize()
    assert isinstance(trainer.optimizer, torch.optim.AdamW) and isinstance(trainer.optimizer_2d, torch.optim.AdamW)
    assert isinstance(trainer.lr_scheduler, StagedCosineLR) and isinstance(trainer.lr_scheduler_2d, StagedCosineLR)
    assert trainer.initial_lr == 1e-4 and trainer.initial_lr_2d == 1e-3
    trainer.lr_scheduler.step(trainer.unlabeled_start_epoch)  # stage 2 restarts at the initial learning rate
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)


def test_stage2_learning_rate_restart(make_trainer):
    """stage2_lr_restart with nnU-Net's optimisers: poly decay per stage, so both learning rates are back at their
    initial values when stage 2 starts (and LRG's share starts from 0 there); without it, one poly decay."""
    from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
    from nnunetv2_mn.mn.lr_schedules import StagedPolyLR
    from nnunetv2_mn.trainers import nnUNetTrainerMN_LRRestart

    class Restart(nnUNetTrainerMN_debug):
        stage2_lr_restart = nnUNetTrainerMN_LRRestart.stage2_lr_restart

    plain, restart = make_trainer(nnUNetTrainerMN_debug), make_trainer(Restart)
    for t in (plain, restart):
        t.initialize()
        t.num_labeled_cases, t.num_unlabeled_cases = 5, 4
    assert type(plain.lr_scheduler) is PolyLRScheduler
    assert isinstance(restart.lr_scheduler, StagedPolyLR) and isinstance(restart.lr_scheduler_2d, StagedPolyLR)
    start = restart.unlabeled_start_epoch
    for t in (plain, restart):
        t.current_epoch = start
        t.on_train_epoch_start()
    assert restart.optimizer.param_groups[0]["lr"] == pytest.approx(restart.initial_lr)
    assert restart.optimizer_2d.param_groups[0]["lr"] == pytest.approx(restart.initial_lr_2d)
    assert plain.optimizer.param_groups[0]["lr"] < plain.initial_lr


def test_a_rule_that_never_gives_unlabelled_samples_refuses_to_start(make_trainer):
    """Eq. 10 with floor rounding at one sample per GPU (e.g. -num_gpus 2 with the plans' batch of 2) never gives
    b_u > 0 before the last epoch's learning rate reaches 0: the trainer stops with what to change, while the
    expected-share rule runs."""
    class Expected(_MNLRG):
        sampling_rounding = "expected"

    for cls, refuses in ((_MNLRG, True), (Expected, False)):
        trainer = make_trainer(cls)
        trainer.initialize()
        trainer.batch_size = 1
        trainer.num_labeled_cases, trainer.num_unlabeled_cases = 5, 4
        if refuses:
            with pytest.raises(RuntimeError, match="sampling_rounding = 'expected'"):
                trainer.check_sampling_uses_unlabeled_data()
        else:
            trainer.check_sampling_uses_unlabeled_data()


def test_dice_guided_sampling_reads_each_teachers_validation_dice(make_trainer):
    """sampling='dice_guided': the 3D student's share follows the 2D teacher's smoothed pseudo Dice and the 2D
    student's the 3D teacher's; the rule cannot be read before training, so the start-up check lets it pass."""
    from nnunetv2_mn.trainers import nnUNetTrainerMN_DiceGuided

    class Guided(nnUNetTrainerMN_debug):
        sampling = nnUNetTrainerMN_DiceGuided.sampling
        sampling_kwargs = {}

    trainer = make_trainer(Guided)
    trainer.initialize()
    trainer.num_labeled_cases, trainer.num_unlabeled_cases = 5, 4
    trainer.check_sampling_uses_unlabeled_data()  # no refusal
    log = trainer.logger.local_logger.my_fantastic_logging
    log["dice_2d"], log["dice_3d"] = [0.7, 0.7], [0.4, 0.5]
    trainer.current_epoch = 2
    assert trainer.teacher_dice("3d") == pytest.approx(0.7) and trainer.teacher_dice("2d") == pytest.approx(0.41)
    state = trainer.schedule_state("3d", 2, trainer.optimizer.param_groups[0]["lr"])
    assert trainer.sampling_rule.share(state) == pytest.approx(0.5)  # (0.7 - 0.5) / (0.9 - 0.5)
    assert trainer.sampling_rule.share(trainer.schedule_state("2d", 2, 1e-3)) == 0.0  # 3D teacher below 0.5


def test_unlabelled_samples_added_to_the_whole_labelled_batch(make_trainer):
    """unlabeled_samples='add' (the default): each student keeps nnU-Net's whole labelled batch (b_l = B) and learns
    from the b_u unlabelled samples on top of it; 'replace' (the paper, nnUNetTrainerMN_ReplaceUnlabeled) trains on
    B - b_u labelled samples."""
    from nnunetv2_mn.trainers import (nnUNetTrainerMN, nnUNetTrainerMN_debugPair, nnUNetTrainerMN_ReplaceUnlabeled,
                                      nnUNetTrainerSelfTraining, nnUNetTrainerSelfTraining_ReplaceUnlabeled)

    assert nnUNetTrainerMN.unlabeled_samples == nnUNetTrainerSelfTraining.unlabeled_samples == "add"
    assert nnUNetTrainerMN_ReplaceUnlabeled.unlabeled_samples == "replace"
    assert nnUNetTrainerSelfTraining_ReplaceUnlabeled.unlabeled_samples == "replace"

    class _Replace(nnUNetTrainerMN_debugPair):
        unlabeled_samples = nnUNetTrainerMN_ReplaceUnlabeled.unlabeled_samples

    for cls, b_l in ((nnUNetTrainerMN_debugPair, 2), (_Replace, 1)):
        trainer = make_trainer(cls)
        trainer.on_train_start()
        try:
            trainer.current_epoch = trainer.unlabeled_start_epoch
            trainer.on_train_epoch_start()
            _fixed_unlabeled_share(trainer, 0.5)
            trainer.sampling_rule.rounding = "floor"  # b_u = 1 of B = 2 in every step
            calls = []
            for name in ("train_3d_student", "train_2d_student"):
                method = getattr(trainer, name)
                setattr(trainer, name, lambda *a, _m=method: calls.append((a[0].shape[0], a[2].shape[0])) or _m(*a))
            out = trainer.train_step(next(trainer.dataloader_train))
            assert calls == [(b_l, 1), (b_l, 1)] and out["b_l"] == b_l and out["b_u"] == 1
            assert np.isfinite(out["loss_u_3d"]) and np.isfinite(out["loss_l_3d"])
        finally:
            trainer.on_train_end()


def test_unknown_unlabelled_samples_setting_is_refused(make_trainer):
    class _Bad(nnUNetTrainerMN_debug):
        unlabeled_samples = "append"

    with pytest.raises(ValueError, match="unlabeled_samples"):
        make_trainer(_Bad)
