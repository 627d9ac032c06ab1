"""Data loading for unlabelled cases: nnU-Net's loader and transforms, with no labels used."""
from typing import Dict, List, Optional, Type

from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetBaseDataset, nnUNetDatasetBlosc2


class UnlabeledDataset:
    """nnU-Net dataset over `{data_identifier}_unlabeled/`, of the same storage class as the labelled
    cases (blosc2 or numpy). Unlabelled cases have no labels, hence no `class_locations` of their own:
    `class_locations` maps an identifier to foreground locations taken from pseudo-masks (M&N Sec. 3.1);
    a case without them is cropped uniformly at random."""

    def __init__(self, folder: str, identifiers: List[str] = None, dataset_class: Type[nnUNetBaseDataset] = None,
                 class_locations: Optional[Dict[str, dict]] = None):
        dataset_class = dataset_class or nnUNetDatasetBlosc2
        self._dataset = dataset_class(folder, identifiers)
        self.identifiers = self._dataset.identifiers
        self.class_locations = class_locations or {}

    def load_case(self, identifier):
        data, seg, seg_prev, properties = self._dataset.load_case(identifier)
        properties["class_locations"] = self.class_locations.get(identifier, {})
        return data, seg, seg_prev, properties

    def __getitem__(self, identifier):
        return self.load_case(identifier)

    def __len__(self):
        return len(self.identifiers)


class UnlabeledDataLoader(nnUNetDataLoader):
    """`nnUNetDataLoader` for unlabelled cases: the `_seg` of an unlabelled case is only its nonzero mask and
    never steers sampling nor serves as a target. Foreground oversampling (default off) uses the dataset's
    pseudo-mask locations and is probabilistic per sample, because only the first b_u samples of a batch
    are used."""

    def __init__(self, data: UnlabeledDataset, batch_size, patch_size, final_patch_size, label_manager,
                 transforms=None, oversample_foreground_percent: float = 0.0):
        super().__init__(data, batch_size, patch_size, final_patch_size, label_manager,
                         oversample_foreground_percent=oversample_foreground_percent, transforms=transforms,
                         probabilistic_oversampling=True)
        self.has_ignore = False
