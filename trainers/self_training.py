"""nnUNetTrainerSelfTraining: nnU-Net's own answer to unlabelled data, the pseudo-label loop its maintainers
suggest (train on the labelled cases, predict the unlabelled ones, retrain on labelled + pseudo-labelled),
as one `nnUNetv2_train` run with the same epoch budget as any other trainer:

* teacher (the first `stage1_fraction` of the epochs): nnU-Net on the labelled cases, poly learning rate over
  these epochs;
* pseudo-labels: at the first student epoch, nnU-Net's sliding window predicts every preprocessed unlabelled
  case; each becomes a training case with its hard prediction as label (stored next to the checkpoints, in
  `pseudo_labels/`, with foreground locations for nnU-Net's oversampling);
* student (the remaining epochs): a freshly initialised network (`student_from_scratch`; else the teacher goes
  on learning) trained with nnU-Net's loss on labelled and pseudo-labelled cases drawn uniformly from the pool
  (as nnU-Net would sample a training set holding both), poly learning rate restarted for these epochs.

Every iteration is one nnU-Net step, so the run counts num_epochs x num_iterations_per_epoch optimizer steps like
nnUNetTrainer; the pseudo-labelling time is part of the training's wall time. Only the student is saved as
`network_weights` at the end, so the stock predictor uses it.
"""
import os
import shutil

import torch
from batchgenerators.utilities.file_and_folder_operations import join

from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_mn.mn.lr_schedules import StagedPolyLR
from nnunetv2_mn.trainers.semisupervised import nnUNetTrainerSemiSupervised, sample_class_locations, unwrap

PSEUDO_LABEL_FOLDER = "pseudo_labels"
COMPLETE = "complete.txt"


