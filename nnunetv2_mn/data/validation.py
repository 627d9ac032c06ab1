"""Checks of raw images before anything is preprocessed or trained on: bad input stops with a clear error.

* `voxel_digest(file)`: reads a NIfTI file's whole (gzip) stream, compares the voxel bytes with the header
  and returns a hash of the voxel data (SimpleITK silently zero-fills a truncated `.nii.gz`);
* `ImageDigests`: those digests cached by file size and mtime in `$nnUNet_preprocessed/DatasetXXX/`;
* `check_not_labeled`: unlabelled cases must not be labelled cases (same name or same voxel data);
* `check_geometry`: spacing and orientation of unlabelled images against the labelled images;
* `check_label_values`: the labelled segmentations hold only the labels of dataset.json.
"""
import gzip
import hashlib
import json
import os
import zlib
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

DIGEST_CACHE = "mn_raw_image_digests.json"
#: an unlabelled spacing outside [min / f, max * f] of the labelled images' spacing (per axis) is a mismatch
SPACING_FACTOR = 2.0
_CHUNK = 1 << 22


class UnlabeledDataError(RuntimeError):
    """Something about the data set or its unlabelled images that the user has to fix."""


class LabeledDataError(UnlabeledDataError):
    """The labelled cases hold something that dataset.json does not allow (e.g. an undefined label value)."""


# ----------------------------------------------------------------------------------------------------- digests
def _is_nifti(path: str) -> bool:
    return path.endswith((".nii", ".nii.gz"))


def _nifti_layout(path: str) -> Tuple[tuple, np.dtype, int]:
    """(shape, dtype, data offset) from the NIfTI header."""
    import nibabel as nib
    try:
        header = nib.load(path).header
        return tuple(int(s) for s in header.get_data_shape()), header.get_data_dtype(), int(header.get_data_offset())
    except Exception as e:
        raise UnlabeledDataError(f"Cannot read image {path}: its NIfTI header is unreadable ({type(e).__name__}: "
                                 f"{e}). The file is damaged or not a NIfTI file: replace or remove it.") from None


def _nifti_digest(path: str) -> str:
    """Hash of the voxel bytes; the whole stream is read and must hold every voxel the header announces."""
    shape, dtype, offset = _nifti_layout(path)
    expected = int(np.prod(shape)) * dtype.itemsize
    digest = hashlib.sha256(f"{shape}|{dtype.str}|".encode())
    position, voxel_bytes = 0, 0
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                data = chunk[max(0, offset - position):]
                position += len(chunk)
                data = data[:max(0, expected - voxel_bytes)]
                digest.update(data)
                voxel_bytes += len(data)
    except (EOFError, OSError, zlib.error) as e:
        raise UnlabeledDataError(
            f"Cannot read image {path}: the file is truncated or damaged ({type(e).__name__}: {e}); its data ends "
            f"after {voxel_bytes} of the {expected} voxel bytes that its header announces (shape {shape}, "
            f"{dtype}). Copy the file again or remove it.") from None
    if voxel_bytes < expected:
        raise UnlabeledDataError(
            f"Cannot read image {path}: the file is truncated: it holds {voxel_bytes} of the {expected} voxel "
            f"bytes that its header announces (shape {shape}, {dtype}). Copy the file again or remove it.")
    return digest.hexdigest()


