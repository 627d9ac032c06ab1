"""Loading pretrained 2D models without surprises: offline-aware, never remote code, clear errors.

Hugging Face `from_pretrained` accepts a hub id or a local directory written by `save_pretrained`.
Without network and without `HF_HUB_OFFLINE=1`, a hub lookup retries for about 45 s before it fails.
We pass `local_files_only=True` (fail or succeed at once, from the local cache) when offline mode is set,
when the source is a local directory, or when a 2-second connection probe finds the hub unreachable.
Every error names the source, says where it came from (`nnUNet_MN_2d_model` when that variable is set to it)
and how to fix it, including the offline alternative `-tr nnUNetTrainerMN_EffNetLite0`.
"""
import os
import socket
from typing import Any, Optional
from urllib.parse import urlparse

from nnunetv2_mn.settings import DEFAULT_2D_MODEL, ENV_2D_MODEL, OFFLINE_TRAINER

HUB_PROBE_TIMEOUT_S = 2.0

_TRUE = {"1", "on", "yes", "true"}
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


class Pretrained2DModelNotFound(RuntimeError):
    """The pretrained 2D model could not be loaded; the message says how to provide it."""


def hub_offline() -> bool:
    """Offline mode as set in the environment now (huggingface_hub reads it only at import)."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub (HF_ENDPOINT, default huggingface.co) opens within `timeout` seconds.
    Behind a proxy the probe cannot tell, so it answers True and leaves the decision to huggingface_hub."""
    if any(os.environ.get(v) for v in _PROXY_VARS):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def looks_like_path(source: str) -> bool:
    """True for sources meant as a local path (hub ids are 'name' or 'namespace/name')."""
    return (os.path.isabs(source) or source.startswith((".", "~")) or source.count("/") > 1
            or "\\" in source or os.path.exists(source))


def source_origin(source: str) -> str:
    """' (set by nnUNet_MN_2d_model)' when that variable names `source`, else ''."""
    env = os.environ.get(ENV_2D_MODEL, "")
    if env and (env == source or os.path.expanduser(env) == source):
        return f" (set by the environment variable {ENV_2D_MODEL})"
    return ""


def how_to_provide(source: str, what: str = "2D model", unreachable: bool = False) -> str:
    """The fix-it part of every loading error."""
    origin = source_origin(source)
    lines = [f"Could not load the pretrained {what} from {source!r}{origin}."]
    if origin:
        lines.append(f"This variable is the failing source: point {ENV_2D_MODEL} at a directory written by "
                     f"`save_pretrained` (or a hub id), or unset it to use the trainer's default.")
    if unreachable:
        lines.append(f"The Hugging Face hub ({os.environ.get('HF_ENDPOINT') or 'https://huggingface.co'}) is not "
                     f"reachable from here, and the model is not in the local cache.")
    hub_id = DEFAULT_2D_MODEL if looks_like_path(source) else source
    where = (f"the directory {source!r} does not exist or is not a `save_pretrained` directory"
             if looks_like_path(source) else f"{source!r} is a hub id")
    lines += [
        f"Provide it in one of these ways ({where}):",
        f"  1. a local directory written by `save_pretrained` (on a machine with internet: "
        f"`AutoModelForSemanticSegmentation.from_pretrained({hub_id!r}).save_pretrained('/path/dir')`, "
        f"copy the directory over), then export {ENV_2D_MODEL}=/path/dir;",
        "  2. a filled Hugging Face cache (HF_HOME) on this machine and `HF_HUB_OFFLINE=1`;",
        f"  3. for the M&N trainer: export {ENV_2D_MODEL}=<hub id or directory> (or set the trainer's "
        f"2D-model source attribute) so it is used instead of the default;",
        f"  4. or train with -tr {OFFLINE_TRAINER}: its ImageNet-pretrained 2D model ships with pip and works offline.",
        "`nnUNetv2_mn_doctor` checks this offline.",
    ]
    return "\n".join(lines)


def _resolve(source: str, local_files_only: Optional[bool], what: str):
    """Expand '~', fail early on a missing directory, decide `local_files_only` (True when offline mode is set,
    the source is a directory, or the hub is unreachable). Returns (source, local_files_only, unreachable)."""
    if looks_like_path(source) and not os.path.isdir(os.path.expanduser(source)):
        raise Pretrained2DModelNotFound(f"Directory {source!r}{source_origin(source)} does not exist.\n"
                                        + how_to_provide(source, what))
    source = os.path.expanduser(source)
    unreachable = False
    if local_files_only is None:
        local_files_only = hub_offline() or os.path.isdir(source)
        if not local_files_only and not hub_reachable():
            local_files_only = unreachable = True  # the local cache or nothing: no 45 s of retries
    return source, local_files_only, unreachable


def load_hf_pretrained(model_cls: Any, source: str, local_files_only: Optional[bool] = None,
                       what: str = "2D model", **kwargs: Any):
    """`model_cls.from_pretrained(source, **kwargs)` with `trust_remote_code=False` and
    `output_loading_info=True`. Returns (model, loading_info). Raises `Pretrained2DModelNotFound`.

    local_files_only: None = decide from the environment (offline mode, or `source` is a directory).
    """
    source, local_files_only, unreachable = _resolve(source, local_files_only, what)
    try:
        return model_cls.from_pretrained(source, trust_remote_code=False, local_files_only=local_files_only,
                                         output_loading_info=True, **kwargs)
    except (OSError, ValueError) as e:  # hub errors, missing files, offline cache misses, invalid ids
        raise Pretrained2DModelNotFound(f"{type(e).__name__}: {e}\n"
                                        + how_to_provide(source, what, unreachable)) from e


def load_hf_config(config_cls: Any, source: str, local_files_only: Optional[bool] = None,
                   what: str = "2D model", **kwargs: Any):
    """`config_cls.from_pretrained` with the same offline handling and errors as `load_hf_pretrained`."""
    source, local_files_only, unreachable = _resolve(source, local_files_only, what)
    try:
        return config_cls.from_pretrained(source, trust_remote_code=False, local_files_only=local_files_only, **kwargs)
    except (OSError, ValueError) as e:
        raise Pretrained2DModelNotFound(f"{type(e).__name__}: {e}\n"
                                        + how_to_provide(source, what, unreachable)) from e