class nnUNetTrainerSelfTraining(nnUNetTrainerSemiSupervised):
    #: the teacher's share of the epochs (the rest train the student)
    stage1_fraction: float = 0.5
    sampling = "uniform"
    #: the student starts from a fresh initialisation (the recipe: retrain); False: the teacher goes on learning
    student_from_scratch: bool = True
    #: foreground locations kept per class and pseudo-labelled case (for nnU-Net's foreground oversampling)
    pseudo_label_locations_per_class: int = 1000

    # ------------------------------------------------------------------ schedule
    def make_lr_scheduler(self, optimizer, initial_lr: float):
        """nnU-Net's poly decay for the teacher's epochs, restarted for the student's."""
        return StagedPolyLR(optimizer, initial_lr, self.unlabeled_start_epoch, self.num_epochs)

    @property
    def pseudo_label_folder(self) -> str:
        return join(self.output_folder, PSEUDO_LABEL_FOLDER)

    def pseudo_labels_ready(self) -> bool:
        return os.path.isfile(join(self.pseudo_label_folder, COMPLETE))

    def on_train_start(self):
        super().on_train_start()
        if self.current_epoch > self.unlabeled_start_epoch:  # resumed (--c) in the student's epochs
            if not self.pseudo_labels_ready():
                raise RuntimeError(f"Resuming the student of {self.__class__.__name__} needs the pseudo-labels of its "
                                   f"teacher in {self.pseudo_label_folder}, which are missing or incomplete. Start "
                                   f"the training again without --c.")
            self.use_pseudo_labels()

    def on_train_epoch_start(self):
        if self.current_epoch == self.unlabeled_start_epoch:
            if not self.pseudo_labels_ready():
                self.write_pseudo_labels()
            if self.student_from_scratch:
                self.reset_network()
            self.use_pseudo_labels()
        super().on_train_epoch_start()

    # ------------------------------------------------------------------ pseudo-labels
    def write_pseudo_labels(self) -> None:
        """Every unlabelled case with the teacher's hard prediction as its label, as an nnU-Net training case
        (written by the first process under DDP; the others wait for it)."""
        if self.local_rank == 0:
            self._write_pseudo_labels()
        if self.is_ddp:
            torch.distributed.barrier()

    def _write_pseudo_labels(self) -> None:
        folder = self.pseudo_label_folder
        if os.path.isdir(folder):
            shutil.rmtree(folder)  # an interrupted earlier attempt
        os.makedirs(folder)
        n_fg = 0
        for identifier, data, seg, properties in self.predict_unlabeled_cases():
            properties = dict(properties)
            properties["class_locations"] = sample_class_locations(
                seg, self.label_manager.foreground_labels, self.current_epoch, self.pseudo_label_locations_per_class)
            n_fg += int(seg.any())
            self.dataset_class.save_case(data, seg, properties, join(folder, identifier))
        with open(join(folder, COMPLETE), "w") as f:
            f.write(f"pseudo-labels of the teacher after epoch {self.current_epoch - 1}\n")
        self.print_to_log_file(f"Self-training: pseudo-labels of {len(self.unlabeled_ids)} unlabelled cases written "
                               f"to {folder} (foreground in {n_fg})")

    def use_pseudo_labels(self) -> None:
        """The unlabelled loader becomes nnU-Net's training loader over the pseudo-labelled cases."""
        rotation, dummy_2d, initial_patch_size, mirror_axes = \
            self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        dataset = self.dataset_class(self.pseudo_label_folder, self.unlabeled_ids)
        dl = nnUNetDataLoader(dataset, self.batch_size, initial_patch_size, self.configuration_manager.patch_size,
                              self.label_manager, oversample_foreground_percent=self.oversample_foreground_percent,
                              transforms=self._unlabeled_transforms(),
                              probabilistic_oversampling=self.probabilistic_oversampling)
        self.replace_unlabeled_dataloader(self.augmenter(dl))

    def reset_network(self) -> None:
        """A freshly initialised 3D network (nnU-Net's initialisation) and optimizer for the student."""
        fresh = self.build_network_architecture(self.plans_manager, self.configuration_manager,
                                                self.num_input_channels, self.label_manager.num_segmentation_heads,
                                                self.enable_deep_supervision)
        unwrap(self.network).load_state_dict(fresh.state_dict())
        self.optimizer, self.lr_scheduler = self.configure_optimizers()
        self.print_to_log_file("Self-training: the student starts from a fresh initialisation")

    # ------------------------------------------------------------------ one step
    def train_step(self, batch: dict) -> dict:
        """nnU-Net's training step on b_l labelled + b_u pseudo-labelled samples."""
        b_u = self.draw_b_u("3d")
        batch_u = self.next_unlabeled_batch(b_u)
        data_l, target_l, data_u = self.compose_batch(batch, batch_u, b_u)
        data, target = data_l, target_l
        if b_u:
            target_u = batch_u["target"]
            target_u = [t[:b_u].to(self.device) for t in target_u] if isinstance(target_u, list) \
                else target_u[:b_u].to(self.device)
            data = torch.cat((data_l, data_u))
            target = [torch.cat(pair) for pair in zip(target_l, target_u)] if isinstance(target_l, list) \
                else torch.cat((target_l, target_u))
        result = nnUNetTrainer.train_step(self, {"data": data, "target": target})
        return {**result, "b_u": b_u, "b_l": self.num_labeled(b_u)}


class nnUNetTrainerSelfTraining_ReplaceUnlabeled(nnUNetTrainerSelfTraining):
    """The student's b_u pseudo-labelled samples take the place of labelled ones (b_l = B - b_u) instead of coming
    on top of nnU-Net's whole labelled batch (the default)."""
    unlabeled_samples = "replace"


class nnUNetTrainerSelfTraining_StudentFromTeacher(nnUNetTrainerSelfTraining):
    """The student starts from the teacher's weights instead of a fresh initialisation: the teacher goes on learning
    from labelled and pseudo-labelled cases (its learning rate restarted), so the student's half of the budget need
    not learn from scratch."""
    student_from_scratch = False


class nnUNetTrainerSelfTraining_AddUnlabeled(nnUNetTrainerSelfTraining):
    """The default since the benchmark chose it; kept so that runs trained under this name resume and predict."""
    unlabeled_samples = "add"
