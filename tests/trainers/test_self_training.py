"""nnUNetTrainerSelfTraining's student: a fresh network (the recipe: retrain) or the teacher going on
(`nnUNetTrainerSelfTraining_StudentFromTeacher`). The whole workflow: test_self_training_workflow.py."""
import pytest
import torch

from nnunetv2_mn.trainers import nnUNetTrainerSelfTraining_StudentFromTeacher
from nnunetv2_mn.trainers.variants.schedules import nnUNetTrainerSelfTraining_debug


class _FromTeacher(nnUNetTrainerSelfTraining_debug):
    student_from_scratch = nnUNetTrainerSelfTraining_StudentFromTeacher.student_from_scratch


@pytest.mark.parametrize("cls, kept", [(nnUNetTrainerSelfTraining_debug, False), (_FromTeacher, True)])
def test_the_student_starts_fresh_or_from_the_teacher(cls, kept, make_trainer, monkeypatch):
    trainer = make_trainer(cls)
    trainer.on_train_start()
    try:
        used = []
        monkeypatch.setattr(trainer, "write_pseudo_labels", lambda: None)  # the teacher's predictions: not needed
        monkeypatch.setattr(trainer, "pseudo_labels_ready", lambda: True)
        monkeypatch.setattr(trainer, "use_pseudo_labels", lambda: used.append(True))
        teacher = {k: v.clone() for k, v in trainer.network.state_dict().items()}
        trainer.current_epoch = trainer.unlabeled_start_epoch
        trainer.on_train_epoch_start()
        student = trainer.network.state_dict()
        same = all(torch.equal(v, student[k]) for k, v in teacher.items() if v.is_floating_point())
        assert same is kept and used == [True]
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(trainer.initial_lr)  # restarted either way
    finally:
        trainer.on_train_end()
