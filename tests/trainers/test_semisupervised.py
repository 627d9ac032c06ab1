"""The semi-supervised base trainer: batch composition, separation of unlabelled cases, bad inputs."""
import json
import shutil

import numpy as np
import pytest
import torch

from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
from nnunetv2_mn.data.unlabeled import UnlabeledDataError
from nnunetv2_mn.trainers import nnUNetTrainerMeanTeacher_debug

UNLABELED = "nnUNetPlans_3d_fullres_unlabeled"


def _ids(folder):
    return set(nnUNetDatasetBlosc2.get_identifiers(str(folder)))


class _ReplaceMT(nnUNetTrainerMeanTeacher_debug):
    unlabeled_samples = "replace"


def test_batches_hold_b_l_labelled_and_b_u_unlabelled(make_trainer, planned_synthetic):
    """'replace' (the paper's batch): b_l = B - b_u labelled samples, chosen by nnU-Net's oversampling rule; 'add'
    (the default): nnU-Net's whole labelled batch and the b_u unlabelled samples on top."""
    trainer = make_trainer(_ReplaceMT, fold=0)
    trainer.on_train_start()
    try:
        labelled, unlabelled = _ids(trainer.preprocessed_dataset_folder), _ids(trainer.unlabeled_folder)
        assert labelled.isdisjoint(unlabelled) and len(unlabelled) == 4
        splits = json.loads((planned_synthetic["preprocessed"] / "splits_final.json").read_text())
        in_splits = {k for s in splits for part in ("train", "val") for k in s[part]}
        assert in_splits == labelled  # unlabelled cases never enter nnU-Net's cross-validation
        for b_u in (0, 1, 2):
            batch = next(trainer.dataloader_train)
            data_l, target_l, data_u = trainer.compose_batch(batch, next(trainer.dataloader_unlabeled), b_u)
            keys_l, keys_u = trainer.last_batch_keys
            assert data_l.shape[0] == len(keys_l) == 2 - b_u and target_l[0].shape[0] == 2 - b_u
            assert (data_u is None and b_u == 0) or data_u.shape[0] == len(keys_u) == b_u
            assert set(keys_l) <= set(splits[0]["train"]) and set(keys_u) <= unlabelled
        # the kept labelled samples follow nnU-Net's foreground oversampling: the trainer's rule is its loader's,
        # and with b_u = 1 of B = 2 the foreground-forced (last) sample is kept in about half of the batches
        loader = trainer.dataloader_train.data_loader
        assert trainer.labeled_forced == [bool(loader.get_do_oversample(i)) for i in range(2)] == [False, True]
        batch = next(trainer.dataloader_train)
        while batch["keys"][0] == batch["keys"][1]:  # the kept sample is told by its case
            batch = next(trainer.dataloader_train)
        kept = []
        for _ in range(400):
            trainer.compose_batch(batch, batch, 1)
            kept.append(trainer.last_batch_keys[0][0] == batch["keys"][1])
        assert 0.4 < np.mean(kept) < 0.6
        trainer.unlabeled_samples = nnUNetTrainerMeanTeacher_debug.unlabeled_samples  # the default: 'add'
        for b_u in (0, 1, 2):
            batch = next(trainer.dataloader_train)
            data_l, target_l, data_u = trainer.compose_batch(batch, next(trainer.dataloader_unlabeled), b_u)
            assert data_l.shape[0] == target_l[0].shape[0] == 2 and trainer.last_batch_keys[0] == list(batch["keys"])
            assert (data_u is None and b_u == 0) or data_u.shape[0] == len(trainer.last_batch_keys[1]) == b_u
    finally:
        trainer.on_train_end()


def _copy_preprocessed(planned_synthetic, tmp_path, monkeypatch):
    pre = tmp_path / "pre" / planned_synthetic["preprocessed"].name
    shutil.copytree(planned_synthetic["preprocessed"], pre)
    monkeypatch.setenv("nnUNet_preprocessed", str(pre.parent))
    return pre