def _array_digest(path: str, reader_writer_class) -> str:
    try:
        image, _ = reader_writer_class().read_images([path])
    except Exception as e:
        raise UnlabeledDataError(f"Cannot read image {path}: {type(e).__name__}: {e}. Replace or remove this "
                                 f"file.") from None
    image = np.ascontiguousarray(image)
    digest = hashlib.sha256(f"{image.shape}|{image.dtype.str}|".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def voxel_digest(path: str, reader_writer_class=None) -> str:
    """Hash of the voxel data of `path`; raises `UnlabeledDataError` naming the file if it is damaged.
    NIfTI files are checked byte for byte against their header; other formats go through the reader."""
    if _is_nifti(path) or reader_writer_class is None:
        return _nifti_digest(path)
    return _array_digest(path, reader_writer_class)


class ImageDigests:
    """`voxel_digest` per file, cached in `folder/DIGEST_CACHE` by absolute path, size and mtime."""

    def __init__(self, folder: Optional[str], reader_writer_class=None):
        self.file = os.path.join(folder, DIGEST_CACHE) if folder else None
        self.reader_writer_class = reader_writer_class
        self.cache = self._load()

    def _load(self) -> dict:
        if self.file is None or not os.path.isfile(self.file):
            return {}
        try:
            with open(self.file) as f:
                return json.load(f)
        except (ValueError, OSError):
            return {}

    def __call__(self, path: str) -> str:
        path = os.path.abspath(path)
        st = os.stat(path)
        entry = self.cache.get(path)
        if entry and entry["size"] == st.st_size and entry["mtime_ns"] == st.st_mtime_ns:
            return entry["digest"]
        digest = voxel_digest(path, self.reader_writer_class)
        self.cache[path] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "digest": digest}
        return digest

    def case_digest(self, files: Sequence[str]) -> str:
        return hashlib.sha256("|".join(self(f) for f in files).encode()).hexdigest()

    def save(self) -> None:
        if self.file is None or not os.path.isdir(os.path.dirname(self.file)):
            return
        tmp = self.file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.cache, f)
        os.replace(tmp, self.file)


# ----------------------------------------------------------------------------------------------------- label leaks
def check_not_labeled(unlabeled: Dict[str, List[str]], labeled: Dict[str, List[str]],
                      digest_of_case=None) -> None:
    """Refuse unlabelled cases that are labelled cases: the same name, or (with `digest_of_case`) the same voxel
    data in every channel. `unlabeled` / `labeled`: {case: [channel files]}."""
    same_name = sorted(set(unlabeled) & set(labeled))
    if same_name:
        raise UnlabeledDataError(
            f"{len(same_name)} unlabelled case(s) have the name of a labelled imagesTr case: {same_name[:10]} (e.g. "
            f"{unlabeled[same_name[0]][0]}). A labelled case must not also be unlabelled (a label leak inflates every "
            f"result): remove these files from the unlabelled folder, or rename them if they are other scans.")
    if digest_of_case is None:
        return
    labeled_by_digest = {digest_of_case(files): case for case, files in labeled.items()}
    leaks = {case: labeled_by_digest[d] for case, files in unlabeled.items()
             if (d := digest_of_case(files)) in labeled_by_digest}
    if leaks:
        pairs = ", ".join(f"{u} = {l}" for u, l in sorted(leaks.items())[:10])
        raise UnlabeledDataError(
            f"{len(leaks)} unlabelled case(s) have the same voxel data as a labelled imagesTr case ({pairs}; "
            f"unlabelled = labelled). A labelled case must not also be unlabelled (a label leak inflates every "
            f"result): remove these files from the unlabelled folder.")


# ----------------------------------------------------------------------------------------------------- geometry
def image_geometry(path: str) -> Tuple[Tuple[float, ...], str]:
    """(spacing in file axis order, orientation code such as 'LPS') from the header only (SimpleITK)."""
    import SimpleITK as sitk
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise UnlabeledDataError(f"Cannot read image {path}: {str(e).strip().splitlines()[-1]}. Replace or remove "
                                 f"this file.") from None
    return tuple(reader.GetSpacing()), orientation_code(reader.GetDirection(), reader.GetDimension())


def orientation_code(direction: Sequence[float], dim: int) -> str:
    """Which world axis (LPS, SimpleITK's frame) each image axis runs along, e.g. 'LPS', 'PSL' (axes permuted)."""
    if dim != 3:
        return ""
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    letters = (("R", "L"), ("A", "P"), ("I", "S"))
    code = ""
    for axis in range(3):
        world = int(np.argmax(np.abs(d[:, axis])))
        code += letters[world][int(d[world, axis] > 0)]
    return code


