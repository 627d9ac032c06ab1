"""nnUNetTrainerSemiSupervised: the base of every semi-supervised trainer of this package.

Adds to nnU-Net's trainer (i) a second data loader over the preprocessed unlabelled cases
(`{data_identifier}_unlabeled/`, see `nnunetv2_mn.paths`), with nnU-Net's training transforms, no
foreground oversampling and no use of their placeholder `_seg`; (ii) a per-step batch composition:
b_u unlabelled samples on top of nnU-Net's whole labelled batch of the plans' B (`unlabeled_samples='add'`, the
default) or in place of labelled ones (b_l = B - b_u, the paper's Eq. 5: 'replace'); a pluggable `SamplingRule`
(`sampling`, `sampling_rounding`) gives the unlabelled share b_u / B of each epoch, and the labelled samples keep
nnU-Net's share of foreground-forced patches; (iii) extra per-epoch log keys drawn in progress.png; (iv)
atomic checkpoints with extra state that `--c` restores.

Subclasses implement `semi_supervised_step(data_l, target_l, data_u) -> dict` of floats or detached scalar tensors
(must contain 'loss'; the tensors are read by the host once per step, `nnunetv2_mn.training.step_results`) and may extend `logging_panels`, `extra_checkpoint_state` and `load_extra_checkpoint_state`.
"""
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from batchgenerators.utilities.file_and_folder_operations import isdir, join
from torch._dynamo import OptimizedModule

from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.collate_outputs import collate_outputs
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA
from nnunetv2.utilities.helpers import dummy_context

from nnunetv2_mn.mn.lr_schedules import planned_lrs
from nnunetv2_mn.data.unlabeled import UnlabeledDataError, plans_fingerprint
from nnunetv2_mn.paths import UNLABELED_RAW_FOLDER, unlabeled_preprocessed_dir
from nnunetv2_mn.training.dataloading import UnlabeledDataLoader, UnlabeledDataset
from nnunetv2_mn.training.progress_logger import install_logger
from nnunetv2_mn.training.sampling import (ScheduleState, build_sampling_rule, check_unlabeled_samples,
                                           foreground_forced, labeled_sample_indices)
from nnunetv2_mn.training.step_results import to_host

#: per-step values of the batch composition, logged as epoch means
BATCH_KEYS = ("b_l", "b_u")


