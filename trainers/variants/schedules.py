"""Short-schedule variants for CPU runs, like nnU-Net's nnUNetTrainer_5epochs."""
from nnunetv2_mn.trainers.dtc import nnUNetTrainerDTC
from nnunetv2_mn.trainers.mean_teacher import nnUNetTrainerMeanTeacher
from nnunetv2_mn.trainers.mn import nnUNetTrainerMN
from nnunetv2_mn.trainers.self_training import nnUNetTrainerSelfTraining
from nnunetv2_mn.trainers.uamt import nnUNetTrainerUAMT
from nnunetv2_mn.trainers.variants.mn_variants import nnUNetTrainerMN_EffNetLite0, nnUNetTrainerMN_TriPlanar

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
    """Stage 1 for one epoch, then a 3D, a 2D and a 3D student epoch (the paper's alternation by epoch), each
    batch half unlabelled."""
    schedule_overrides = DEBUG_SCHEDULE
    stage1_fraction = 0.25
    stage2_students = "epochs"
    sampling = "fixed"
    sampling_kwargs = {"ratio": 0.5}
    branch2d_config = TINY_SEGFORMER


class nnUNetTrainerMN_debugPair(nnUNetTrainerMN_debug):
    """As _debug with the default stage 2: both students learn in every iteration."""
    stage2_students = nnUNetTrainerMN.stage2_students


class nnUNetTrainerMN_debugLearn(nnUNetTrainerMN):
    """The defaults (LRG with the expected share, both students every stage-2 iteration) on a schedule that learns
    the synthetic data set's structures in a few CPU minutes (tests: Dice above what an untrained model reaches)."""
    schedule_overrides = {"num_epochs": 8, "num_iterations_per_epoch": 10, "num_val_iterations_per_epoch": 1,
                          "save_every": 4}
    stage1_fraction = 0.25
    branch2d_config = TINY_SEGFORMER


class nnUNetTrainerMN_TriPlanar_debug(nnUNetTrainerMN_debug):
    """As _debug with the tri-planar 2D model of nnUNetTrainerMN_TriPlanar. The synthetic patches are 16 voxels along
    axis 0: SegFormer's sequence-reduction convs (sr_ratios 8, 4, 2) need >= 32 px, so none here."""
    slice_axes = nnUNetTrainerMN_TriPlanar.slice_axes
    branch2d_config = {**TINY_SEGFORMER, "sr_ratios": [1, 1, 1, 1]}


class nnUNetTrainerSelfTraining_debug(nnUNetTrainerSelfTraining):
    """Teacher for 2 epochs, pseudo-labels, student for 2 epochs."""
    schedule_overrides = DEBUG_SCHEDULE


class nnUNetTrainerMN_EffNetLite0_demo(nnUNetTrainerMN_EffNetLite0):
    """The demo's trainer: offline ImageNet-pretrained 2D model, a schedule that fits a few CPU minutes."""
    schedule_overrides = {"num_epochs": 10, "num_iterations_per_epoch": 12, "num_val_iterations_per_epoch": 2,
                          "save_every": 5}
    stage1_fraction = 0.25

# UA-MT and DTC (issue 13): the same short schedules as Mean Teacher's

class nnUNetTrainerUAMT_5epochs(nnUNetTrainerUAMT):
    schedule_overrides = {"num_epochs": 5}


class nnUNetTrainerUAMT_debug(nnUNetTrainerUAMT):
    schedule_overrides = DEBUG_SCHEDULE


class nnUNetTrainerDTC_5epochs(nnUNetTrainerDTC):
    schedule_overrides = {"num_epochs": 5}


class nnUNetTrainerDTC_debug(nnUNetTrainerDTC):
    schedule_overrides = DEBUG_SCHEDULE
