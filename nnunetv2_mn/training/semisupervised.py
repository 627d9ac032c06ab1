"""nnUNetTrainerSemiSupervised: the base of every semi-supervised trainer of this package.

Adds to nnU-Net's trainer (i) a second data loader over the preprocessed unlabelled cases
(`{data_identifier}_unlabeled/`, see `nnunetv2_mn.paths`), with nnU-Net's training transforms, no
foreground oversampling and no use of their placeholder `_seg`; (ii) a per-epoch batch composition:
of the plans' batch size B, b_u unlabelled and b_l = B - b_u labelled samples, chosen by a pluggable
`SamplingRule` (`sampling` attribute); (iii) extra per-epoch log keys drawn in progress.png; (iv)
atomic checkpoints with extra state that `--c` restores.

Subclasses implement `semi_supervised_step(data_l, target_l, data_u) -> dict of floats` (must contain
'loss') and may extend `logging_panels`, `extra_checkpoint_state` and `load_extra_checkpoint_state`.
"""
import os
from typing import Dict, List, Optional

import numpy as np
import torch
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from batchgenerators.utilities.file_and_folder_operations import isdir, join, load_json
from torch._dynamo import OptimizedModule

from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.collate_outputs import collate_outputs
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA
from nnunetv2.utilities.helpers import dummy_context

from nnunetv2_mn.data.unlabeled import MANIFEST, UnlabeledDataError, plans_fingerprint
from nnunetv2_mn.paths import UNLABELED_RAW_FOLDER, unlabeled_preprocessed_dir
from nnunetv2_mn.training.dataloading import UnlabeledDataLoader, UnlabeledDataset
from nnunetv2_mn.training.logging import install_logger
from nnunetv2_mn.training.sampling import ScheduleState, build_sampling_rule


def unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP and torch.compile wrappers."""
    if hasattr(network, "module") and isinstance(network, torch.nn.parallel.DistributedDataParallel):
        network = network.module
    if isinstance(network, OptimizedModule):
        network = network._orig_mod
    return network


class nnUNetTrainerSemiSupervised(nnUNetTrainer):
    #: batch composition rule, see nnunetv2_mn.training.sampling ('fixed', 'uniform', 'ramp', 'lrg')
    sampling: str = "ramp"
    sampling_kwargs: dict = {}
    #: share of the epochs trained on labelled data only before unlabelled samples may enter a batch
    supervised_fraction: float = 0.0
    #: nnU-Net schedule attributes (num_epochs, num_iterations_per_epoch, ...) a variant overrides
    schedule_overrides: dict = {}
    #: per-epoch values printed to the log and drawn in progress.png, by panel
    log_panels: Dict[str, List[str]] = {"batch composition (b_l labelled + b_u unlabelled = B)": ["b_l", "b_u"]}
    #: keys of the dict returned by `semi_supervised_step` that are logged as epoch means
    step_log_keys: tuple = ()

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        for k, v in self.schedule_overrides.items():
            setattr(self, k, v)
        self.sampling_rule = build_sampling_rule(self.sampling, **self.sampling_kwargs)
        self.dataloader_unlabeled = None
        self.num_labeled_cases = self.num_unlabeled_cases = 0
        self.b_u = 0
        self.last_batch_keys = ([], [])
        install_logger(self, self.log_panels)

    # ------------------------------------------------------------------ unlabelled data
    @property
    def unlabeled_folder(self) -> Optional[str]:
        if self.preprocessed_dataset_folder_base is None:
            return None
        return unlabeled_preprocessed_dir(self.preprocessed_dataset_folder_base,
                                          self.configuration_manager.data_identifier)

    def _fix_command(self) -> str:
        return (f"Put unlabelled images into $nnUNet_raw/{self.plans_manager.dataset_name}/{UNLABELED_RAW_FOLDER}/ "
                f"(named like imagesTr: CASE_0000{self.dataset_json['file_ending']}) and run\n"
                f"    nnUNetv2_mn_preprocess_unlabeled -d {self.plans_manager.dataset_name} "
                f"-c {self.configuration_name} -p {self.plans_manager.plans_name}")

    def _unlabeled_dataset(self, identifiers, class_locations=None):
        return UnlabeledDataset(self.unlabeled_folder, identifiers, infer_dataset_class(self.preprocessed_dataset_folder),
                                class_locations)

    def check_unlabeled_data(self) -> List[str]:
        """Fail before training when the unlabelled cases are missing or do not match the plans."""
        folder = self.unlabeled_folder
        if folder is None or not isdir(folder):
            raise UnlabeledDataError(f"No preprocessed unlabelled data for {self.__class__.__name__}: "
                                     f"{folder} does not exist.\n{self._fix_command()}")
        identifiers = self._unlabeled_dataset(None).identifiers
        if len(identifiers) == 0:
            raise UnlabeledDataError(f"{folder} holds no preprocessed unlabelled case.\n{self._fix_command()}")
        manifest = join(folder, MANIFEST)
        if os.path.isfile(manifest):
            recorded = load_json(manifest).get("plans_fingerprint")
            current = plans_fingerprint(self.plans_manager, self.configuration_manager, self.dataset_json)
            if recorded != current:
                raise UnlabeledDataError(f"The unlabelled cases in {folder} were preprocessed with other plans than "
                                         f"{self.plans_manager.plans_name} / {self.configuration_name} now has "
                                         f"(spacing, normalisation or resampling changed). Preprocess them again:\n"
                                         f"{self._fix_command()}")
        dataset = self._unlabeled_dataset(identifiers)
        for identifier in identifiers:
            n_channels = dataset.load_case(identifier)[0].shape[0]
            if n_channels != self.num_input_channels:
                raise UnlabeledDataError(f"Unlabelled case {identifier} has {n_channels} channel(s) but the dataset "
                                         f"has {self.num_input_channels} (dataset.json channel_names). Each unlabelled "
                                         f"case needs one file per channel: CASE_0000, CASE_0001, ...\n"
                                         f"{self._fix_command()}")
        return identifiers

    def _unlabeled_transforms(self):
        rotation, dummy_2d, _, mirror_axes = self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        return self.get_training_transforms(
            self.configuration_manager.patch_size, rotation, self._get_deep_supervision_scales(), mirror_axes,
            dummy_2d, use_mask_for_norm=self.configuration_manager.use_mask_for_norm, is_cascaded=self.is_cascaded,
            foreground_labels=self.label_manager.foreground_labels,
            regions=self.label_manager.foreground_regions if self.label_manager.has_regions else None,
            ignore_label=self.label_manager.ignore_label)

    def get_unlabeled_dataloader(self, identifiers: List[str], class_locations: Optional[dict] = None,
                                 oversample_foreground_percent: float = 0.0):
        """Loader over the unlabelled cases; with `class_locations` (pseudo-mask foreground per case) a share
        `oversample_foreground_percent` of the crops is centred on pseudo-foreground."""
        _, _, initial_patch_size, _ = self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        dl = UnlabeledDataLoader(self._unlabeled_dataset(identifiers, class_locations), self.batch_size,
                                 initial_patch_size, self.configuration_manager.patch_size, self.label_manager,
                                 transforms=self._unlabeled_transforms(),
                                 oversample_foreground_percent=oversample_foreground_percent)
        n_proc = get_allowed_n_proc_DA()
        if n_proc == 0:
            return SingleThreadedAugmenter(dl, None)
        return NonDetMultiThreadedAugmenter(dl, None, max(1, n_proc // 2), num_cached=max(3, n_proc // 4), seeds=None,
                                            pin_memory=self.device.type == "cuda", wait_time=0.002)

    def do_split(self):
        """nnU-Net's split, with a clear error instead of scikit-learn's when too few cases are labelled."""
        splits_file = join(self.preprocessed_dataset_folder_base, "splits_final.json")
        if self.fold != "all" and not os.path.isfile(splits_file):
            n = len(infer_dataset_class(self.preprocessed_dataset_folder).get_identifiers(
                self.preprocessed_dataset_folder))
            if n < 5:
                raise RuntimeError(f"Only {n} labelled training cases: nnU-Net's 5-fold cross-validation needs at "
                                   f"least 5. Train on all labelled cases with fold 'all' "
                                   f"(nnUNetv2_train {self.plans_manager.dataset_name} {self.configuration_name} all "
                                   f"-tr {self.__class__.__name__}) or write your own {splits_file}.")
        return super().do_split()

    def get_dataloaders(self):
        unlabeled_ids = self.check_unlabeled_data()
        dl_train, dl_val = super().get_dataloaders()
        self.num_labeled_cases = len(self.do_split()[0])
        self.num_unlabeled_cases = len(unlabeled_ids)
        self.unlabeled_ids = unlabeled_ids
        self.dataloader_unlabeled = self.get_unlabeled_dataloader(unlabeled_ids)
        self.print_to_log_file(f"Semi-supervised training: {self.num_labeled_cases} labelled training cases, "
                               f"{self.num_unlabeled_cases} unlabelled cases from {self.unlabeled_folder}; "
                               f"batch composition rule '{self.sampling_rule.name}', unlabelled data from epoch "
                               f"{self.unlabeled_start_epoch}.")
        return dl_train, dl_val

    def replace_unlabeled_dataloader(self, new_loader) -> None:
        """Swap the unlabelled loader (its worker processes hold their own copy of the dataset)."""
        finish = getattr(self.dataloader_unlabeled, "_finish", None)
        if finish is not None:
            finish()
        self.dataloader_unlabeled = new_loader

    def on_train_end(self):
        super().on_train_end()
        self.replace_unlabeled_dataloader(None)

    # ------------------------------------------------------------------ batch composition
    @property
    def unlabeled_start_epoch(self) -> int:
        return int(round(self.supervised_fraction * self.num_epochs))

    def student_lr_schedule(self):
        """(lr_init, lr_now, lr_final) of the model being trained; nnU-Net's poly schedule ends at 0."""
        return self.initial_lr, self.optimizer.param_groups[0]["lr"], 0.0

    def schedule_state(self) -> ScheduleState:
        lr_init, lr_now, lr_final = self.student_lr_schedule()
        return ScheduleState(self.current_epoch, self.num_epochs, self.unlabeled_start_epoch, lr_init, lr_now,
                             lr_final, self.num_labeled_cases, self.num_unlabeled_cases)

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self.b_u = self.sampling_rule.num_unlabeled(self.batch_size, self.schedule_state())
        self.logger.log("b_l", self.batch_size - self.b_u, self.current_epoch)
        self.logger.log("b_u", self.b_u, self.current_epoch)
        self.print_to_log_file(f"Batch composition ({self.sampling_rule.name}): "
                               f"b_l={self.batch_size - self.b_u} labelled + b_u={self.b_u} unlabelled")

    def compose_batch(self, batch: dict):
        """The first b_l labelled samples of nnU-Net's batch and b_u samples from the unlabelled loader
        (their case identifiers are kept in `last_batch_keys` for the log and the tests)."""
        b_l = self.batch_size - self.b_u
        target = batch["target"]
        target_l = [t[:b_l].to(self.device, non_blocking=True) for t in target] if isinstance(target, list) \
            else target[:b_l].to(self.device, non_blocking=True)
        data_l = batch["data"][:b_l].to(self.device, non_blocking=True)
        data_u, keys_u = None, []
        if self.b_u > 0:
            batch_u = next(self.dataloader_unlabeled)
            data_u, keys_u = batch_u["data"][:self.b_u].to(self.device, non_blocking=True), list(batch_u["keys"][:self.b_u])
        self.last_batch_keys = (list(batch["keys"][:b_l]), keys_u)
        return data_l, target_l, data_u

    def train_step(self, batch: dict) -> dict:
        data_l, target_l, data_u = self.compose_batch(batch)
        return self.semi_supervised_step(data_l, target_l, data_u)

    def semi_supervised_step(self, data_l, target_l, data_u) -> dict:
        raise NotImplementedError(f"{self.__class__.__name__} is a base class; train a subclass such as "
                                  f"nnUNetTrainerMeanTeacher or nnUNetTrainerMN.")

    # ------------------------------------------------------------------ helpers for subclasses
    def autocast(self):
        return torch.autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context()

    def backward_and_step(self, loss: torch.Tensor, optimizer, network, grad_scaler=None, clip: float = 12.0):
        """One backward and one optimizer step, with AMP's scaler when on CUDA (as nnU-Net's train_step)."""
        if grad_scaler is not None:
            grad_scaler.scale(loss).backward()
            grad_scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_([p for p in network.parameters() if p.requires_grad], clip)
            grad_scaler.step(optimizer)
            grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in network.parameters() if p.requires_grad], clip)
            optimizer.step()

    def log_epoch_means(self, train_outputs: List[dict], keys: List[str]):
        """Log the epoch mean of each per-step value in `keys` (NaN when no step produced it)."""
        collated = collate_outputs(train_outputs) if train_outputs else {}
        for k in keys:
            values = np.asarray(collated.get(k, [np.nan]), dtype=float)
            value = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
            self.logger.log(k, value, self.current_epoch)

    def on_train_epoch_end(self, train_outputs: List[dict]):
        super().on_train_epoch_end(train_outputs)
        step_keys = [k for keys in self.log_panels.values() for k in keys if k not in ("b_l", "b_u")
                     and k in self.step_log_keys]
        self.log_epoch_means(train_outputs, step_keys)

    def on_epoch_end(self):
        extra = [k for keys in self.log_panels.values() for k in keys]
        values = {k: self.logger.get_value(k, step=-1) for k in extra}
        self.print_to_log_file(", ".join(f"{k} {np.round(v, 4)}" for k, v in values.items()))
        super().on_epoch_end()

    # ------------------------------------------------------------------ checkpoints
    def extra_checkpoint_state(self) -> dict:
        return {"ssl_sampling": self.sampling_rule.name, "ssl_b_u": self.b_u}

    def load_extra_checkpoint_state(self, checkpoint: dict) -> None:
        self.b_u = checkpoint.get("ssl_b_u", 0)

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint plus `extra_checkpoint_state()`, written atomically (tmp file + rename)."""
        if self.local_rank != 0:
            return
        if self.disable_checkpointing:
            self.print_to_log_file("No checkpoint written, checkpointing is disabled")
            return
        checkpoint = {
            "network_weights": unwrap(self.network).state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "grad_scaler_state": self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
            "logging": self.logger.get_checkpoint(),
            "_best_ema": self._best_ema,
            "current_epoch": self.current_epoch + 1,
            "init_args": self.my_init_kwargs,
            "trainer_name": self.__class__.__name__,
            "inference_allowed_mirroring_axes": self.inference_allowed_mirroring_axes,
        }
        checkpoint.update(self.extra_checkpoint_state())
        tmp = filename + ".tmp"
        torch.save(checkpoint, tmp)
        os.replace(tmp, filename)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        if not isinstance(filename_or_checkpoint, str):
            raise TypeError("load_checkpoint expects the path of a checkpoint file")
        super().load_checkpoint(filename_or_checkpoint)
        checkpoint = torch.load(filename_or_checkpoint, map_location=self.device, weights_only=False)
        self.load_extra_checkpoint_state(checkpoint)
