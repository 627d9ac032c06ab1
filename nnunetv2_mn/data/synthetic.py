"""A small synthetic 3D data set in nnU-Net's raw layout, with unlabelled and held-out cases.

Each case is an MRI-like volume: a body ellipsoid (air outside is exactly 0), one randomly sized, placed and
rotated ellipsoid (class 1) with a smaller structure embedded at its rim (class 2), a dark unlabelled distractor
blob, a smooth multiplicative bias field and Gaussian noise. Classes differ in intensity, so a tiny network
learns them in a few epochs. Everything is drawn from `numpy.random.default_rng((seed, case_index))`.

    nnUNetv2_mn_synthetic -d 990 --shape 24 40 40
"""
import os
import shutil
from typing import Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from nnunetv2_mn.paths import UNLABELED_RAW_FOLDER

FILE_ENDING = ".nii.gz"
LABELS = {"background": 0, "structure": 1, "core": 2}
# mean intensities (before bias field and noise)
TISSUE, STRUCTURE, CORE, DISTRACTOR = 400.0, 700.0, 1000.0, 200.0
NOISE_SD = 40.0


def _default_raw_dir() -> str:
    from nnunetv2.paths import nnUNet_raw
    return nnUNet_raw.require()


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation matrix (QR of a Gaussian matrix)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _ellipsoid(coords: np.ndarray, center, semi_axes, rotation: np.ndarray) -> np.ndarray:
    """Boolean mask of an ellipsoid; `coords` is (3, *shape) in mm."""
    d = coords - np.asarray(center, dtype=np.float64).reshape(3, 1, 1, 1)
    local = np.tensordot(rotation.T, d, axes=1)
    return np.sum((local / np.asarray(semi_axes, dtype=np.float64).reshape(3, 1, 1, 1)) ** 2, axis=0) <= 1.0


def _bias_field(coords: np.ndarray, extent: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative field, roughly within [0.75, 1.25]: a few low-frequency cosines."""
    field = np.zeros(coords.shape[1:])
    for _ in range(3):
        freq = rng.uniform(0.3, 1.0, size=3) * np.pi / extent
        phase = rng.uniform(0, 2 * np.pi)
        field += np.cos(np.tensordot(freq, coords, axes=1) + phase)
    return 1.0 + 0.08 * field


def _structures(coords: np.ndarray, extent: np.ndarray, spacing: np.ndarray, rng: np.random.Generator):
    """Class-1 ellipsoid with an embedded class-2 ellipsoid; redrawn until both are present."""
    while True:
        rot = _random_rotation(rng)
        axes1 = np.maximum(rng.uniform(0.14, 0.26, size=3) * extent, 3 * spacing)
        center1 = rng.uniform(0.35, 0.65, size=3) * extent
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        axes2 = np.maximum(rng.uniform(0.45, 0.65) * axes1, 1.5 * spacing)
        center2 = center1 + rot @ (direction * axes1 * rng.uniform(0.3, 0.5))
        outer = _ellipsoid(coords, center1, axes1, rot)
        inner = _ellipsoid(coords, center2, axes2, _random_rotation(rng)) & outer
        if inner.sum() >= 8 and (outer & ~inner).sum() >= 8:
            return outer, inner


def make_case(shape: Sequence[int], spacing: Sequence[float], rng: np.random.Generator
              ) -> Tuple[np.ndarray, np.ndarray]:
    """One (image float32, label uint8) pair in numpy (z, y, x) order."""
    spacing = np.asarray(spacing, dtype=np.float64)
    extent = np.asarray(shape) * spacing
    coords = np.stack(np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing)], indexing="ij"))
    body = _ellipsoid(coords, extent / 2, 0.47 * extent, np.eye(3))
    outer, inner = _structures(coords, extent, spacing, rng)
    outer &= body
    inner &= body
    distractor = _ellipsoid(coords, rng.uniform(0.25, 0.75, size=3) * extent,
                            np.maximum(rng.uniform(0.06, 0.12, size=3) * extent, 1.5 * spacing),
                            _random_rotation(rng)) & body & ~outer

    label = np.zeros(shape, dtype=np.uint8)
    label[outer] = 1
    label[inner] = 2
    image = np.full(shape, TISSUE)
    image[distractor] = DISTRACTOR
    image[outer] = STRUCTURE
    image[inner] = CORE
    image = image * rng.uniform(0.8, 1.2) * _bias_field(coords, extent, rng) + rng.normal(0, NOISE_SD, size=shape)
    image = np.where(body, np.maximum(image, 1.0), 0.0)
    label[~body] = 0
    return image.astype(np.float32), label


def _write(array: np.ndarray, spacing: Sequence[float], filename: str) -> None:
    """Write a (z, y, x) array with SimpleITK; `spacing` is in the same (z, y, x) order."""
    img = sitk.GetImageFromArray(array)
    img.SetSpacing([float(s) for s in spacing[::-1]])
    sitk.WriteImage(img, filename, True)


def _split_folders(num_labeled: int, num_unlabeled: int, num_test: int):
    """(image folder, label folder or None) per case index, in order: labelled, unlabelled, test."""
    return ([("imagesTr", "labelsTr")] * num_labeled + [(UNLABELED_RAW_FOLDER, None)] * num_unlabeled
            + [("imagesTs", "labelsTs")] * num_test)


def _prepare_target(raw_dir: str, dataset_id: int, folder_name: str, overwrite: bool) -> str:
    """Return the target folder; refuse if it (or another dataset with the same id) exists, unless overwrite."""
    target = os.path.join(raw_dir, folder_name)
    prefix = f"Dataset{dataset_id:03d}_"
    others = [d for d in os.listdir(raw_dir) if d.startswith(prefix) and d != folder_name] if os.path.isdir(raw_dir) else []
    if others:
        raise FileExistsError(f"Dataset id {dataset_id} is already used by {others} in {raw_dir}. Pick another id.")
    if os.path.exists(target):
        if not overwrite:
            raise FileExistsError(f"{target} already exists. Delete it, pick another id or pass --overwrite.")
        shutil.rmtree(target)
    return target


def _write_dataset_json(target: str, name: str, counts: dict) -> None:
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
    generate_dataset_json(target, {0: "MRI"}, LABELS, counts["labeled"], FILE_ENDING, dataset_name=name,
                          description="Synthetic ellipsoids for nnunetv2-mn tests (nnunetv2_mn.data.synthetic)",
                          license="CC0", converted_by="nnunetv2_mn.data.synthetic",
                          numTest=counts["test"], numUnlabeled=counts["unlabeled"])


def make_synthetic_dataset(dataset_id: int, name: str = "MNSynthetic", num_labeled: int = 4, num_unlabeled: int = 8,
                           num_test: int = 4, shape: Sequence[int] = (24, 40, 40),
                           spacing: Sequence[float] = (2.0, 1.0, 1.0), seed: int = 0,
                           raw_dir: Optional[str] = None, overwrite: bool = False) -> str:
    """Write `{raw_dir or $nnUNet_raw}/Dataset{id:03d}_{name}` and return its path.

    imagesTr/labelsTr hold `num_labeled` cases, imagesUnlabeled/ `num_unlabeled` images without labels,
    imagesTs/labelsTs `num_test` held-out cases. `shape` and `spacing` are in numpy (z, y, x) order.
    """
    if num_labeled < 1:
        raise ValueError("num_labeled must be >= 1")
    if len(shape) != 3 or len(spacing) != 3:
        raise ValueError("shape and spacing need 3 entries (z, y, x)")
    raw_dir = raw_dir or _default_raw_dir()
    target = _prepare_target(raw_dir, dataset_id, f"Dataset{dataset_id:03d}_{name}", overwrite)
    for i, (img_folder, seg_folder) in enumerate(_split_folders(num_labeled, num_unlabeled, num_test)):
        image, label = make_case(tuple(shape), spacing, np.random.default_rng((seed, i)))
        case = f"case_{i:03d}"
        os.makedirs(os.path.join(target, img_folder), exist_ok=True)
        _write(image, spacing, os.path.join(target, img_folder, f"{case}_0000{FILE_ENDING}"))
        if seg_folder is not None:
            os.makedirs(os.path.join(target, seg_folder), exist_ok=True)
            _write(label, spacing, os.path.join(target, seg_folder, case + FILE_ENDING))
    _write_dataset_json(target, name, {"labeled": num_labeled, "unlabeled": num_unlabeled, "test": num_test})
    return target