def sample_class_locations(seg: np.ndarray, foreground_labels, seed: int, per_class: int) -> dict:
    """Foreground voxel locations per class of a (1, X, Y, Z) segmentation, as nnU-Net's preprocessing samples
    them for its foreground oversampling (int16, (n, 4))."""
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor

    locs = DefaultPreprocessor._sample_foreground_locations(seg, foreground_labels, seed=seed,
                                                            min_num_samples=per_class, min_percent_coverage=0.0)
    return {c: np.asarray(v, dtype=np.int16) for c, v in locs.items()}


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
    #: how the rule's unlabelled share becomes b_u per step: 'expected' (stochastic rounding, E[b_u] = share * B
    #: at any batch size) or 'floor' (Eq. 10 as printed; coarse at nnU-Net's batch sizes)
    sampling_rounding: str = "expected"
    #: how the b_u unlabelled samples enter a step: 'add' (default: nnU-Net's whole labelled batch stays, b_l = B,
    #: and the b_u unlabelled samples come on top: B + b_u samples per step, each part weighted by its count as in
    #: Eq. 5; chosen by the Hippocampus benchmark, docs/method.md) or 'replace' (the paper: they take the place of
    #: labelled samples, b_l = B - b_u)
    unlabeled_samples: str = "add"
    #: stage 1: share of the epochs trained on labelled data only before unlabelled samples may enter a batch
    stage1_fraction: float = 0.0
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
        self.sampling_rule = build_sampling_rule(self.sampling, self.sampling_rounding, **self.sampling_kwargs)
        check_unlabeled_samples(self.unlabeled_samples, f"{self.__class__.__name__}.unlabeled_samples")
        self.dataloader_unlabeled = None
        self.num_labeled_cases = self.num_unlabeled_cases = 0
        self.b_u = 0  # of the last step
        self.unlabeled_shares = {}  # model -> b_u / B of this epoch
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
        dataset = self._unlabeled_dataset(identifiers)
        for identifier in identifiers:
            n_channels = dataset.load_case(identifier)[0].shape[0]
            if n_channels != self.num_input_channels:
                raise UnlabeledDataError(f"Unlabelled case {identifier} has {n_channels} channel(s) but the dataset "
                                         f"has {self.num_input_channels} (dataset.json channel_names). Each unlabelled "
                                         f"case needs one file per channel: CASE_0000, CASE_0001, ...\n"
                                         f"{self._fix_command()}")
        from nnunetv2_mn.data.unlabeled import check_preprocessed_unlabeled  # complete, current, these plans
        raw = os.environ.get("nnUNet_raw")
        check_preprocessed_unlabeled(
            folder, identifiers, plans_fingerprint(self.plans_manager, self.configuration_manager, self.dataset_json),
            f"{self.plans_manager.plans_name} / {self.configuration_name}", self._fix_command(),
            join(raw, self.plans_manager.dataset_name) if raw else None, self.dataset_json, self.print_to_log_file)
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
        return self.augmenter(dl)

    def augmenter(self, dl):
        """nnU-Net's background augmentation around a loader of this trainer (in-process without workers)."""
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
        self.num_labeled_cases = len(self.do_split()[0])
        self.num_unlabeled_cases = len(unlabeled_ids)
        self.unlabeled_ids = unlabeled_ids
        self.check_sampling_uses_unlabeled_data()  # before any loader worker starts
        dl_train, dl_val = super().get_dataloaders()
        self.dataloader_unlabeled = self.get_unlabeled_dataloader(unlabeled_ids)
        self.print_to_log_file(f"Semi-supervised training: {self.num_labeled_cases} labelled training cases, "
                               f"{self.num_unlabeled_cases} unlabelled cases from {self.unlabeled_folder}; "
                               f"batch composition rule {self.sampling_rule.description}, unlabelled data from epoch "
                               f"{self.unlabeled_start_epoch}.")
        return dl_train, dl_val

    @torch.no_grad()
    def predict_unlabeled_cases(self):
        """(identifier, preprocessed data, hard prediction (1, X, Y, Z), properties) of every unlabelled case from
        the 3D network: nnU-Net's sliding window on the preprocessed volume, no mirroring."""
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                    perform_everything_on_device=self.device.type == "cuda", device=self.device,
                                    verbose=False, verbose_preprocessing=False, allow_tqdm=False)
        self.set_deep_supervision_enabled(False)
        self.network.eval()
        predictor.manual_initialization(self.network, self.plans_manager, self.configuration_manager, None,
                                        self.dataset_json, self.__class__.__name__,
                                        self.inference_allowed_mirroring_axes)
        dataset = self._unlabeled_dataset(self.unlabeled_ids)
        try:
            for identifier in self.unlabeled_ids:
                data, _, _, properties = dataset.load_case(identifier)
                data = np.asarray(data)
                logits = predictor.predict_sliding_window_return_logits(torch.from_numpy(data))
                yield identifier, data, logits.argmax(0, keepdim=True).cpu().numpy().astype(np.int16), properties
        finally:
            self.set_deep_supervision_enabled(self.enable_deep_supervision)

    def replace_unlabeled_dataloader(self, new_loader) -> None:
        """Swap the unlabelled loader (its worker processes hold their own copy of the dataset)."""
        finish = getattr(self.dataloader_unlabeled, "_finish", None)
        if finish is not None:
            finish()
        self.dataloader_unlabeled = new_loader

    def on_train_end(self):
        super().on_train_end()
        self.replace_unlabeled_dataloader(None)

    # ------------------------------------------------------------------ learning rates and batch composition
    @property
    def unlabeled_start_epoch(self) -> int:
        return int(round(self.stage1_fraction * self.num_epochs))

    def make_lr_scheduler(self, optimizer, initial_lr: float):
        """The learning-rate schedule of an optimizer of this trainer (nnU-Net's poly decay to 0)."""
        return PolyLRScheduler(optimizer, initial_lr, self.num_epochs)

    def configure_optimizers(self):
        optimizer, _ = super().configure_optimizers()
        return optimizer, self.make_lr_scheduler(optimizer, self.initial_lr)

    def student_optimizers(self) -> Dict[str, Tuple[torch.optim.Optimizer, float]]:
        """Each model that learns as a student: (its optimizer, its initial learning rate)."""
        return {"3d": (self.optimizer, self.initial_lr)}

    def unlabeled_students(self) -> Tuple[str, ...]:
        """The models that learn from unlabelled samples after stage 1."""
        return ("3d",)

    def teacher_dice(self, student: str) -> float:
        """The smoothed validation pseudo Dice of `student`'s teacher (NaN where this trainer has no measure)."""
        return float("nan")

    def schedule_state(self, model: str, epoch: int, lr_now: float) -> ScheduleState:
        lr_init = self.student_optimizers()[model][1]
        return ScheduleState(epoch, self.num_epochs, self.unlabeled_start_epoch, lr_init, lr_now, 0.0,
                             self.num_labeled_cases, self.num_unlabeled_cases, self.teacher_dice(model))

    def check_sampling_uses_unlabeled_data(self) -> None:
        """Refuse to start when the sampling rule can give no unlabelled sample in any epoch after stage 1 at the
        batch size this process trains with (per GPU under DDP): the run would be supervised only. (A rule that
        follows measurements made during training cannot be read in advance and is not checked.)"""
        if not self.sampling_rule.predictable:
            return
        for model in self.unlabeled_students():
            lr_init = self.student_optimizers()[model][1]
            lrs = planned_lrs(lambda o: self.make_lr_scheduler(o, lr_init), lr_init, self.num_epochs)
            states = [self.schedule_state(model, e, lrs[e]) for e in range(self.unlabeled_start_epoch, self.num_epochs)]
            if self.sampling_rule.max_num_unlabeled(self.batch_size, states) > 0:
                continue
            best = max((self.sampling_rule.share(st) for st in states), default=0.0)
            if best > 0:
                why, fix = (f"floor({best:.3f} x {self.batch_size}) = 0", "Use sampling_rounding = 'expected' "
                            "(E[b_u] = share x B at any batch size), a larger batch per GPU (fewer GPUs, or a plans "
                            "batch_size that is a multiple of the GPU count), or another sampling rule.")
            else:
                why, fix = ("the unlabelled share is 0 in every epoch after stage 1", "Train for more epochs (the "
                            "learning rate must decay after stage 1 for LRG sampling), a smaller stage1_fraction, or "
                            "another sampling rule ('fixed', 'uniform').")
            raise RuntimeError(
                f"{self.__class__.__name__} would never put an unlabelled sample into a batch of the {model.upper()} "
                f"student: sampling rule {self.sampling_rule.description} with a batch of {self.batch_size} per "
                f"process and {self.num_epochs} epochs ({self.unlabeled_start_epoch} in stage 1) gives b_u = 0 in "
                f"every epoch after stage 1 ({why}), so the run would be supervised only. {fix}")

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self.unlabeled_shares = {
            model: self.sampling_rule.share(self.schedule_state(model, self.current_epoch, opt.param_groups[0]["lr"]))
            for model, (opt, _) in self.student_optimizers().items()}
        shares = ", ".join(f"{m.upper()} student {x:.3f} (E[b_u] = {x * self.batch_size:.2f})"
                           for m, x in self.unlabeled_shares.items() if m in self.unlabeled_students())
        self.print_to_log_file(f"Batch composition ({self.sampling_rule.description}), unlabelled share of "
                               f"B = {self.batch_size}: {shares}")

    def draw_b_u(self, model: str = "3d") -> int:
        """b_u of one step of `model`'s student from the epoch's unlabelled share."""
        self.b_u = self.sampling_rule.round(self.unlabeled_shares.get(model, 0.0), self.batch_size)
        return self.b_u

    @property
    def labeled_forced(self) -> Optional[List[bool]]:
        """Which samples of nnU-Net's labelled batch its loader forces to hold foreground (None: each sample at
        random, nnU-Net's probabilistic oversampling, so that any subset keeps the share)."""
        if self.probabilistic_oversampling:
            return None
        return foreground_forced(self.batch_size, self.oversample_foreground_percent)

    def num_labeled(self, b_u: int) -> int:
        """b_l of a step with b_u unlabelled samples (`unlabeled_samples`)."""
        return self.batch_size if self.unlabeled_samples == "add" else self.batch_size - b_u

    def compose_batch(self, batch: dict, batch_u: Optional[dict], b_u: int):
        """b_l = `num_labeled(b_u)` samples of nnU-Net's labelled batch, chosen so that the share of
        foreground-forced patches stays nnU-Net's (`labeled_sample_indices`), and the first b_u samples of the
        unlabelled batch (case identifiers of both are kept in `last_batch_keys` for the log and the tests)."""
        b_l = self.num_labeled(b_u)
        forced = self.labeled_forced
        index = list(range(b_l)) if forced is None else labeled_sample_indices(b_l, forced)
        target = batch["target"]
        target_l = [t[index].to(self.device, non_blocking=True) for t in target] if isinstance(target, list) \
            else target[index].to(self.device, non_blocking=True)
        data_l = batch["data"][index].to(self.device, non_blocking=True)
        data_u, keys_u = None, []
        if b_u > 0:
            data_u, keys_u = batch_u["data"][:b_u].to(self.device, non_blocking=True), list(batch_u["keys"][:b_u])
        self.last_batch_keys = ([batch["keys"][i] for i in index], keys_u)
        return data_l, target_l, data_u

    def next_unlabeled_batch(self, *b_u: int) -> Optional[dict]:
        """One batch of the unlabelled loader when any of the steps `b_u` needs unlabelled samples."""
        return next(self.dataloader_unlabeled) if any(b_u) else None

    def train_step(self, batch: dict) -> dict:
        b_u = self.draw_b_u("3d")
        result = self.semi_supervised_step(*self.compose_batch(batch, self.next_unlabeled_batch(b_u), b_u))
        return {**to_host(result)[0], "b_u": b_u, "b_l": self.num_labeled(b_u)}

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
        """nnU-Net's `train_losses` is the 3D network's loss: the epoch mean over the steps in which it learned
        (a step in which only another model learned returns NaN); then the epoch means of the step keys."""
        losses = np.asarray(collate_outputs(train_outputs)["loss"], dtype=float).ravel()
        if self.is_ddp:
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, losses)
            losses = np.concatenate(gathered)
        loss = float(np.nanmean(losses)) if np.isfinite(losses).any() else float("nan")
        self.logger.log("train_losses", loss, self.current_epoch)
        step_keys = [k for keys in self.log_panels.values() for k in keys if k in BATCH_KEYS + tuple(self.step_log_keys)]
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
        from nnunetv2_mn.training.checkpointing import weights_only_safe
        checkpoint = weights_only_safe(checkpoint)  # loads with torch.load(..., weights_only=True)
        tmp = filename + ".tmp"
        torch.save(checkpoint, tmp)
        os.replace(tmp, filename)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        """nnU-Net's state and `load_extra_checkpoint_state`, from one `torch.load(..., weights_only=True)`."""
        from nnunetv2_mn.training.checkpointing import load_checkpoint_file, restore_nnunet_state
        from nnunetv2_mn.training.startup import errors_to_training_log
        if not isinstance(filename_or_checkpoint, str):
            raise TypeError("load_checkpoint expects the path of a checkpoint file")
        with errors_to_training_log(self, "Loading the checkpoint"):
            checkpoint = load_checkpoint_file(filename_or_checkpoint, self.device, self.print_to_log_file)
            restore_nnunet_state(self, checkpoint, unwrap)
            self.load_extra_checkpoint_state(checkpoint)

    # ------------------------------------------------------------------ start-up checks, errors in the log
    def check_labeled_data(self) -> None:
        """Label values of the preprocessed labelled cases against dataset.json, before anything is built."""
        from nnunetv2_mn.training.startup import check_labeled_data
        check_labeled_data(self)

    def run_training(self):
        """nnU-Net's training loop; an error that stops it is also written to the training log (one paragraph)."""
        from nnunetv2_mn.training.startup import errors_to_training_log
        with errors_to_training_log(self):
            if self.current_epoch == 0:
                self.check_labeled_data()
            super().run_training()
