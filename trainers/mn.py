"""nnUNetTrainerMN: M&N (Yeung et al. 2025) inside nnU-Net.

A 2D model f pretrained on natural images (default: SegFormer-B2, ImageNet + ADE20K, LoRA) and
nnU-Net's 3D network g (from the plans, trained from scratch):

* stage 1 (first `stage1_fraction` of the epochs, Sec. 2.1): both train on labelled data only,
  L_l = CE + Dice (Eq. 1), the 3D model with nnU-Net's deep supervision, f on slices of the same patches;
* stage 2 (Sec. 2.2): co-training. 3D-student steps: teacher f (eval, no grad) gives soft pseudo-masks P
  by slice, stacked back to 3D (Eq. 2), student g learns from L_c = b_l/B L_l + b_u/B L_u (Eq. 3-6);
  2D-student steps: the roles swap (Eq. 7-9). Who learns when (`stage2_students`: the paper's alternation by
  epoch, by iteration, or both students in every iteration) is `nnunetv2_mn.mn.cotraining.CoTrainingSchedule`;
* b_u follows each student's learning rate (LRG sampling, Eq. 10-11) unless `sampling` says otherwise.

Only g is saved as `network_weights`, so the stock predictor, ensembling and find_best_configuration work
unchanged (Sec. 3.1: only the 3D model predicts). f's trainable weights (LoRA + new head) and its optimizer
go into the same checkpoint as extra keys.
"""
import copy
import os
from typing import Optional, Tuple

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss, get_tp_fp_fn_tn
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.utilities.collate_outputs import collate_outputs

from nnunetv2_mn.mn.agreement import hard_dice_agreement
from nnunetv2_mn.mn.config import CHECKPOINT_KEY, MNConfig, check_device, resume_mismatch_message
from nnunetv2_mn.mn.cotraining import CoTrainingSchedule
from nnunetv2_mn.mn.losses import SoftDiceKLLoss, combine_labeled_unlabeled, downsample_soft_targets
from nnunetv2_mn.mn.lr_schedules import StagedCosineLR, StagedPolyLR
from nnunetv2_mn.mn.slicing import (SlicePass, dice_view_weights, predict_slices, predict_views, sample_slice_index,
                                    take_slices, update_view_dice)
from nnunetv2_mn.models2d import build_branch2d
from nnunetv2_mn.settings import DEFAULT_2D_MODEL, PLANS_KEY_SLICE_AXIS, resolve_2d_source
from nnunetv2_mn.training.sampling import smoothed
from nnunetv2_mn.training.step_results import merge_step_results, to_host
from nnunetv2_mn.trainers.semisupervised import nnUNetTrainerSemiSupervised, sample_class_locations, unwrap



def as_list(output):
    return list(output) if isinstance(output, (list, tuple)) else [output]


