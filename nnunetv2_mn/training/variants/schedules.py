"""Short-schedule variants for CPU runs, like nnU-Net's nnUNetTrainer_5epochs."""
from nnunetv2_mn.training.mean_teacher import nnUNetTrainerMeanTeacher
from nnunetv2_mn.training.mn import nnUNetTrainerMN
from nnunetv2_mn.training.variants.mn_variants import nnUNetTrainerMN_EffNetLite0

#: a few tiny epochs: for tests and the demo on 2 CPU cores (checkpoint every epoch so that --c can be tried)
DEBUG_SCHEDULE = {"num_epochs": 4, "num_iterations_per_epoch": 3, "num_val_iterations_per_epoch": 2, "save_every": 1}
#: a tiny SegFormer (random init) built from a config: no download, 0.05 s per 32 slices on a CPU
TINY_SEGFORMER = {"model_type": "segformer", "depths": [1, 1, 1, 1], "hidden_sizes": [16, 32, 64, 128],
                  "num_attention_heads": [1, 1, 2, 4], "decoder_hidden_size": 32}


class nnUNetTrainerMeanTeacher_5epochs(nnUNetTrainerMeanTeacher):
    schedule_overrides = {"num_epochs": 5}


class nnUNetTrainerMeanTeacher_debug(nnUNetTrainerMeanTeacher):
    schedule_overrides = DEBUG_SCHEDULE


class nnUNetTrainerMN_5epochs(nnUNetTrainerMN):
    schedule_overrides = {"num_epochs": 5}
    stage1_fraction = 0.2


class nnUNetTrainerMN_debug(nnUNetTrainerMN):
    """Stage 1 for one epoch, then a 3D, a 2D and a 3D student epoch, each batch half unlabelled."""
    schedule_overrides = DEBUG_SCHEDULE
    stage1_fraction = 0.25
    sampling = "fixed"
    sampling_kwargs = {"ratio": 0.5}
    branch2d_config = TINY_SEGFORMER


class nnUNetTrainerMN_EffNetLite0_demo(nnUNetTrainerMN_EffNetLite0):
    """The demo's trainer: offline ImageNet-pretrained 2D model, a schedule that fits a few CPU minutes."""
    schedule_overrides = {"num_epochs": 10, "num_iterations_per_epoch": 12, "num_val_iterations_per_epoch": 2,
                          "save_every": 5}
    stage1_fraction = 0.25