def check_geometry(unlabeled: Dict[str, List[str]], labeled: Dict[str, List[str]], accept: bool = False,
                   flag: str = "--accept_geometry") -> List[str]:
    """Compare spacing (per axis, within a factor SPACING_FACTOR of the labelled range) and orientation of the
    first channel of each unlabelled case with the labelled images. Returns the problems; raises unless `accept`."""
    lab = {case: image_geometry(files[0]) for case, files in labeled.items()}
    if not lab:
        return []
    spacings = np.array([s for s, _ in lab.values()])
    lo, hi = spacings.min(0), spacings.max(0)
    orientations = sorted({o for _, o in lab.values()})
    problems = []
    for case, files in unlabeled.items():
        spacing, orientation = image_geometry(files[0])
        if len(spacing) != len(lo):
            problems.append(f"{files[0]}: {len(spacing)} dimensions, the labelled images have {len(lo)}")
            continue
        s = np.asarray(spacing)
        if np.any(s < lo / SPACING_FACTOR) or np.any(s > hi * SPACING_FACTOR):
            problems.append(f"{files[0]}: spacing {_fmt(s)} (x, y, z), labelled images {_fmt(lo)} to {_fmt(hi)}")
        if orientation and orientation not in orientations:
            problems.append(f"{files[0]}: orientation {orientation}, labelled images {', '.join(orientations)} "
                            f"(axes permuted or flipped: 2D slices would cut another anatomical plane)")
    if problems and not accept:
        raise UnlabeledDataError(
            f"{len(problems)} unlabelled image(s) differ in geometry from the labelled images:\n  "
            + "\n  ".join(problems[:20]) + ("\n  ..." if len(problems) > 20 else "")
            + f"\nCheck their headers (a spacing off by a factor > {SPACING_FACTOR:g} or another axis order usually "
              f"means a conversion error). If they are right, run again with {flag}.")
    return problems


def _fmt(values: Iterable[float]) -> str:
    return "(" + ", ".join(f"{v:.3g}" for v in values) + ")"


# ----------------------------------------------------------------------------------------------------- labels
def allowed_label_values(label_manager) -> List[int]:
    """Values a preprocessed segmentation may hold: dataset.json's labels, the ignore label, and -1 (nnU-Net marks
    voxels outside the nonzero mask with -1)."""
    values = {int(v) for v in label_manager.all_labels} | {-1}
    if label_manager.ignore_label is not None:
        values.add(int(label_manager.ignore_label))
    return sorted(values)


def unexpected_values(seg: np.ndarray, allowed: Sequence[int]) -> List[int]:
    """Values of `seg` not in `allowed` (min/max first, np.unique only when they are out of range or gapped)."""
    seg = np.asarray(seg)
    lo, hi = int(seg.min()), int(seg.max())
    contiguous = list(range(min(allowed), max(allowed) + 1)) == sorted(allowed)
    if contiguous and lo >= min(allowed) and hi <= max(allowed):
        return []
    return [int(v) for v in np.unique(seg) if int(v) not in set(allowed)]


def check_label_values(dataset, identifiers: Sequence[str], label_manager, dataset_json_file: str) -> None:
    """Every preprocessed labelled segmentation holds only labels of dataset.json; else name cases and values."""
    allowed = allowed_label_values(label_manager)
    bad = {}
    for identifier in identifiers:
        seg = dataset.load_case(identifier)[1]
        values = unexpected_values(seg[:], allowed)
        if values:
            bad[identifier] = values
    if bad:
        cases = "; ".join(f"{c}: {v}" for c, v in sorted(bad.items())[:10])
        raise LabeledDataError(
            f"{len(bad)} labelled case(s) hold label values that {dataset_json_file} does not define ({cases}; "
            f"allowed: {[v for v in allowed if v >= 0]}). Fix labelsTr (or add the labels to "
            f"dataset.json 'labels'), then run nnUNetv2_plan_and_preprocess again.")