class nnUNetTrainerMN(nnUNetTrainerSemiSupervised):
    # The M&N settings: class attributes (their defaults), gathered and validated once in `__init__` into
    # `self.mn_config` (`nnunetv2_mn.mn.config.MNConfig`: logged, saved in checkpoints, compared on --c).
    # ---- the 2D model f (Sec. 2.1); where its weights come from: see `branch2d_source_and_origin`
    branch2d_kind: str = "segformer"
    branch2d_source: Optional[str] = DEFAULT_2D_MODEL
    branch2d_config: Optional[dict] = None  # AutoConfig.for_model(**dict) instead (random init; tests, ablations)
    branch2d_kwargs: dict = {}
    branch2d_finetune: str = "lora"  # 'lora' | 'decoder' | 'whole' (Table 4)
    slice_axis: int = 0  # spatial axis of nnU-Net's patch the 2D model slices along (plans: mn_slice_axis)
    #: several axes = a multi-view (tri-planar: (0, 1, 2)) 2D model: one shared f slices along each; its pseudo-mask
    #: is the mean of the views' softmax probabilities, the 2D student learns along every axis (losses averaged).
    #: None = (slice_axis,), one view
    slice_axes: Optional[Tuple[int, ...]] = None
    #: how the views' probabilities are fused into the pseudo-mask: 'mean' (equal weights) or 'val_dice' (each view
    #: weighted by its smoothed validation pseudo Dice, measured per axis in nnU-Net's validation; equal until measured)
    view_weighting: str = "mean"
    teacher_slice_chunk: int = 64  # slices per forward pass of the 2D teacher (bounds memory)
    #: share of each patch's slices the 2D student learns from per step (stage 1 and 2D epochs; a fresh random
    #: subset each step). 1.0 = every slice, as the paper; smaller is cheaper (docs/benchmarks/cost.md)
    student2d_slice_fraction: float = 1.0
    # ---- how the 2D model's passes run (issue #12, docs/benchmarks/cost.md: cost only, see `slice_pass`)
    #: the 2D teacher's passes with LoRA merged into the base weights (same pseudo-masks up to float rounding)
    teacher_merge_lora: bool = True
    #: the 2D model and its slices in channels-last memory format (faster convolutions; set in `initialize`)
    channels_last_2d: bool = True
    #: bf16 autocast of the 2D model, CPU training only (changes the numerics: opt-in; on a GPU a ValueError)
    cpu_bf16_2d: bool = False
    # ---- schedule (Sec. 2.2, 3.1: 500 of 4000 epochs labelled-only); see nnunetv2_mn.mn.cotraining
    stage1_fraction: float = 0.125
    #: stage 2: 'pair' = both students learn in every iteration (the 3D network gets nnU-Net's update budget),
    #: 'epochs' = alternate by epoch (the paper), 'iterations' = alternate by iteration
    stage2_students: str = "pair"
    first_student: str = "3d"  # the paper's odd (first) stage-2 epochs train the 3D model
    co_training: bool = True
    sampling = "lrg"
    # ---- unlabelled crops centred on the 3D model's pseudo-foreground (Sec. 3.1: 50 %, masks refreshed 5 times;
    #      0 = uniform crops). Hard pseudo-masks are predicted at the start of stage 2 and then every
    #      `pseudo_mask_refresh_fraction` of the epochs; `pseudo_mask_locations_per_class` voxels kept per class.
    unlabeled_foreground_bias: float = 0.0
    pseudo_mask_refresh_fraction: float = 0.125
    pseudo_mask_locations_per_class: int = 1000
    # ---- losses (Eq. 1, 4): the labelled loss is nnU-Net's Dice + CE with weights 1/1
    weight_kl: float = 1.0
    weight_dice_unlabeled: float = 1.0
    # ---- optimisers: 'nnunet' = nnU-Net's SGD 1e-2 + poly for g, AdamW + poly for f;
    #      'paper' = AdamW for both (1e-4 / 1e-3), warm-up + cosine per stage (Sec. 3.1)
    optimizers: str = "nnunet"
    #: restart both learning rates at stage 2 (poly per stage with 'nnunet'; the paper's schedule always restarts)
    stage2_lr_restart: bool = False
    initial_lr_2d: float = 1e-3
    initial_lr_3d_paper: float = 1e-4
    weight_decay_adamw: float = 0.01
    warmup_fraction: float = 50 / 4000

    log_panels = {
        **nnUNetTrainerSemiSupervised.log_panels,
        "M&N losses per model: L_c (Eq. 5) of the 3D and of the 2D model, its L_l (Eq. 1) and L_u (Eq. 4)": [
            "loss_3d", "loss_2d", "loss_l_3d", "loss_u_3d", "loss_l_2d", "loss_u_2d"],
        "M&N validation pseudo Dice, teacher-student agreement on unlabelled patches": ["dice_3d", "dice_2d",
                                                                                          "agreement"],
        "M&N schedule: stage, which model learns, 2D learning rate": ["stage", "trains_3d", "trains_2d", "lr_2d"],
    }
    step_log_keys = ("loss_3d", "loss_2d", "loss_l_3d", "loss_u_3d", "loss_l_2d", "loss_u_2d", "agreement")

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        self.check_pass_settings(torch.device(device))  # before anything else: nothing to set up on a wrong device
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.slice_axis = int(self.configuration_manager.configuration.get(PLANS_KEY_SLICE_AXIS, self.slice_axis))
        #: every M&N setting, validated once (a bad variant fails here, before anything is built)
        self.mn_config = MNConfig.from_trainer(self)
        self.slice_axes = self.mn_config.slice_axes
        if self.optimizers == "paper":
            self.initial_lr = self.initial_lr_3d_paper
        #: smoothed validation pseudo Dice of each view (slice axis) of the 2D model; NaN until measured
        self.view_dice = [float("nan")] * len(self.slice_axes)
        self._view_logits = None  # collects the per-view logits of a fused pass while a validation step asks for them
        self.branch2d = self.optimizer_2d = self.lr_scheduler_2d = None
        self.grad_scaler_2d = copy.deepcopy(self.grad_scaler)  # a second, independent AMP scaler (None on CPU)
        self.phase = "both"
        self.iteration = 0  # within the epoch
        self.pseudo_class_locations = None  # identifier -> {class: (n, 4) int16 voxel locations}

    # ------------------------------------------------------------------ set-up
    @property
    def cotraining(self) -> CoTrainingSchedule:
        """Who learns when (built from the current attributes: a benchmark or a variant may change num_epochs)."""
        return CoTrainingSchedule(self.num_epochs, self.stage1_fraction, self.stage2_students, self.first_student,
                                  self.co_training, self.pseudo_mask_refresh_fraction)

    @property
    def unlabeled_start_epoch(self) -> int:
        return self.cotraining.stage2_start

    def check_pass_settings(self, device: torch.device) -> None:
        """`cpu_bf16_2d` is for CPU training only (`nnunetv2_mn.mn.config.check_device`)."""
        check_device(self.cpu_bf16_2d, device.type, self.__class__.__name__)

    def slice_pass(self, teacher: bool) -> SlicePass:
        """How a pass of the 2D model runs (`SlicePass`), from `teacher_merge_lora`, `channels_last_2d` and
        `cpu_bf16_2d`. LoRA is merged only for a teacher's pass (f in eval mode, no gradients) and only where f has
        adapters; a student's pass always runs through the unmerged adapters, which is what it learns."""
        has_lora = bool(getattr(unwrap(self.branch2d), "lora_targets", None))
        return SlicePass(merge_lora=teacher and self.teacher_merge_lora and has_lora,
                         channels_last=self.channels_last_2d, cpu_bf16=self.cpu_bf16_2d)

    def branch2d_source_and_origin(self) -> Tuple[Optional[str], str]:
        """Where the 2D model's weights come from (`nnunetv2_mn.settings.resolve_2d_source`: environment, plans key
        of this configuration, then `branch2d_source`)."""
        source, origin = resolve_2d_source(self.branch2d_kind, self.branch2d_source,
                                           self.configuration_manager.configuration, owner=self.__class__.__name__)
        if origin.startswith("plans key"):
            origin += f" of configuration {self.configuration_name}"
        return source, origin

    def build_branch2d(self):
        source, origin = self.branch2d_source_and_origin()
        config = None
        if self.branch2d_config is not None:
            from transformers import AutoConfig
            config = AutoConfig.for_model(**self.branch2d_config)
            source, origin = None, f"{self.__class__.__name__}.branch2d_config (random init, no pretrained weights)"
        branch = build_branch2d(self.branch2d_kind, num_classes=self.label_manager.num_segmentation_heads,
                                finetune=self.branch2d_finetune, source=source, config=config,
                                **self.branch2d_kwargs)
        where = f"weights from {source} ({origin})" if source is not None else f"chosen by {origin}"
        self.print_to_log_file(f"M&N 2D model: {branch.describe()}; {where}; slices along "
                               f"axes {tuple(self.slice_axes)} of the patch {self.configuration_manager.patch_size}")
        return branch

    def initialize(self):
        if self.label_manager.has_regions:
            raise NotImplementedError("nnUNetTrainerMN supports softmax (label) training only, not region-based "
                                      "training; use a dataset.json without 'regions_class_order'.")
        super().initialize()
        self.branch2d = self.build_branch2d().to(self.device)
        if self.channels_last_2d:  # before DDP wraps it; the slices follow in `forward_2d` (SlicePass)
            self.branch2d = self.branch2d.to(memory_format=torch.channels_last)
        teacher = self.slice_pass(teacher=True)
        levers = [what for on, what in ((teacher.merge_lora, "the teacher's LoRA merged"),
                                        (teacher.channels_last, "channels-last"),
                                        (teacher.cpu_bf16, "bf16 autocast (CPU)")) if on]
        self.print_to_log_file(f"M&N 2D model's passes: {', '.join(levers) or 'plain fp32'}")
        if self.is_ddp:
            self.branch2d = DDP(self.branch2d, device_ids=[self.local_rank])
        self.optimizer_2d, self.lr_scheduler_2d = self.configure_optimizers_2d()
        self.loss_2d = DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": self.is_ddp}, {},
                                      weight_ce=1, weight_dice=1, ignore_label=self.label_manager.ignore_label,
                                      dice_class=MemoryEfficientSoftDiceLoss)
        self.loss_u_2d = SoftDiceKLLoss(self.weight_kl, self.weight_dice_unlabeled)
        weights = self.loss.weight_factors if self.enable_deep_supervision else (1.0,)
        self.loss_u_3d = DeepSupervisionWrapper(
            SoftDiceKLLoss(self.weight_kl, self.weight_dice_unlabeled, self.configuration_manager.batch_dice), weights)

    def make_lr_scheduler(self, optimizer, initial_lr: float):
        """Both models' schedule: nnU-Net's poly (per stage with `stage2_lr_restart`) or the paper's warm-up +
        cosine per stage."""
        if self.optimizers == "paper":
            return StagedCosineLR(optimizer, initial_lr, self.unlabeled_start_epoch, self.num_epochs,
                                  int(round(self.warmup_fraction * self.num_epochs)))
        if self.stage2_lr_restart:
            return StagedPolyLR(optimizer, initial_lr, self.unlabeled_start_epoch, self.num_epochs)
        return PolyLRScheduler(optimizer, initial_lr, self.num_epochs)

    def configure_optimizers(self):
        if self.optimizers == "nnunet":
            return super().configure_optimizers()
        optimizer = torch.optim.AdamW(self.network.parameters(), lr=self.initial_lr,
                                      weight_decay=self.weight_decay_adamw)
        return optimizer, self.make_lr_scheduler(optimizer, self.initial_lr)

    def configure_optimizers_2d(self):
        params = [p for p in self.branch2d.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.initial_lr_2d, weight_decay=self.weight_decay_adamw)
        return optimizer, self.make_lr_scheduler(optimizer, self.initial_lr_2d)

    # ------------------------------------------------------------------ epoch bookkeeping
    def student_optimizers(self):
        return {**super().student_optimizers(), "2d": (self.optimizer_2d, self.initial_lr_2d)}

    def teacher_dice(self, student: str) -> float:
        """The teacher's validation pseudo Dice, smoothed as nnU-Net smooths its own: the 2D model's (`dice_2d`)
        for the 3D student, the 3D network's (`dice_3d`) for the 2D student."""
        key = "dice_2d" if student == "3d" else "dice_3d"
        return smoothed(self.logger.local_logger.my_fantastic_logging.get(key, [])[:self.current_epoch])

    def unlabeled_students(self):
        return ("3d", "2d") if self.co_training else ("3d",)

    def epoch_phase(self) -> str:
        """'both' (stage 1), '3d' / '2d' (one student this epoch), 'pair' or 'alternate' (both students)."""
        s, epoch = self.cotraining, self.current_epoch
        if s.stage(epoch) == 1:
            return "both"
        learners = [m for m in ("3d", "2d") if s.learns(m, epoch)]
        if len(learners) == 1:
            return learners[0]
        return "pair" if s.stage2_students == "pair" else "alternate"

    def on_train_epoch_start(self):
        self.phase, self.iteration = self.epoch_phase(), 0
        if self.pseudo_mask_refresh_due():
            self.use_pseudo_class_locations(self.compute_pseudo_class_locations())
        self.lr_scheduler_2d.step(self.current_epoch)
        super().on_train_epoch_start()
        s, epoch = self.cotraining, self.current_epoch
        for key, value in (("stage", s.stage(epoch)), ("trains_3d", int(s.learns("3d", epoch))),
                           ("trains_2d", int(s.learns("2d", epoch))), ("lr_2d", self.optimizer_2d.param_groups[0]["lr"])):
            self.logger.log(key, value, self.current_epoch)
        who = {"both": "3D and 2D, labelled data only", "3d": "3D (teacher: 2D)", "2d": "2D (teacher: 3D)",
               "pair": "3D (teacher: 2D), then 2D (teacher: 3D), in every iteration",
               "alternate": "3D and 2D in alternate iterations"}
        self.print_to_log_file(f"M&N stage {s.stage(epoch)}, student: {who[self.phase]}")

    # ------------------------------------------------------------------ pseudo-foreground crops (Sec. 3.1)
    def pseudo_mask_refresh_due(self) -> bool:
        return self.unlabeled_foreground_bias > 0 and self.cotraining.refresh_due(
            self.current_epoch, have_masks=self.pseudo_class_locations is not None)

    def compute_pseudo_class_locations(self) -> dict:
        """Hard pseudo-masks of every unlabelled case from the 3D model (`predict_unlabeled_cases`) -> foreground
        locations per class, as nnU-Net samples them."""
        locations = {identifier: sample_class_locations(seg, self.label_manager.foreground_labels, self.current_epoch,
                                                        self.pseudo_mask_locations_per_class)
                     for identifier, _, seg, _ in self.predict_unlabeled_cases()}
        n_fg = sum(any(len(v) for v in loc.values()) for loc in locations.values())
        self.print_to_log_file(f"Pseudo-masks of the 3D model: foreground in {n_fg} of {len(locations)} unlabelled "
                               f"cases; {self.unlabeled_foreground_bias:.0%} of unlabelled crops centred on it")
        return locations

    def use_pseudo_class_locations(self, locations: dict) -> None:
        self.pseudo_class_locations = locations
        self.replace_unlabeled_dataloader(self.get_unlabeled_dataloader(
            self.unlabeled_ids, locations, oversample_foreground_percent=self.unlabeled_foreground_bias))

    def on_train_start(self):
        super().on_train_start()
        self.print_to_log_file(self.mn_config.describe(self.__class__.__name__))
        if self.pseudo_class_locations is not None:  # restored from a checkpoint (--c)
            self.use_pseudo_class_locations(self.pseudo_class_locations)

    def on_validation_epoch_start(self):
        super().on_validation_epoch_start()
        self.branch2d.eval()

    # ------------------------------------------------------------------ training steps
    def forward_2d(self, x: torch.Tensor, teacher: bool = False, axis: Optional[int] = None) -> torch.Tensor:
        """Logits of f on every slice of a 3D batch along `axis`, stacked back to (B, K, X, Y, Z) (Eq. 2 / 8).
        Without `axis`, f's prediction over `slice_axes`: one view's logits, or for several views the log of their
        fused probabilities (`predict_views`), so that a softmax gives the multi-view pseudo-mask P. A teacher's pass
        (`teacher=True`) runs in chunks of `teacher_slice_chunk` slices; both run as `slice_pass` says."""
        chunk = self.teacher_slice_chunk if teacher else 0
        settings = self.slice_pass(teacher)
        if axis is not None or len(self.slice_axes) == 1:
            return predict_slices(self.branch2d, x, self.slice_axes[0] if axis is None else axis, chunk, settings)
        fused, views = predict_views(self.branch2d, x, self.slice_axes, chunk, self.view_fusion_weights(), settings)
        if self._view_logits is not None:
            self._view_logits.extend(v.detach() for v in views)
        return torch.log(fused.clamp_min(torch.finfo(fused.dtype).tiny))

    def view_fusion_weights(self) -> Optional[Tuple[float, ...]]:
        """The views' weights in the fused pseudo-mask: None (= equal) for 'mean' and until every view's validation
        Dice has been measured; for 'val_dice' proportional to each view's smoothed validation pseudo Dice."""
        return dice_view_weights(self.view_dice) if self.view_weighting == "val_dice" else None

    def student_slices(self, x: torch.Tensor, axis: int = 0) -> Optional[torch.Tensor]:
        """Slice positions along `axis` the 2D student learns from in this step (`student2d_slice_fraction`;
        None = all)."""
        return sample_slice_index(x.shape[2 + axis], self.student2d_slice_fraction, x.device)

    def student_views(self, x: torch.Tensor):
        """(axis, slice positions) of each view the 2D student learns from in this step: every one of `slice_axes`,
        `student2d_slice_fraction` of the slices per view."""
        return [(axis, self.student_slices(x, axis)) for axis in self.slice_axes]

    def _labeled_loss_3d(self, outputs, target_l):
        return self.loss(outputs, target_l) if self.enable_deep_supervision else self.loss(outputs[0], target_l)

    @staticmethod
    def _full_res(target):
        return target[0] if isinstance(target, list) else target

    def train_step(self, batch: dict) -> dict:
        """One iteration: stage 1 on the labelled batch, or the iteration's students (`cotraining.students`), each
        with its own batch composition from the same labelled and unlabelled batches. The steps' values are read
        from the device once, at the end of the iteration (`to_host`)."""
        students = self.cotraining.students(self.current_epoch, self.iteration)
        self.iteration += 1
        if self.cotraining.stage(self.current_epoch) == 1:
            result = to_host(self.stage1_step(*self.compose_batch(batch, None, 0)[:2]))[0]
            return {**result, "b_u": 0, "b_l": self.batch_size}
        b_u = {m: self.draw_b_u(m) for m in students}
        batch_u = self.next_unlabeled_batch(*b_u.values())
        results = [{**getattr(self, f"train_{m}_student")(*self.compose_batch(batch, batch_u, b_u[m])),
                    "b_u": b_u[m], "b_l": self.num_labeled(b_u[m])} for m in students]
        return merge_step_results(to_host(*results))

    def stage1_step(self, data_l, target_l) -> dict:
        """Eq. (1) for both models on the same labelled batch, each with its own optimizer."""
        self.network.train()
        self.branch2d.train()
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss_3d = self._labeled_loss_3d(as_list(self.network(data_l)), target_l)
        self.backward_and_step(loss_3d, self.optimizer, self.network, self.grad_scaler)
        self.optimizer_2d.zero_grad(set_to_none=True)
        target_2d = self._full_res(target_l)
        with self.autocast():  # Eq. 1 per view, averaged over `slice_axes`
            loss_2d = torch.stack([self.loss_2d(self.forward_2d(take_slices(data_l, index, axis), axis=axis),
                                                take_slices(target_2d, index, axis))
                                   for axis, index in self.student_views(data_l)]).mean()
        self.backward_and_step(loss_2d, self.optimizer_2d, self.branch2d, self.grad_scaler_2d)
        loss_3d, loss_2d = loss_3d.detach(), loss_2d.detach()  # read by the host in train_step (`to_host`)
        return {"loss": loss_3d, "loss_3d": loss_3d, "loss_2d": loss_2d, "loss_l_3d": loss_3d, "loss_l_2d": loss_2d}

    def train_3d_student(self, data_l, target_l, data_u) -> dict:
        """Eq. (2)-(6): soft pseudo-masks P from the 2D teacher, L_c for the 3D student."""
        b_l, b_u = data_l.shape[0], 0 if data_u is None else data_u.shape[0]
        self.network.train()
        self.branch2d.eval()
        if b_u:
            with torch.no_grad(), self.autocast():
                pseudo_masks = torch.softmax(self.forward_2d(data_u, teacher=True).float(), 1)
        x = data_l if not b_u else (data_u if not b_l else torch.cat((data_l, data_u)))
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            outputs = as_list(self.network(x))
            loss_l = self._labeled_loss_3d([o[:b_l] for o in outputs], target_l) if b_l else None
            loss_u = None
            if b_u:
                student_u = [o[b_l:] for o in outputs]
                loss_u = self.loss_u_3d(student_u, downsample_soft_targets(pseudo_masks, [o.shape[2:] for o in student_u]))
            loss = combine_labeled_unlabeled(loss_l, loss_u, b_l, b_u)
        self.backward_and_step(loss, self.optimizer, self.network, self.grad_scaler)
        return {"loss": loss.detach(), "loss_3d": loss.detach(), "loss_l_3d": loss_l.detach() if b_l else np.nan,
                "loss_u_3d": loss_u.detach() if b_u else np.nan,
                "agreement": hard_dice_agreement(outputs[0][b_l:], pseudo_masks) if b_u else np.nan}

    def train_2d_student(self, data_l, target_l, data_u) -> dict:
        """Eq. (7)-(9): soft pseudo-masks P from the 3D teacher, L_c for the 2D student (slice-wise; with several
        `slice_axes` along each axis, L_c and its parts averaged over the views)."""
        b_l, b_u = data_l.shape[0], 0 if data_u is None else data_u.shape[0]
        x = data_l if not b_u else (data_u if not b_l else torch.cat((data_l, data_u)))
        self.branch2d.train()
        self.network.eval()
        if b_u:  # the 3D teacher sees the whole patch; the student learns from the sampled slices
            with torch.no_grad(), self.autocast():
                teacher_probs = torch.softmax(as_list(self.network(data_u))[0].float(), 1)
        target = self._full_res(target_l)
        self.optimizer_2d.zero_grad(set_to_none=True)
        views = []  # per view: L_c, L_l, L_u, (student logits, P) on the unlabelled slices
        with self.autocast():
            for axis, index in self.student_views(x):
                logits = self.forward_2d(take_slices(x, index, axis), axis=axis)
                pseudo_masks = take_slices(teacher_probs, index, axis) if b_u else None
                loss_l = self.loss_2d(logits[:b_l], take_slices(target, index, axis)) if b_l else None
                loss_u = self.loss_u_2d(logits[b_l:], pseudo_masks) if b_u else None
                views.append((combine_labeled_unlabeled(loss_l, loss_u, b_l, b_u), loss_l, loss_u,
                              (logits[b_l:].detach(), pseudo_masks)))
            loss = torch.stack([v[0] for v in views]).mean()
        self.backward_and_step(loss, self.optimizer_2d, self.branch2d, self.grad_scaler_2d)

        def view_mean(values):  # on the device: NaN only when every view's value is NaN
            return torch.nanmean(torch.stack([v.detach().float() for v in values]))
        # nnU-Net's train_losses is the 3D network's: NaN in a step where only the 2D model learns
        return {"loss": np.float32(np.nan), "loss_2d": loss.detach(),
                "loss_l_2d": view_mean([v[1] for v in views]) if b_l else np.nan,
                "loss_u_2d": view_mean([v[2] for v in views]) if b_u else np.nan,
                "agreement": view_mean([hard_dice_agreement(*v[3]) for v in views]) if b_u else np.nan}

    # ------------------------------------------------------------------ validation: 3D (nnU-Net) and 2D pseudo Dice
    def _fg_tp_fp_fn(self, logits: torch.Tensor, target: torch.Tensor):
        """Foreground tp, fp, fn per class of the argmax of `logits` against nnU-Net's full-resolution target."""
        seg = logits.argmax(1, keepdim=True)
        onehot = torch.zeros((seg.shape[0], self.label_manager.num_segmentation_heads, *seg.shape[2:]),
                             device=seg.device, dtype=torch.float32).scatter_(1, seg, 1)
        mask = None
        if self.label_manager.has_ignore_label:
            mask = (target != self.label_manager.ignore_label).float()
            target = torch.where(target == self.label_manager.ignore_label, 0, target)
        tp, fp, fn, _ = get_tp_fp_fn_tn(onehot, target, axes=[0] + list(range(2, onehot.ndim)), mask=mask)
        return tp[1:].cpu().numpy(), fp[1:].cpu().numpy(), fn[1:].cpu().numpy()

    def validation_step(self, batch: dict) -> dict:
        """nnU-Net's validation of the 3D network, plus the 2D model's pseudo Dice counts: of its (fused) prediction,
        and with several views of each view (slice axis) alone, for `view_dice`."""
        data = batch["data"].to(self.device, non_blocking=True)
        target = self._full_res(batch["target"]).to(self.device, non_blocking=True)
        self._view_logits = [] if len(self.slice_axes) > 1 else None
        try:
            with self.autocast():
                logits = self.forward_2d(data, teacher=True)
            views = self._view_logits
        finally:
            self._view_logits = None
        tp, fp, fn = self._fg_tp_fp_fn(logits, target)
        result = super().validation_step(batch)
        result.update({"tp_2d": tp, "fp_2d": fp, "fn_2d": fn})
        if views:
            per_view = [self._fg_tp_fp_fn(v, target) for v in views]  # (V, 3, classes)
            result["tp_fp_fn_2d_views"] = np.stack([np.stack(v) for v in per_view])
        return result

    @staticmethod
    def _mean_fg_dice(tp, fp, fn) -> float:
        return float(np.nanmean([2 * i / (2 * i + j + k) if (2 * i + j + k) > 0 else np.nan
                                 for i, j, k in zip(tp, fp, fn)]))

    def on_validation_epoch_end(self, val_outputs):
        super().on_validation_epoch_end(val_outputs)
        c = collate_outputs(val_outputs)
        tp, fp, fn = (np.sum(c[k], 0) for k in ("tp_2d", "fp_2d", "fn_2d"))
        self.logger.log("dice_2d", self._mean_fg_dice(tp, fp, fn), self.current_epoch)
        self.logger.log("dice_3d", float(self.logger.get_value("mean_fg_dice", step=-1)), self.current_epoch)
        if "tp_fp_fn_2d_views" in c:
            self.update_view_dice(np.sum(c["tp_fp_fn_2d_views"], 0))

    def update_view_dice(self, counts: np.ndarray) -> None:
        """Fold this epoch's per-view validation counts (views, tp/fp/fn, classes) into `view_dice` (EMA as nnU-Net's
        pseudo Dice) and log each view's Dice and its weight in the next pseudo-masks."""
        if self.is_ddp:
            import torch.distributed as dist
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, counts)
            counts = np.sum(gathered, 0)
        measured = [self._mean_fg_dice(*view) for view in counts]
        self.view_dice = update_view_dice(self.view_dice, measured)
        weights = self.view_fusion_weights() or (1.0 / len(self.slice_axes),) * len(self.slice_axes)
        self.print_to_log_file(
            "M&N 2D views (axes " + ", ".join(map(str, self.slice_axes)) + "): validation pseudo Dice "
            + ", ".join(f"{d:.4f}" for d in measured) + "; smoothed " + ", ".join(f"{d:.4f}" for d in self.view_dice)
            + f"; pseudo-mask weights ({self.view_weighting}) " + ", ".join(f"{w:.3f}" for w in weights))

    # ------------------------------------------------------------------ the 2D model kept for 2D+3D prediction
    def on_train_end(self):
        super().on_train_end()
        if self.local_rank == 0:
            self.save_model2d()

    def save_model2d(self) -> None:
        """Keep the fine-tuned 2D model in `fold_x/model2d/` for `nnUNetv2_mn_predict_ensemble`
        (`nnunetv2_mn.inference.ensemble`)."""
        from nnunetv2_mn.inference.ensemble import MODEL2D_FOLDER, save_model2d

        branch = unwrap(self.branch2d)
        source = None if self.branch2d_config is not None else self.branch2d_source_and_origin()[0]
        save_model2d(branch, os.path.join(self.output_folder, MODEL2D_FOLDER), {
            "kind": self.branch2d_kind, "finetune": self.branch2d_finetune, "source": source,
            "config": self.branch2d_config, "kwargs": self.branch2d_kwargs,
            "num_classes": self.label_manager.num_segmentation_heads, "slice_axes": self.slice_axes,
            "view_weights": self.view_fusion_weights(),
            "trainer": self.__class__.__name__, "epochs_trained": self.current_epoch})
        self.print_to_log_file(f"2D model kept in {os.path.join(self.output_folder, MODEL2D_FOLDER)} "
                               f"(nnUNetv2_mn_predict_ensemble)")

    # ------------------------------------------------------------------ checkpoints
    def extra_checkpoint_state(self) -> dict:
        branch = unwrap(self.branch2d)
        if any(layer.merged for layer in branch.lora_layers()):  # only inside a teacher's pass (`teacher_mode`)
            raise RuntimeError("A checkpoint cannot be written while the 2D model's LoRA adapters are merged into "
                               "its base weights (inside a teacher's pass): it would store the merged weights.")
        # a randomly initialised frozen base cannot be rebuilt from anywhere: then store the whole model
        full = not branch.pretrained
        return {**super().extra_checkpoint_state(),
                "mn_branch2d": branch.state_dict() if full else branch.trainable_state_dict(),
                "mn_branch2d_full": full,
                "mn_branch2d_kind": self.branch2d_kind, "mn_branch2d_finetune": self.branch2d_finetune,
                "mn_optimizer2d_state": self.optimizer_2d.state_dict(),
                "mn_grad_scaler2d_state": self.grad_scaler_2d.state_dict() if self.grad_scaler_2d else None,
                "mn_phase": self.phase, "mn_pseudo_class_locations": self.pseudo_class_locations,
                "mn_view_dice": [float(d) for d in self.view_dice], CHECKPOINT_KEY: self.mn_config.as_dict()}

    def check_checkpoint_config(self, checkpoint: dict) -> None:
        """--c continues a run only with the settings it was started with: a RuntimeError naming each setting that
        differs (old and new value). A checkpoint written before the configuration was saved is accepted (logged)."""
        saved = checkpoint.get(CHECKPOINT_KEY)
        if saved is None:
            self.print_to_log_file("The checkpoint holds no M&N configuration (written by an older version): resuming "
                                   "with this trainer's settings, which could not be compared with the run's.")
            return
        differences = self.mn_config.differences(saved)
        if differences:
            raise RuntimeError(resume_mismatch_message(self.__class__.__name__, checkpoint.get("trainer_name"),
                                                       differences))
        missing = self.mn_config.missing_in(saved)
        if missing:
            self.print_to_log_file(f"The checkpoint's M&N configuration lacks {', '.join(missing)} (written by an "
                                   f"older version): those settings are taken from this trainer.")

    def load_extra_checkpoint_state(self, checkpoint: dict) -> None:
        super().load_extra_checkpoint_state(checkpoint)
        if "mn_branch2d" not in checkpoint:
            raise RuntimeError("This checkpoint holds no M&N 2D model (was it written by another trainer?).")
        self.check_checkpoint_config(checkpoint)
        saved = (checkpoint["mn_branch2d_kind"], checkpoint["mn_branch2d_finetune"])
        if saved != (self.branch2d_kind, self.branch2d_finetune):
            raise RuntimeError(f"Checkpoint 2D model {saved} differs from this trainer's "
                               f"{(self.branch2d_kind, self.branch2d_finetune)}.")
        if checkpoint.get("mn_branch2d_full", False):
            unwrap(self.branch2d).load_state_dict(checkpoint["mn_branch2d"])
        else:
            unwrap(self.branch2d).load_trainable_state_dict(checkpoint["mn_branch2d"])
        self.optimizer_2d.load_state_dict(checkpoint["mn_optimizer2d_state"])
        if self.grad_scaler_2d is not None and checkpoint.get("mn_grad_scaler2d_state") is not None:
            self.grad_scaler_2d.load_state_dict(checkpoint["mn_grad_scaler2d_state"])
        self.phase = checkpoint.get("mn_phase", self.phase)
        from nnunetv2_mn.training.checkpointing import arrays_from_tensors  # saved as tensors (weights_only)
        self.pseudo_class_locations = arrays_from_tensors(checkpoint.get("mn_pseudo_class_locations"))
        view_dice = checkpoint.get("mn_view_dice")  # absent in checkpoints written before view weighting
        if view_dice is not None and len(view_dice) == len(self.slice_axes):
            self.view_dice = [float(d) for d in view_dice]
