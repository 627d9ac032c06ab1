"""Loading pretrained 2D models without surprises: offline-aware, never remote code, clear errors.

Hugging Face `from_pretrained` accepts a hub id or a local directory written by `save_pretrained`.
Without network and without `HF_HUB_OFFLINE=1`, a hub lookup retries for about 45 s before it fails;
with offline mode (or a local directory) we pass `local_files_only=True` so it fails (or succeeds)
at once.
"""
import os
from typing import Any, Optional

#: environment variable from which the M&N trainer takes the 2D model's source (hub id or directory)
MODEL_SOURCE_ENV = "nnUNet_MN_2d_model"

_TRUE = {"1", "on", "yes", "true"}


class Pretrained2DModelNotFound(RuntimeError):
    """The pretrained 2D model could not be loaded; the message says how to provide it."""


def hub_offline() -> bool:
    """Offline mode as set in the environment now (huggingface_hub reads it only at import)."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def looks_like_path(source: str) -> bool:
    """True for sources meant as a local path (hub ids are 'name' or 'namespace/name')."""
    return (os.path.isabs(source) or source.startswith((".", "~")) or source.count("/") > 1
            or "\\" in source or os.path.exists(source))


def how_to_provide(source: str, what: str = "2D model") -> str:
    """The fix-it part of every loading error."""
    return (
        f"Could not load the pretrained {what} from {source!r}. Provide it in one of these ways:\n"
        f"  1. a local directory written by `save_pretrained` (on a machine with internet: "
        f"`AutoModelForSemanticSegmentation.from_pretrained({source!r}).save_pretrained('/path/dir')`, "
        f"copy the directory over), then pass that directory as the source;\n"
        f"  2. a filled Hugging Face cache (HF_HOME) on this machine and `HF_HUB_OFFLINE=1`;\n"
        f"  3. for the M&N trainer: export {MODEL_SOURCE_ENV}=<hub id or directory> (or set the trainer's "
        f"2D-model source attribute) so it is used instead of the default.\n"
        f"`nnUNetv2_mn_doctor` checks this offline."
    )


def _resolve(source: str, local_files_only: Optional[bool], what: str):
    """Expand '~', fail early on a missing directory, decide `local_files_only`."""
    if looks_like_path(source) and not os.path.isdir(os.path.expanduser(source)):
        raise Pretrained2DModelNotFound(f"Directory {source!r} does not exist.\n" + how_to_provide(source, what))
    source = os.path.expanduser(source)
    if local_files_only is None:
        local_files_only = hub_offline() or os.path.isdir(source)
    return source, local_files_only


def load_hf_pretrained(model_cls: Any, source: str, local_files_only: Optional[bool] = None,
                       what: str = "2D model", **kwargs: Any):
    """`model_cls.from_pretrained(source, **kwargs)` with `trust_remote_code=False` and
    `output_loading_info=True`. Returns (model, loading_info). Raises `Pretrained2DModelNotFound`.

    local_files_only: None = decide from the environment (offline mode, or `source` is a directory).
    """
    source, local_files_only = _resolve(source, local_files_only, what)
    try:
        return model_cls.from_pretrained(source, trust_remote_code=False, local_files_only=local_files_only,
                                         output_loading_info=True, **kwargs)
    except (OSError, ValueError) as e:  # hub errors, missing files, offline cache misses, invalid ids
        raise Pretrained2DModelNotFound(f"{type(e).__name__}: {e}\n" + how_to_provide(source, what)) from e


def load_hf_config(config_cls: Any, source: str, local_files_only: Optional[bool] = None,
                   what: str = "2D model", **kwargs: Any):
    """`config_cls.from_pretrained` with the same offline handling and errors as `load_hf_pretrained`."""
    source, local_files_only = _resolve(source, local_files_only, what)
    try:
        return config_cls.from_pretrained(source, trust_remote_code=False, local_files_only=local_files_only, **kwargs)
    except (OSError, ValueError) as e:
        raise Pretrained2DModelNotFound(f"{type(e).__name__}: {e}\n" + how_to_provide(source, what)) from e
