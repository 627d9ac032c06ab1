"""M&N experiment planner: nnU-Net's 3d_fullres plan with the GPU memory target shared by the 2D model.

M&N trains nnU-Net's 3D network g and a 2D model f (SegFormer-B2 + LoRA by default) on the same patches: a batch of
B patches (S0, S1, S2) gives f B * S_axis slices per step. nnU-Net's planner budgets g alone, so this planner splits
the target (`-gpu_memory_target`, GB):

    e(plan)  = B * S_axis * (pixels per slice) * bytes_per_pixel_2d / 1e9       2D estimate of a plan
             = B * (voxels per patch) * bytes_per_pixel_2d / 1e9                   (whatever the slice axis)
    t        = largest 3D target with  t + e(plan_nnU-Net(t)) <= total          3D target

`plan_nnU-Net(t)` is nnU-Net's own 3d_fullres planning (patch, topology, batch size) at target t, so the 3D part
gets `total - e` of the plan it produces. The 2D estimate is added to, not overlapped with, the 3D one: conservative,
since M&N runs the 3D and 2D passes one after the other, but it leaves room for both models, their optimizers and
allocator fragmentation. The plans are written as `3d_fullres` of a new plans file (default nnUNetMNPlans), never
over the user's nnUNetPlans:

    nnUNetv2_mn_plan -d D [-gpu_memory_target 8] [--2d_model ID_OR_DIR] [--slice_axis 0] [--preprocess]
    nnUNetv2_train D 3d_fullres 0 -tr nnUNetTrainerMN -p nnUNetMNPlans
"""
import os
from typing import Callable, List, Optional, Tuple, Union

import numpy as np

from nnunetv2_mn.settings import PLANS_KEY_2D_MODEL, PLANS_KEY_SLICE_AXIS
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

DEFAULT_PLANS_NAME = "nnUNetMNPlans"
CONFIGURATION = "3d_fullres"
GB = 1e9


class MemoryBudgetError(RuntimeError):
    """The 2D model does not fit next to even the smallest allowed 3D target."""


def budget_3d_target(total_gb: float, estimate_2d_gb: Callable[[float], float], min_3d_gb: float,
                     tol_gb: float) -> Tuple[float, float]:
    """Largest 3D target t in [min_3d_gb, total_gb) with t + estimate_2d_gb(t) <= total_gb; returns (t, e(t)).

    `estimate_2d_gb(t)` is the 2D estimate of the plan made at 3D target t. First tries t = total - e(total): if the
    plan at that t has the same 2D cost, it is the answer (the plan did not change). Otherwise bisects between a
    fitting and a failing target down to `tol_gb`, then moves up to total - e(t) where that still fits.
    Raises MemoryBudgetError if even `min_3d_gb` does not fit.
    """
    cache = {}

    def e(t: float) -> float:
        if t not in cache:
            cache[t] = float(estimate_2d_gb(t))
        return cache[t]

    def fits(t: float) -> bool:
        return t >= min_3d_gb and t + e(t) <= total_gb * (1 + 1e-9)

    t0 = total_gb - e(total_gb)
    if fits(t0) and e(t0) == e(total_gb):
        return t0, e(t0)
    if not fits(min_3d_gb):
        raise MemoryBudgetError(
            f"the 2D model needs {e(min_3d_gb):.2f} GB even with the smallest 3D target ({min_3d_gb:.2f} GB), more "
            f"than the {total_gb:g} GB target. Raise -gpu_memory_target or use a lighter 2D model (and pass its "
            f"--bytes_per_pixel).")
    lo, hi = (t0, total_gb) if fits(t0) else (min_3d_gb, t0 if t0 > min_3d_gb else total_gb)
    while hi - lo > tol_gb:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    up = total_gb - e(lo)
    if up > lo and fits(up):
        lo = up
    return lo, e(lo)


