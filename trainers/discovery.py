"""How nnU-Net finds the trainers of this package (`nnUNetv2_train -tr NAME`, `nnUNetv2_predict -tr NAME`).

nnU-Net >= 2.8 looks for a trainer it does not ship in the folders listed in `nnUNet_extTrainer`: it imports each
top-level module there by its bare name and drops it from `sys.modules` afterwards. So the variable points at
`lookup/`, a folder holding one module that imports every trainer from this package, where each class keeps one
identity and stays picklable (loader workers). `register()` adds the folder at interpreter start
(`nnunetv2_mn_ext.pth`, installed with the package); `NNUNETV2_MN_NO_HOOK=1` turns that off.

Torch-free at import: the start-up hook runs in every Python process.
"""
import contextlib
import importlib
import io
import os
from typing import Dict, MutableMapping

EXT_TRAINER_VAR = "nnUNet_extTrainer"
NO_HOOK_VAR = "NNUNETV2_MN_NO_HOOK"
#: the folder `nnUNet_extTrainer` points at
LOOKUP_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lookup")
#: modules of this package that define trainers (relative to `nnunetv2_mn.trainers`)
TRAINER_MODULES = ("semisupervised", "mn", "mean_teacher", "self_training", "uamt", "dtc",
                   "variants.mn_variants", "variants.schedules")
#: the line that does by hand what the start-up hook does
EXPORT_LINE = (f'export {EXT_TRAINER_VAR}=$(python -c "from nnunetv2_mn.trainers import discovery; '
               f'print(discovery.LOOKUP_DIR)")')


def is_registered(environ: MutableMapping[str, str]) -> bool:
    return any(os.path.abspath(p) == LOOKUP_DIR for p in environ.get(EXT_TRAINER_VAR, "").split(os.pathsep) if p)


def add_lookup_dir(environ: MutableMapping[str, str]) -> None:
    """Append `LOOKUP_DIR` to `environ[nnUNet_extTrainer]` unless it is there, keeping the user's folders."""
    if not is_registered(environ):
        current = [p for p in environ.get(EXT_TRAINER_VAR, "").split(os.pathsep) if p]
        environ[EXT_TRAINER_VAR] = os.pathsep.join(current + [LOOKUP_DIR])


def register() -> None:
    """The start-up hook: never raises (a broken install must not break the interpreter)."""
    if os.environ.get(NO_HOOK_VAR):
        return
    try:
        add_lookup_dir(os.environ)
    except Exception:
        pass


def trainer_classes() -> Dict[str, type]:
    """Every trainer class defined in `TRAINER_MODULES`, by name (imports torch and nnU-Net)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    classes = {}
    for name in TRAINER_MODULES:
        module = importlib.import_module(f"{__package__}.{name}")
        classes.update({k: v for k, v in vars(module).items() if isinstance(v, type)
                        and issubclass(v, nnUNetTrainer) and v.__module__ == module.__name__})
    return classes


def find_trainer(name: str) -> type:
    """nnU-Net's own lookup, as `nnUNetv2_train -tr NAME` does it, with its prints suppressed."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    with contextlib.redirect_stdout(io.StringIO()):
        return recursive_find_trainer_class_by_name(name)
