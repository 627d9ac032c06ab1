"""Every trainer nnU-Net can find by name (`-tr`) through `trainers/nnunetv2_mn_trainers.py`."""
from nnunetv2_mn.training.dtc import nnUNetTrainerDTC  # noqa: F401
from nnunetv2_mn.training.mean_teacher import nnUNetTrainerMeanTeacher  # noqa: F401
from nnunetv2_mn.training.mn import nnUNetTrainerMN  # noqa: F401
from nnunetv2_mn.training.self_training import nnUNetTrainerSelfTraining  # noqa: F401
from nnunetv2_mn.training.semisupervised import nnUNetTrainerSemiSupervised  # noqa: F401
from nnunetv2_mn.training.uamt import nnUNetTrainerUAMT  # noqa: F401
from nnunetv2_mn.training.variants.mn_variants import *  # noqa: F401,F403
from nnunetv2_mn.training.variants.schedules import *  # noqa: F401,F403
