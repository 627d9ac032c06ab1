"""Voxel uncertainty at predict time: nnU-Net's prediction plus, per case, the entropy of the mean softmax over the
test-time mirrorings (and the folds), normalised by ln C to [0, 1], written with the image's geometry, and a per-case
summary to sort cases for review.

nnU-Net's own predictor does all the work: the network is wrapped so that it returns its logits followed by their
softmax, and nnU-Net's mirroring and Gaussian sliding window then average both (review 004: test-time augmentation
as an estimate of aleatoric uncertainty). The logits channels go through exactly the operations of the stock
predictor, so the segmentation is the one `nnUNetv2_predict` writes. The entropy map, on the network's grid, is
brought back to the image like nnU-Net's probabilities (`resampling_fn_probabilities`, cropping reverted with 0
outside the crop, transpose reverted) and written with the image's spacing, origin and direction.

2D/3D disagreement: when the fine-tuned 2D model an M&N trainer keeps next to its checkpoint (`fold_x/model2d/`,
`nnunetv2_mn.inference.ensemble`) is there for every fold used, a second map per case, the total-variation distance
(`disagreement_2d3d`) between nnU-Net's 3D probabilities, the softmax of its averaged logits (what the segmentation
is the argmax of, what `--save_probabilities` writes and what the 2D+3D ensemble mixes; not the mean softmax of the
entropy map), and the 2D model's probabilities of the ensemble (`predict_2d_probabilities`), brought to the image and
written the same way. Without a kept 2D model only the entropy map is written and the summary says why
the disagreement is not available; `disagreement=True` turns that into an error naming the missing file.

Output: `<out>/uncertainty/<case><file_ending>` (a sub-folder, so nnU-Net's and our evaluation tools, which read
the files of `<out>`, see only the segmentations), `<out>/uncertainty/disagreement/<case><file_ending>` (same file
names as the segmentations and the entropy maps, so that no case name can collide with another's map),
`<out>/uncertainty/summary.json` and `summary.csv`.
"""
import csv
import json
import math
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
import torch
from acvl_utils.cropping_and_padding.bounding_boxes import insert_crop_into_image
from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter
from nnunetv2.configuration import default_num_processes
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from torch import nn

from nnunetv2_mn.inference.ensemble import (load_models2d, missing_model2d_files, predict_2d_probabilities,
                                            resolve_folds)

UNCERTAINTY_FOLDER = "uncertainty"
DISAGREEMENT_FOLDER = "disagreement"  # inside UNCERTAINTY_FOLDER


def normalized_entropy(prob: torch.Tensor) -> torch.Tensor:
    """-sum_c p_c ln p_c / ln C over axis 0 of (C, *spatial) probabilities: 0 = certain, 1 = uniform."""
    prob = prob.float()
    plogp = torch.where(prob > 0, prob * torch.log(prob.clamp_min(1e-12)), torch.zeros_like(prob))
    return (-plogp.sum(0) / math.log(prob.shape[0])).clamp_(0.0, 1.0)


