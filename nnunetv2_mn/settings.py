"""The package's contracts, written once and importable without torch: environment variables, plans keys, the
default 2D model, and where the 2D model's weights come from. The trainers, the planner, the 2D models, the doctor
and the benchmark import them from here."""
import os
from typing import Mapping, Optional, Tuple

#: a Hugging Face 2D model ('segformer', 'hf'): hub id or local `save_pretrained` directory
ENV_2D_MODEL = "nnUNet_MN_2d_model"
#: a weights file for the CNN 2D models ('resunet', 'effnet_lite0')
ENV_2D_WEIGHTS = "nnUNet_MN_2d_weights"
#: keys of a plans configuration written by `nnUNetv2_mn_plan` and read by nnUNetTrainerMN
PLANS_KEY_2D_MODEL = "mn_2d_model"
PLANS_KEY_SLICE_AXIS = "mn_slice_axis"
#: the paper's 2D model: SegFormer-B2, ImageNet-1k + ADE20K
DEFAULT_2D_MODEL = "nvidia/segformer-b2-finetuned-ade-512-512"
#: the trainer whose 2D model ships with pip (works offline): the alternative every message about the 2D model offers
OFFLINE_TRAINER = "nnUNetTrainerMN_EffNetLite0"
#: 2D model kinds loaded through transformers (their source is a hub id or a directory)
HF_KINDS = ("segformer", "hf")


def resolve_2d_source(kind: str, default: Optional[str], plans_configuration: Optional[Mapping] = None,
                      environ: Optional[Mapping] = None, owner: str = "the trainer") -> Tuple[Optional[str], str]:
    """(source, where it came from) of a 2D model's weights, first match wins. Hugging Face models: env
    nnUNet_MN_2d_model > plans key mn_2d_model > `default`. CNN models: env nnUNet_MN_2d_weights > `default`, so
    that a SegFormer directory exported for one trainer never reaches another trainer's CNN."""
    environ = os.environ if environ is None else environ
    hf = kind in HF_KINDS
    env = ENV_2D_MODEL if hf else ENV_2D_WEIGHTS
    if environ.get(env):
        return environ[env], f"environment variable {env}"
    plans_value = (plans_configuration or {}).get(PLANS_KEY_2D_MODEL) if hf else None
    if plans_value:
        return plans_value, f"plans key '{PLANS_KEY_2D_MODEL}'"
    return default, f"{owner}.branch2d_source"