def test_missing_unlabelled_data_says_what_to_run(make_trainer, planned_synthetic, tmp_path, monkeypatch):
    pre = _copy_preprocessed(planned_synthetic, tmp_path, monkeypatch)
    shutil.rmtree(pre / UNLABELED)
    trainer = make_trainer(nnUNetTrainerMeanTeacher_debug, preprocessed=pre)
    with pytest.raises(UnlabeledDataError, match="nnUNetv2_mn_preprocess_unlabeled -d Dataset911"):
        trainer.on_train_start()
    (pre / UNLABELED).mkdir()
    with pytest.raises(UnlabeledDataError, match="holds no preprocessed unlabelled case"):
        make_trainer(nnUNetTrainerMeanTeacher_debug, preprocessed=pre).on_train_start()


def test_wrong_channel_count_fails_before_training(make_trainer, planned_synthetic, tmp_path, monkeypatch):
    pre = _copy_preprocessed(planned_synthetic, tmp_path, monkeypatch)
    folder = pre / UNLABELED
    data, seg, _, props = nnUNetDatasetBlosc2(str(folder)).load_case("case_005")
    two_channels = np.concatenate([np.asarray(data)] * 2)
    nnUNetDatasetBlosc2.save_case(two_channels, np.asarray(seg), props, str(folder / "case_zz2"))
    trainer = make_trainer(nnUNetTrainerMeanTeacher_debug, preprocessed=pre)
    with pytest.raises(UnlabeledDataError, match="case_zz2 has 2 channel"):
        trainer.on_train_start()


def test_plans_changed_after_unlabelled_preprocessing(make_trainer, planned_synthetic, tmp_path, monkeypatch):
    pre = _copy_preprocessed(planned_synthetic, tmp_path, monkeypatch)
    manifest = pre / UNLABELED / "unlabeled_manifest.json"
    m = json.loads(manifest.read_text())
    m["plans_fingerprint"] = "0" * 64
    manifest.write_text(json.dumps(m))
    with pytest.raises(UnlabeledDataError, match="Preprocess them again"):
        make_trainer(nnUNetTrainerMeanTeacher_debug, preprocessed=pre).on_train_start()


def test_mean_teacher_step_is_one_backward_and_updates_the_teacher(make_trainer):
    trainer = make_trainer(nnUNetTrainerMeanTeacher_debug)
    trainer.initialize()
    x = torch.randn(2, 1, *trainer.configuration_manager.patch_size)
    student0 = [p.detach().clone() for p in trainer.network.parameters()]
    teacher0 = [p.detach().clone() for p in trainer.teacher.parameters()]
    # deep-supervision targets as nnU-Net's transforms make them
    outs = trainer.network(x[:1])
    target = [torch.zeros(1, 1, *o.shape[2:]) for o in outs]
    result = trainer.semi_supervised_step(x[:1], target, x[1:])
    assert {"loss", "loss_sup", "loss_cons", "cons_weight"} <= set(result)
    moved = [not torch.equal(a, b) for a, b in zip(student0, trainer.network.parameters())]
    assert any(moved)
    # first EMA step: alpha = min(1 - 1/1, 0.99) = 0 -> the teacher becomes the student
    for t, s in zip(trainer.teacher.parameters(), trainer.network.parameters()):
        torch.testing.assert_close(t, s)
    assert trainer.ema_step == 1 and not all(torch.equal(a, b) for a, b in zip(teacher0, trainer.teacher.parameters()))


def test_unwrap_sees_through_ddp_and_compile(tmp_path):
    """Checkpoints store the plain modules when -num_gpus wraps them in DDP (here on CPU with gloo) or
    nnU-Net compiles them."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    from nnunetv2_mn.trainers.semisupervised import unwrap

    module = torch.nn.Conv2d(3, 2, 1)
    assert unwrap(torch.compile(module)) is module
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        wrapped = DDP(module)
        assert unwrap(wrapped) is module
        assert set(unwrap(wrapped).state_dict()) == {"weight", "bias"}  # no 'module.' prefix in checkpoints
    finally:
        dist.destroy_process_group()
