"""Voxel uncertainty at predict time: nnU-Net's prediction plus, per case, the entropy of the mean softmax over the
test-time mirrorings (and the folds), normalised by ln C to [0, 1], written with the image's geometry, and a per-case
summary to sort cases for review.

nnU-Net's own predictor does all the work: the network is wrapped so that it returns its logits followed by their
softmax, and nnU-Net's mirroring and Gaussian sliding window then average both (review 004: test-time augmentation
as an estimate of aleatoric uncertainty). The logits channels go through exactly the operations of the stock
predictor, so the segmentation is the one `nnUNetv2_predict` writes. The entropy map, on the network's grid, is
brought back to the image like nnU-Net's probabilities (`resampling_fn_probabilities`, cropping reverted with 0
outside the crop, transpose reverted) and written with the image's spacing, origin and direction.

Output: `<out>/uncertainty/<case><file_ending>` (a sub-folder, so nnU-Net's and our evaluation tools, which read
the files of `<out>`, see only the segmentations), `<out>/uncertainty/summary.json` and `summary.csv`.
"""
import csv
import json
import math
import os
from typing import List, Optional

import numpy as np
import SimpleITK as sitk
import torch
from acvl_utils.cropping_and_padding.bounding_boxes import insert_crop_into_image
from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter
from nnunetv2.configuration import default_num_processes
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from torch import nn

UNCERTAINTY_FOLDER = "uncertainty"


def normalized_entropy(prob: torch.Tensor) -> torch.Tensor:
    """-sum_c p_c ln p_c / ln C over axis 0 of (C, *spatial) probabilities: 0 = certain, 1 = uniform."""
    prob = prob.float()
    plogp = torch.where(prob > 0, prob * torch.log(prob.clamp_min(1e-12)), torch.zeros_like(prob))
    return (-plogp.sum(0) / math.log(prob.shape[0])).clamp_(0.0, 1.0)


class LogitsAndProbabilities(nn.Module):
    """The network's logits followed by their softmax on the channel axis: nnU-Net's mirroring and sliding window,
    which average whatever the network returns, then average both."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.network(x)
        return torch.cat((logits, torch.softmax(logits.float(), 1).to(logits.dtype)), 1)


class _TwiceTheHeads:
    """The label manager, reporting twice its segmentation heads so that nnU-Net's sliding window allocates room
    for the probabilities next to the logits."""

    def __init__(self, label_manager):
        self._label_manager = label_manager
        self.num_segmentation_heads = 2 * label_manager.num_segmentation_heads

    def __getattr__(self, name):
        return getattr(self._label_manager, name)


def map_to_image_geometry(uncertainty: np.ndarray, properties: dict, plans_manager,
                          configuration_manager) -> np.ndarray:
    """A map on the network's grid (*spatial) -> the image's voxel grid (numpy axes as the reader gave them), the
    steps of nnU-Net's `convert_predicted_logits_to_segmentation_with_correct_shape`."""
    spacing_transposed = [properties["spacing"][i] for i in plans_manager.transpose_forward]
    shape = properties["shape_after_cropping_and_before_resampling"]
    current_spacing = configuration_manager.spacing if len(configuration_manager.spacing) == len(shape) \
        else [spacing_transposed[0], *configuration_manager.spacing]
    resampled = configuration_manager.resampling_fn_probabilities(uncertainty[None], shape, current_spacing,
                                                                  spacing_transposed)
    resampled = np.asarray(resampled.cpu().numpy() if isinstance(resampled, torch.Tensor) else resampled,
                           dtype=np.float32)[0]
    full = np.zeros(properties["shape_before_cropping"], dtype=np.float32)
    full = insert_crop_into_image(full, np.clip(resampled, 0.0, 1.0), properties["bbox_used_for_cropping"])
    return full.transpose(plans_manager.transpose_backward)


def write_map(image: np.ndarray, properties: dict, output_file: str) -> None:
    """Write a float map with the geometry SimpleITK read the case with (nnU-Net's SimpleITKIO)."""
    if "sitk_stuff" not in properties:
        raise ValueError("Uncertainty maps are written with the geometry SimpleITK read the image with, but this "
                         "dataset's reader (plans 'image_reader_writer') did not record it. Use SimpleITKIO (the "
                         "default for .nii.gz, .nrrd, .mha).")
    geometry = properties["sitk_stuff"]
    if len(geometry["spacing"]) == 2:
        image = image[0]
    itk = sitk.GetImageFromArray(image.astype(np.float32, copy=False))
    itk.SetSpacing(geometry["spacing"])
    itk.SetOrigin(geometry["origin"])
    itk.SetDirection(geometry["direction"])
    sitk.WriteImage(itk, output_file, True)


