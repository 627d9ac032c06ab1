"""The benchmark's trainer classes, made by a factory (not generated code).

nnU-Net finds a trainer by name by importing every module in the folders of `nnUNet_extTrainer`. The driver
copies this file into `WORKDIR/bench_trainers/<schedule>/` and writes `variants.json` beside it; on import the
module makes one class per variant, `<Trainer>_bench<schedule>[_e<epochs>][_run<n>]`: the package's (or nnU-Net's)
trainer with the benchmark's schedule applied after its own `__init__`, and, on the CPU schedule, the offline
EfficientNet-Lite0 2D model for SegFormer-based trainers. Self-contained on purpose: the training subprocesses
import it from the work folder, where the benchmark package itself is not importable.
"""
import json
import os
from typing import Dict

import torch

SPEC_FILE = "variants.json"


class _BenchSchedule:
    """Applies `schedule_overrides` after the trainer's own __init__ (also to nnU-Net's own trainer) and skips
    nnU-Net's validation after training unless `final_validation` (for fold 'all' it would predict the training
    cases; the benchmark predicts imagesTs instead)."""

    schedule_overrides: dict = {}
    final_validation: bool = False

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        for key, value in self.schedule_overrides.items():
            setattr(self, key, value)

    def perform_actual_validation(self, save_probabilities: bool = False):
        if self.final_validation:
            return super().perform_actual_validation(save_probabilities)
        self.print_to_log_file("benchmark: nnU-Net's final validation skipped (fold 'all' would validate on "
                               "the training cases); the benchmark predicts imagesTs instead")


def trainer_base(name: str):
    """The package's (or nnU-Net's) trainer class by name."""
    if name == "nnUNetTrainer":
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
        return nnUNetTrainer
    from nnunetv2_mn.trainers.discovery import trainer_classes
    return trainer_classes()[name]


def make_trainers(spec: dict, module: str = __name__) -> Dict[str, type]:
    """{class name: class} for the variants of `spec` ({'final_validation': bool, 'variants': [{'name', 'trainer',
    'schedule_overrides', 'attributes'}]})."""
    classes = {}
    for v in spec["variants"]:
        attributes = {"schedule_overrides": dict(v["schedule_overrides"]), "final_validation": spec["final_validation"],
                      "__module__": module, **v.get("attributes", {})}
        classes[v["name"]] = type(v["name"], (_BenchSchedule, trainer_base(v["trainer"])), attributes)
    return classes


_spec_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), SPEC_FILE)
if os.path.isfile(_spec_path):  # in a work folder: the classes nnU-Net looks for
    with open(_spec_path) as f:
        globals().update(make_trainers(json.load(f)))