class MNExperimentPlanner(ExperimentPlanner):
    """nnU-Net's ExperimentPlanner whose 3d_fullres leaves room for the M&N 2D model (see the module docstring).

    Writes only `3d_fullres` (with the `mn_*` keys) to `{plans_name}.json`; refuses an existing file unless
    `overwrite`. `mn_2d_model=None` leaves the choice to the trainer (env nnUNet_MN_2d_model or its default).
    """
    #: measured, SegFormer-B2 + LoRA (r=64), one training step (forward + backward, fp32, CPU): 7.6 GB for 64 slices
    #: of 3x160x160, i.e. 7.6e9 / (64 * 160 * 160) = 4.6e3 bytes per pixel-slice (weights are ~0.1 GB of that).
    #: Activations scale with pixels, so this is used for any slice size. AMP on a GPU needs less: conservative.
    segformer_bytes_per_pixel: float = 4.6e3
    #: the 3D target never goes below this fraction of the total (nnU-Net's patch search needs a sane target)
    mn_min_3d_fraction: float = 0.1
    #: bisection resolution, as a fraction of the total
    mn_budget_tolerance: float = 0.01

    def __init__(self, dataset_name_or_id: Union[str, int], gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str = DEFAULT_PLANS_NAME,
                 overwrite_target_spacing: Union[List[float], Tuple[float, ...]] = None,
                 suppress_transpose: bool = False, mn_2d_model: Optional[str] = None, mn_slice_axis: int = 0,
                 bytes_per_pixel_2d: Optional[float] = None, overwrite: bool = False):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose)
        if mn_slice_axis not in (0, 1, 2):
            raise ValueError(f"mn_slice_axis must be 0, 1 or 2, not {mn_slice_axis!r}")
        self.mn_gpu_memory_target_gb = float(gpu_memory_target_in_gb)
        self.mn_2d_model = mn_2d_model or None
        self.mn_slice_axis = int(mn_slice_axis)
        self.bytes_per_pixel_2d = float(bytes_per_pixel_2d or self.segformer_bytes_per_pixel)
        self.overwrite = overwrite
        self.mn_unbudgeted_plan = None  # nnU-Net's 3d_fullres plan at the full target, for comparison

    @property
    def plans_file(self) -> str:
        from nnunetv2.paths import nnUNet_preprocessed
        return os.path.join(str(nnUNet_preprocessed), self.dataset_name, self.plans_identifier + ".json")

    def _check_can_write(self):
        if os.path.isfile(self.plans_file) and not self.overwrite:
            raise FileExistsError(f"{self.plans_file} exists. Pick another plans name or overwrite it explicitly "
                                  f"(--overwrite / overwrite=True).")

    # ------------------------------------------------------------------ estimates
    def estimate_2d_gb(self, plan: dict) -> float:
        """2D training memory of a plan: every slice along `mn_slice_axis` of every patch in the batch."""
        patch = [int(i) for i in plan["patch_size"]]
        slices = plan["batch_size"] * patch[self.mn_slice_axis]
        pixels = int(np.prod(patch)) // patch[self.mn_slice_axis]
        return slices * pixels * self.bytes_per_pixel_2d / GB

    def estimate_3d_gb(self, plan: dict) -> float:
        """nnU-Net's own VRAM model for a 3D plan, converted to GB (feature maps vs. its 8 GB / batch 2 reference)."""
        arch = plan["architecture"]
        num_input_channels = len(self.dataset_json.get("channel_names", self.dataset_json.get("modality", {})))
        feature_maps = self.static_estimate_VRAM_usage(tuple(plan["patch_size"]), num_input_channels,
                                                       len(self.dataset_json["labels"]), arch["network_class_name"],
                                                       arch["arch_kwargs"], arch["_kw_requires_import"])
        return (feature_maps * plan["batch_size"] / self.UNet_reference_val_corresp_bs_3d
                / self.UNet_reference_val_3d * self.UNet_reference_val_corresp_GB)

    # ------------------------------------------------------------------ planning
    def get_plans_for_configuration(self, spacing, median_shape, data_identifier: str,
                                    approximate_n_voxels_dataset: float, _cache: dict) -> dict:
        if data_identifier != self.generate_data_identifier(CONFIGURATION):
            return super().get_plans_for_configuration(spacing, median_shape, data_identifier,
                                                       approximate_n_voxels_dataset, _cache)
        total = self.mn_gpu_memory_target_gb
        plans_by_target = {}

        def plan_at(t: float) -> dict:
            if t not in plans_by_target:
                self.UNet_vram_target_GB = t
                try:
                    plans_by_target[t] = super(MNExperimentPlanner, self).get_plans_for_configuration(
                        spacing, median_shape, data_identifier, approximate_n_voxels_dataset, _cache)
                finally:
                    self.UNet_vram_target_GB = total
            return plans_by_target[t]

        t3d, e2d = budget_3d_target(total, lambda t: self.estimate_2d_gb(plan_at(t)),
                                    self.mn_min_3d_fraction * total, self.mn_budget_tolerance * total)
        self.mn_unbudgeted_plan = plan_at(total)
        plan = plan_at(t3d)
        patch = [int(i) for i in plan["patch_size"]]
        plan.update({
            PLANS_KEY_2D_MODEL: self.mn_2d_model,
            PLANS_KEY_SLICE_AXIS: self.mn_slice_axis,
            "mn_gpu_memory_target_gb": total,
            "mn_3d_memory_target_gb": round(t3d, 4),
            "mn_estimated_3d_memory_gb": round(self.estimate_3d_gb(plan), 4),
            "mn_estimated_2d_memory_gb": round(e2d, 4),
            "mn_2d_bytes_per_pixel": self.bytes_per_pixel_2d,
            "mn_2d_slices_per_step": plan["batch_size"] * patch[self.mn_slice_axis],
        })
        return plan

    def plan_experiment(self) -> dict:
        """nnU-Net's planning with the budgeted 3d_fullres; saves and returns plans holding only 3d_fullres."""
        self._check_can_write()
        return super().plan_experiment()

    def save_plans(self, plans: dict):
        """Keep only 3d_fullres (the other configurations are not budgeted) and write a fresh file."""
        from batchgenerators.utilities.file_and_folder_operations import maybe_mkdir_p, save_json
        from nnunetv2.utilities.json_export import recursive_fix_for_json_export
        if CONFIGURATION not in plans["configurations"]:
            raise RuntimeError(f"{self.dataset_name} has no 3D configuration (2D images?); M&N needs 3D data.")
        plans["configurations"] = {CONFIGURATION: plans["configurations"][CONFIGURATION]}
        self._check_can_write()
        recursive_fix_for_json_export(plans)
        maybe_mkdir_p(os.path.dirname(self.plans_file))
        save_json(plans, self.plans_file, sort_keys=False)