class nnUNetPredictorWithUncertainty(nnUNetPredictor):
    """nnU-Net's predictor that also writes, per case it writes a segmentation for, the normalised entropy of the
    mean softmax over the test-time mirrorings and folds to `<output folder>/uncertainty/<case><file_ending>`.
    With `ofile` None (arrays returned instead of files) the last case's map on the network grid is kept in
    `last_uncertainty`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._case = None
        self._probability_sum = None
        self._num_models = 0
        self.last_uncertainty: Optional[np.ndarray] = None

    def predict_sliding_window_return_logits(self, input_image: torch.Tensor) -> torch.Tensor:
        if self.label_manager.has_regions:
            raise ValueError("Uncertainty as entropy over classes needs softmax outputs; this model was trained "
                             "on regions (sigmoid outputs).")
        num_heads = self.label_manager.num_segmentation_heads
        network, label_manager = self.network, self.label_manager
        self.network, self.label_manager = LogitsAndProbabilities(network), _TwiceTheHeads(label_manager)
        try:
            both = super().predict_sliding_window_return_logits(input_image)
        finally:
            self.network, self.label_manager = network, label_manager
        probabilities = both[num_heads:].to("cpu", torch.float32)
        if self._probability_sum is not None:
            probabilities = probabilities + self._probability_sum
        self._probability_sum = probabilities
        self._num_models += 1
        return both[:num_heads].clone()

    def predict_logits_from_preprocessed_data(self, data: torch.Tensor) -> torch.Tensor:
        self._probability_sum, self._num_models = None, 0
        logits = super().predict_logits_from_preprocessed_data(data)
        uncertainty = normalized_entropy(self._probability_sum / self._num_models).numpy()
        self._probability_sum = None
        self.last_uncertainty = uncertainty
        if self._case is not None and self._case["ofile"] is not None:
            ofile = self._case["ofile"]
            folder = os.path.join(os.path.dirname(ofile), UNCERTAINTY_FOLDER)
            os.makedirs(folder, exist_ok=True)
            image = map_to_image_geometry(uncertainty, self._case["data_properties"], self.plans_manager,
                                          self.configuration_manager)
            write_map(image, self._case["data_properties"],
                      os.path.join(folder, os.path.basename(ofile) + self.dataset_json["file_ending"]))
        return logits

    def predict_from_data_iterator(self, data_iterator, save_probabilities: bool = False,
                                   num_processes_segmentation_export: int = default_num_processes):
        def tracked():
            for item in data_iterator:
                self._case = item
                yield item
            self._case = None

        try:
            return super().predict_from_data_iterator(tracked(), save_probabilities, num_processes_segmentation_export)
        finally:
            self._case = None
            if isinstance(data_iterator, MultiThreadedAugmenter):
                data_iterator._finish()


def summarize(output_folder: str, file_ending: str) -> List[dict]:
    """Per case: mean uncertainty inside the predicted foreground (label > 0; None when nothing was segmented) and
    over the whole image, foreground size. Written to `uncertainty/summary.json` and `.csv`, most uncertain
    foreground first (cases without foreground last)."""
    folder = os.path.join(output_folder, UNCERTAINTY_FOLDER)
    cases = sorted(f[:-len(file_ending)] for f in os.listdir(folder) if f.endswith(file_ending))
    if not cases:
        raise FileNotFoundError(f"no uncertainty map ({file_ending}) in {folder}")
    rows = []
    for case in cases:
        seg_file = os.path.join(output_folder, case + file_ending)
        if not os.path.isfile(seg_file):
            raise FileNotFoundError(f"{seg_file}: the segmentation of {case} is missing next to its uncertainty map")
        seg = sitk.GetArrayFromImage(sitk.ReadImage(seg_file))
        unc = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(folder, case + file_ending)))
        if seg.shape != unc.shape:
            raise ValueError(f"{case}: segmentation {seg.shape} and uncertainty map {unc.shape} differ in shape")
        fg = seg > 0
        rows.append({"case": case,
                     "mean_uncertainty_foreground": float(unc[fg].mean()) if fg.any() else None,
                     "mean_uncertainty_image": float(unc.mean()),
                     "foreground_voxels": int(fg.sum())})
    rows.sort(key=lambda r: (r["mean_uncertainty_foreground"] is None, -(r["mean_uncertainty_foreground"] or 0.0)))
    with open(os.path.join(folder, "summary.json"), "w") as f:
        json.dump({"uncertainty": "entropy of the mean softmax over test-time mirrorings and folds / ln C "
                                  "(0 = certain, 1 = uniform over classes)",
                   "cases": rows}, f, indent=2)
    with open(os.path.join(folder, "summary.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows
