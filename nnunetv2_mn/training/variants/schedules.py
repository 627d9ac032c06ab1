"""Short-schedule variants for CPU runs, like nnU-Net's nnUNetTrainer_5epochs."""
from nnunetv2_mn.training.mean_teacher import nnUNetTrainerMeanTeacher

#: a few tiny epochs: for tests and the demo on 2 CPU cores (checkpoint every epoch so that --c can be tried)
DEBUG_SCHEDULE = {"num_epochs": 4, "num_iterations_per_epoch": 3, "num_val_iterations_per_epoch": 2, "save_every": 1}


class nnUNetTrainerMeanTeacher_5epochs(nnUNetTrainerMeanTeacher):
    schedule_overrides = {"num_epochs": 5}


class nnUNetTrainerMeanTeacher_debug(nnUNetTrainerMeanTeacher):
    schedule_overrides = DEBUG_SCHEDULE
