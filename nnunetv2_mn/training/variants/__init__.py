"""Every trainer nnU-Net can find by name (`-tr`) through `trainers/nnunetv2_mn_trainers.py`."""
from nnunetv2_mn.training.mean_teacher import nnUNetTrainerMeanTeacher  # noqa: F401
from nnunetv2_mn.training.variants.schedules import (  # noqa: F401
    nnUNetTrainerMeanTeacher_5epochs, nnUNetTrainerMeanTeacher_debug)
