"""Data loading for unlabelled cases: nnU-Net's loader and transforms, with no labels used."""
from typing import List, Type

from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetBaseDataset, nnUNetDatasetBlosc2


class UnlabeledDataset:
    """nnU-Net dataset over `{data_identifier}_unlabeled/`, of the same storage class as the labelled
    cases (blosc2 or numpy). Cases preprocessed without a segmentation carry no `class_locations`; crops
    are then drawn uniformly at random."""

    def __init__(self, folder: str, identifiers: List[str] = None, dataset_class: Type[nnUNetBaseDataset] = None):
        dataset_class = dataset_class or nnUNetDatasetBlosc2
        self._dataset = dataset_class(folder, identifiers)
        self.identifiers = self._dataset.identifiers

    def load_case(self, identifier):
        data, seg, seg_prev, properties = self._dataset.load_case(identifier)
        properties.setdefault("class_locations", None)
        return data, seg, seg_prev, properties

    def __getitem__(self, identifier):
        return self.load_case(identifier)

    def __len__(self):
        return len(self.identifiers)


class UnlabeledDataLoader(nnUNetDataLoader):
    """`nnUNetDataLoader` with no foreground oversampling and no ignore-label crops: the `_seg` of an
    unlabelled case is only its nonzero mask and must never steer sampling nor be used as a target."""

    def __init__(self, data: UnlabeledDataset, batch_size, patch_size, final_patch_size, label_manager,
                 transforms=None):
        super().__init__(data, batch_size, patch_size, final_patch_size, label_manager,
                         oversample_foreground_percent=0.0, transforms=transforms)
        self.has_ignore = False