def disagreement_2d3d(p3d: torch.Tensor, p2d: torch.Tensor) -> torch.Tensor:
    """Total-variation distance between two (C, *spatial) probability maps, per voxel:
        D = 1/2 sum_c |p3d_c - p2d_c|  in [0, 1],
    0 where the two models give the same probabilities, 1 where each puts all its mass on classes the other gives
    none (for two classes, |p3d_fg - p2d_fg|).

    Why this rather than the Jensen-Shannon divergence: it is bounded by 1 with no normalisation and reads in the
    units of the probabilities (the largest difference between the two models' probability of any set of classes);
    it is not driven by the logarithms of near-zero probabilities; and it is exactly what the 2D+3D ensemble
    (`nnUNetv2_mn_predict_ensemble`, P = (1 - w) p3d + w p2d) does to the 3D prediction there: TV(P, p3d) = w D. So
    the map shows where, and by how much, adding the 2D model would change the 3D network's answer."""
    if p3d.shape != p2d.shape:
        raise ValueError(f"3D probabilities {tuple(p3d.shape)} and 2D probabilities {tuple(p2d.shape)} differ in shape")
    return (0.5 * (p3d.float() - p2d.float()).abs().sum(0)).clamp_(0.0, 1.0)


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
    mean softmax over the test-time mirrorings and folds to `<output folder>/uncertainty/<case><file_ending>`, and,
    when the 2D model is loaded, the 2D/3D disagreement (`disagreement_2d3d`) to
    `<output folder>/uncertainty/disagreement/<case><file_ending>` (between softmax(nnU-Net's logits) and the 2D
    model's probabilities).

    `disagreement`: None (default) computes it when every fold used kept its 2D model (`fold_x/model2d/`), else
    leaves it out and says why in `disagreement_unavailable`; True requires it (FileNotFoundError naming the missing
    files); False never computes it. With `ofile` None (arrays returned instead of files) the last case's maps on
    the network grid are kept in `last_uncertainty` and `last_disagreement`."""

    def __init__(self, *args, disagreement: Optional[bool] = None, slice_chunk: int = 64, **kwargs):
        super().__init__(*args, **kwargs)
        self.disagreement = disagreement
        self.slice_chunk = slice_chunk
        self.models2d: List[Tuple[nn.Module, dict]] = []
        self.disagreement_unavailable: Optional[str] = "no trained model loaded"
        self._case = None
        self._probability_sum = None
        self._num_models = 0
        self.last_uncertainty: Optional[np.ndarray] = None
        self.last_disagreement: Optional[np.ndarray] = None

    def initialize_from_trained_model_folder(self, model_training_output_dir: str,
                                             use_folds: Optional[Sequence] = None,
                                             checkpoint_name: str = "checkpoint_final.pth"):
        use_folds = resolve_folds(model_training_output_dir, use_folds, checkpoint_name)
        super().initialize_from_trained_model_folder(model_training_output_dir, use_folds, checkpoint_name)
        self.models2d = []
        if self.disagreement is False:
            self.disagreement_unavailable = "switched off (--no_disagreement)"
            return
        missing = missing_model2d_files(model_training_output_dir, use_folds)
        if missing:
            reason = (f"no kept 2D model: {', '.join(f'{path} not found' for path in missing)}. nnUNetTrainerMN and "
                      f"its variants keep the fine-tuned 2D model in fold_x/model2d/ at the end of training; train the "
                      f"fold(s) with such a trainer (nnUNetv2_train ... -tr nnUNetTrainerMN) to get the 2D/3D "
                      f"disagreement")
            if self.disagreement:
                raise FileNotFoundError(f"the 2D/3D disagreement was asked for, but there is {reason}")
            self.disagreement_unavailable = reason
            return
        self.models2d = load_models2d(model_training_output_dir, use_folds, self.label_manager)
        self.disagreement_unavailable = None

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
        mean_softmax = self._probability_sum / self._num_models
        self._probability_sum = None
        self.last_uncertainty = normalized_entropy(mean_softmax).numpy()
        self.last_disagreement = None
        if self.models2d:
            p3d = torch.softmax(logits.to("cpu", torch.float32), 0)  # nnU-Net's probabilities, as the ensemble's
            p2d = predict_2d_probabilities(self, self.models2d, data, self.slice_chunk)
            self.last_disagreement = disagreement_2d3d(p3d, p2d).numpy()
        if self._case is not None and self._case["ofile"] is not None:
            self._write_case_map(self.last_uncertainty, UNCERTAINTY_FOLDER)
            self._write_case_map(self.last_disagreement, os.path.join(UNCERTAINTY_FOLDER, DISAGREEMENT_FOLDER))
        return logits

    def _write_case_map(self, network_grid_map: Optional[np.ndarray], subfolder: str) -> None:
        """The current case's map, brought to the image, as `<output folder>/<subfolder>/<case><file_ending>`; with
        no map, a file of an earlier run at that path is removed (it would not belong to this segmentation)."""
        ofile = self._case["ofile"]
        output_file = os.path.join(os.path.dirname(ofile), subfolder,
                                   os.path.basename(ofile) + self.dataset_json["file_ending"])
        if network_grid_map is None:
            if os.path.isfile(output_file):
                os.remove(output_file)
            return
        os.makedirs(os.path.dirname(output_file), exist_ok=True)
        image = map_to_image_geometry(network_grid_map, self._case["data_properties"], self.plans_manager,
                                      self.configuration_manager)
        write_map(image, self._case["data_properties"], output_file)

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


def summarize(output_folder: str, file_ending: str, disagreement_unavailable: Optional[str] = None) -> List[dict]:
    """Per case: mean uncertainty and mean 2D/3D disagreement inside the predicted foreground (label > 0; None when
    nothing was segmented) and over the whole image, foreground size. Written to `uncertainty/summary.json` and
    `.csv`, most uncertain foreground first (cases without foreground last).

    `disagreement_unavailable` None: every case's disagreement map must be in `uncertainty/disagreement/`; a string
    (the predictor's `disagreement_unavailable`): there is none, the disagreement columns are None (empty in the
    csv) and summary.json says why."""
    folder = os.path.join(output_folder, UNCERTAINTY_FOLDER)
    cases = sorted(f[:-len(file_ending)] for f in os.listdir(folder) if f.endswith(file_ending))
    if not cases:
        raise FileNotFoundError(f"no uncertainty map ({file_ending}) in {folder}")

    def read(path: str, case: str, what: str) -> np.ndarray:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: the {what} of {case} is missing")
        return sitk.GetArrayFromImage(sitk.ReadImage(path))

    rows = []
    for case in cases:
        seg = read(os.path.join(output_folder, case + file_ending), case, "segmentation")
        maps = {"uncertainty": read(os.path.join(folder, case + file_ending), case, "uncertainty map")}
        if disagreement_unavailable is None:
            maps["disagreement"] = read(os.path.join(folder, DISAGREEMENT_FOLDER, case + file_ending), case,
                                        "2D/3D disagreement map")
        for name, m in maps.items():
            if seg.shape != m.shape:
                raise ValueError(f"{case}: segmentation {seg.shape} and {name} map {m.shape} differ in shape")
        fg = seg > 0
        row = {"case": case}
        for name in ("uncertainty", "disagreement"):
            m = maps.get(name)
            row[f"mean_{name}_foreground"] = float(m[fg].mean()) if m is not None and fg.any() else None
            row[f"mean_{name}_image"] = float(m.mean()) if m is not None else None
        rows.append({**row, "foreground_voxels": int(fg.sum())})
    rows.sort(key=lambda r: (r["mean_uncertainty_foreground"] is None, -(r["mean_uncertainty_foreground"] or 0.0)))
    with open(os.path.join(folder, "summary.json"), "w") as f:
        json.dump({"uncertainty": "entropy of the mean softmax over test-time mirrorings and folds / ln C "
                                  "(0 = certain, 1 = uniform over classes)",
                   "disagreement_available": disagreement_unavailable is None,
                   "disagreement": "total-variation distance 1/2 sum_c |P3D_c - P2D_c| between the 3D network's "
                                   "mean softmax and the kept 2D model's probabilities (0 = same probabilities, "
                                   "1 = disjoint), maps in disagreement/" if disagreement_unavailable is None
                   else f"not available: {disagreement_unavailable}",
                   "cases": rows}, f, indent=2)
    with open(os.path.join(folder, "summary.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows
