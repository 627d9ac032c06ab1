"""Interpreter-start hook (run by `nnunetv2_mn_ext.pth`): make nnU-Net find our trainers.

Adds the folder of `nnunetv2_mn.trainers` to `nnUNet_extTrainer` (nnU-Net >= 2.8) when it is
not there yet, keeping any folders the user set. Imports nothing heavy and never raises.
Opt out with `NNUNETV2_MN_NO_HOOK=1`.
"""
import os


def trainer_dir():
    """Folder of the shim modules, found without importing torch or nnunetv2."""
    import importlib.util

    spec = importlib.util.find_spec("nnunetv2_mn.trainers")
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.abspath(list(spec.submodule_search_locations)[0])


def register():
    if os.environ.get("NNUNETV2_MN_NO_HOOK"):
        return
    try:
        folder = trainer_dir()
    except Exception:  # a broken install must never break the interpreter
        return
    if folder is None:
        return
    current = [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    if not any(os.path.abspath(p) == folder for p in current):
        os.environ["nnUNet_extTrainer"] = os.pathsep.join(current + [folder])
