"""`nnUNetv2_mn_doctor`: check that nnunetv2-mn can train here, and say how to fix what cannot.

    nnUNetv2_mn_doctor [--trainer NAME ...] [--2d_model KIND[:SOURCE]] [-d DATASET [-p PLANS] [-c CONFIGURATION]]

One line per check (OK / WARN / INFO / FAIL), followed by the fix for each problem. Exit code 1 if any check
FAILs. Every check is a small function returning a `CheckResult`, so tests (and other tools) can call them alone.
"""
import argparse
import os
import re
import sys
import warnings
from typing import Callable, List, Optional, Sequence, Tuple

from nnunetv2_mn.cli.doctor_result import FAIL, INFO, OK, WARN, CheckResult
from nnunetv2_mn.settings import DEFAULT_2D_MODEL, ENV_2D_MODEL, OFFLINE_TRAINER, resolve_2d_source
from nnunetv2_mn.trainers import discovery
from nnunetv2_mn.trainers.discovery import EXT_TRAINER_VAR

NNUNET_REQUIREMENT = ">=2.8.1,<2.9"
PATH_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
PATHS_DOC = "https://github.com/MIC-DKFZ/nnUNet/blob/master/documentation/setting_up_paths.md"
DEFAULT_TRAINERS = ("nnUNetTrainerMN", "nnUNetTrainerMeanTeacher", "nnUNetTrainerMN_EffNetLite0")


# ------------------------------------------------------------------------------------------------ checks
def _version_tuple(version: str) -> Tuple[int, ...]:
    """'2.8.1' -> (2, 8, 1); '2.9.0rc1' -> (2, 9, 0): the leading number of each of the first three parts."""
    parts = []
    for piece in version.split(".")[:3]:
        match = re.match(r"\d+", piece)
        parts.append(int(match.group()) if match else 0)
    return tuple(parts)


def check_nnunet_version() -> CheckResult:
    from importlib.metadata import PackageNotFoundError, version

    fix = f'pip install "nnunetv2{NNUNET_REQUIREMENT}"'
    try:
        found = version("nnunetv2")
    except PackageNotFoundError:
        return CheckResult("nnunetv2", FAIL, "nnunetv2 is not installed", fix)
    if (2, 8, 1) <= _version_tuple(found) < (2, 9):
        return CheckResult("nnunetv2", OK, f"nnunetv2 {found} ({NNUNET_REQUIREMENT})")
    return CheckResult("nnunetv2", FAIL, f"nnunetv2 {found} is installed; nnunetv2-mn needs {NNUNET_REQUIREMENT} "
                                         f"(nnUNet_extTrainer exists only from 2.8)", fix)


def check_path_var(name: str, environ=None) -> CheckResult:
    environ = os.environ if environ is None else environ
    value = environ.get(name)
    if not value:
        return CheckResult(name, FAIL, f"{name} is not set",
                           f"export {name}=/path/to/{name}   (details: {PATHS_DOC})")
    if not os.path.isdir(value):
        return CheckResult(name, FAIL, f"{name}={value} does not exist",
                           f"mkdir -p {value}   (or export {name}=<an existing folder>; details: {PATHS_DOC})")
    return CheckResult(name, OK, f"{name}={value}")


def check_ext_trainer(environ=None) -> CheckResult:
    environ = os.environ if environ is None else environ
    folder = discovery.LOOKUP_DIR
    if discovery.is_registered(environ):
        return CheckResult(EXT_TRAINER_VAR, OK, f"{EXT_TRAINER_VAR} contains {folder}")
    why = (f"the start-up hook is disabled ({discovery.NO_HOOK_VAR} is set)" if environ.get(discovery.NO_HOOK_VAR)
           else "the start-up hook nnunetv2_mn_ext.pth did not run (installed with an old setuptools?)")
    return CheckResult(EXT_TRAINER_VAR, FAIL, f"{EXT_TRAINER_VAR} does not contain {folder}: {why}; "
                                              f"nnUNetv2_train -tr cannot find our trainers", discovery.EXPORT_LINE)


def check_trainer(name: str) -> CheckResult:
    """nnU-Net's own lookup (as `nnUNetv2_train -tr NAME` does it), with its prints suppressed."""
    label = f"trainer {name}"
    try:
        cls = discovery.find_trainer(name)
    except Exception as e:
        first_line = (str(e).strip().splitlines() or [""])[0]
        fix = (f"{discovery.EXPORT_LINE}\n(then re-run nnUNetv2_mn_doctor; see the {EXT_TRAINER_VAR} check above)"
               if "Could not find requested nnunet trainer" in str(e) else _torchvision_fix(e))
        return CheckResult(label, FAIL, f"nnU-Net's trainer lookup failed: {type(e).__name__}: {first_line}", fix)
    module = getattr(cls, "__module__", "")
    if not module.startswith("nnunetv2_mn"):
        return CheckResult(label, FAIL, f"nnU-Net found {name} in {module}, not in nnunetv2_mn (a class of the same "
                                        f"name shadows ours)", f"remove or rename the other {name}")
    return CheckResult(label, OK, f"{name} found by nnU-Net's lookup ({module})")


def _torchvision_fix(error: BaseException) -> str:
    if "torchvision::nms" in str(error):
        return ("torch and torchvision do not match: pip install torch==X torchvision==Y with a matching pair, "
                "e.g. pip install torch==2.14.1 torchvision==0.29.1 (see README)")
    return ""


def _import_version(module_name: str) -> str:
    import importlib
    return getattr(importlib.import_module(module_name), "__version__", "?")


def check_torch_stack() -> CheckResult:
    found = []
    for module_name in ("torch", "torchvision", "timm"):
        try:
            found.append(f"{module_name} {_import_version(module_name)}")
        except Exception as e:
            fix = _torchvision_fix(e) or f"pip install {module_name} (a version matching torch; see README)"
            return CheckResult("torch stack", FAIL, f"import {module_name} failed: {type(e).__name__}: "
                                                    f"{(str(e).strip().splitlines() or [''])[0]}", fix)
    return CheckResult("torch stack", OK, ", ".join(found) + " import")


def check_cuda() -> CheckResult:
    try:
        import torch
        if torch.cuda.is_available():
            return CheckResult("CUDA", OK, f"CUDA available: {torch.cuda.get_device_name(0)}")
    except Exception as e:
        return CheckResult("CUDA", INFO, f"CUDA could not be queried ({type(e).__name__}); training will run on "
                                         f"the CPU (-device cpu) and is slow")
    return CheckResult("CUDA", INFO, "no CUDA GPU: training will run on the CPU (-device cpu) and is slow")


def default_segformer_source(environ=None) -> Tuple[str, str]:
    """(source, where it came from), resolved as nnUNetTrainerMN does without plans (`resolve_2d_source`)."""
    source, origin = resolve_2d_source("segformer", DEFAULT_2D_MODEL, environ=environ)
    return source, (f"from {ENV_2D_MODEL}" if origin.startswith("environment") else "nnUNetTrainerMN's default")


def segformer_fix(source: str, origin: str = "") -> str:
    if origin == f"from {ENV_2D_MODEL}":
        first = (f"{ENV_2D_MODEL}={source} is the failing source: point it at a `save_pretrained` directory, "
                 f"or unset it to use {DEFAULT_2D_MODEL}\n")
    else:
        first = ""
    return (first + f"on a machine with internet: hf download {DEFAULT_2D_MODEL} --local-dir DIR\n"
            f"  (older huggingface_hub: huggingface-cli download {DEFAULT_2D_MODEL} --local-dir DIR),\n"
            f"copy DIR here, then: export {ENV_2D_MODEL}=DIR\n"
            f"or train with -tr {OFFLINE_TRAINER} (its ImageNet weights ship with pip; works offline)")


#: the fine-tuning strategy of the trainer that uses each 2D model kind by default
KIND_TRAINERS = {"segformer": "nnUNetTrainerMN", "hf": "nnUNetTrainerMN", "resunet": "nnUNetTrainerMN_ResUNet",
                 "effnet_lite0": "nnUNetTrainerMN_EffNetLite0"}


def trainer_finetune(kind: str) -> str:
    """`branch2d_finetune` of the trainer that uses `kind` (EfficientNet-Lite0: 'whole', SegFormer: 'lora')."""
    from nnunetv2_mn.trainers.discovery import trainer_classes
    return trainer_classes()[KIND_TRAINERS[kind]].branch2d_finetune if kind in KIND_TRAINERS else "decoder"


def check_2d_model(kind: str, source: Optional[str] = None, required: bool = True,
                   origin: str = "") -> CheckResult:
    """Build the 2D model from local files only (`check_branch2d_offline`) with its trainer's fine-tuning.
    Not `required`: a failure is a WARN."""
    label = f"2D model {kind}"
    shown = f"{kind} from {source!r}" if source else f"{kind} (packaged default)"
    try:
        from nnunetv2_mn.models2d.registry import check_branch2d_offline
        ok, message = check_branch2d_offline(kind, source, trainer_finetune(kind))
    except Exception as e:  # unknown kind, broken import
        ok, message = False, f"{type(e).__name__}: {e}"
    if ok:
        return CheckResult(label, OK, f"{shown} loads offline{' (' + origin + ')' if origin else ''}: "
                                      f"{message.removeprefix('OK: ')}")
    status = FAIL if required else WARN
    fix = segformer_fix(source or DEFAULT_2D_MODEL, origin) if kind in ("segformer", "hf") \
        else _first_lines(message, 6)
    summary = (message.strip().splitlines() or [""])[0]
    where = f" ({origin})" if origin else ""
    return CheckResult(label, status, f"{shown}{where} does not load offline: {summary}", fix)


def _first_lines(text: str, n: int) -> str:
    return "\n".join(text.strip().splitlines()[:n])


# ------------------------------------------------------------------------------------------------ driver
def parse_2d_model(value: str) -> Tuple[str, Optional[str]]:
    """'KIND' or 'KIND:SOURCE' -> (kind, source or None)."""
    kind, _, source = value.partition(":")
    return kind.strip(), (source.strip() or None)


def build_checks(trainers: Sequence[str], model2d: Optional[str], dataset: Optional[str] = None,
                 plans_identifier: str = "nnUNetPlans", configuration: str = "3d_fullres"
                 ) -> List[Callable[[], CheckResult]]:
    checks = [check_nnunet_version, *[lambda n=n: check_path_var(n) for n in PATH_VARS], check_ext_trainer,
              check_torch_stack, *[lambda t=t: check_trainer(t) for t in trainers], check_cuda]
    if model2d:
        kind, source = parse_2d_model(model2d)
        origin = ""
        if source is None and kind == "segformer":
            source, origin = default_segformer_source()
        checks.append(lambda: check_2d_model(kind, source, required=True, origin=origin))
    else:
        source, origin = default_segformer_source()
        explicit = origin == f"from {ENV_2D_MODEL}"  # a setting that cannot load is an error, not a warning
        checks.append(lambda: check_2d_model("segformer", source, required=explicit, origin=origin))
        checks.append(lambda: check_2d_model("effnet_lite0", None, required=True))
    if dataset is not None:
        from nnunetv2_mn.cli.doctor_dataset import dataset_checks
        checks += dataset_checks(dataset, plans_identifier, configuration)
    return checks


def format_result(result: CheckResult) -> str:
    lines = [f"[{result.status:<4}] {result.name}: {result.message}"]
    if result.fix and result.status != OK:
        fix_lines = result.fix.splitlines()
        lines.append(f"       fix: {fix_lines[0]}")
        lines += [f"            {line}" for line in fix_lines[1:]]
    return "\n".join(lines)


def run_checks(checks: Sequence[Callable[[], CheckResult]], out=None) -> List[CheckResult]:
    out = out or sys.stdout
    results = []
    with warnings.catch_warnings():  # deprecation noise of the imported libraries is not the user's problem
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        for check in checks:
            result = check()
            results.append(result)
            print(format_result(result), file=out, flush=True)
    return results


def _parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="nnUNetv2_mn_doctor",
                                description="Check that nnunetv2-mn can plan, train and predict here; print fixes.")
    p.add_argument("--trainer", nargs="+", default=list(DEFAULT_TRAINERS), metavar="NAME",
                   help=f"trainers to look up with nnU-Net's own lookup (default: {' '.join(DEFAULT_TRAINERS)})")
    p.add_argument("--2d_model", dest="model2d", default=None, metavar="KIND[:SOURCE]",
                   help="check only this 2D model, and FAIL if it does not load offline: KIND is segformer, hf, "
                        "resunet or effnet_lite0; SOURCE a hub id, directory or weights file (default: SegFormer "
                        f"from ${ENV_2D_MODEL} or {DEFAULT_2D_MODEL} as a WARN, plus effnet_lite0)")
    p.add_argument("-d", dest="dataset", default=None, metavar="DATASET",
                   help="also check this data set end to end without training: raw layout, unlabelled images, "
                        "preprocessing state, label values, channel count")
    p.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier for -d (default: nnUNetPlans)")
    p.add_argument("-c", dest="configuration", default="3d_fullres",
                   help="configuration for -d (default: 3d_fullres)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = _parse_args(argv)
    print("nnUNetv2_mn_doctor: checking nnunetv2-mn (takes ~20 s: it imports nnU-Net's trainers)", flush=True)
    results = run_checks(build_checks(args.trainer, args.model2d, args.dataset, args.plans, args.configuration))
    failed = [r for r in results if r.failed]
    warned = [r for r in results if r.status == WARN]
    if failed:
        print(f"\n{len(failed)} check(s) FAILED: {', '.join(r.name for r in failed)}. Apply the fixes above and "
              f"run nnUNetv2_mn_doctor again.")
        return 1
    print(f"\nAll checks passed{f' ({len(warned)} warning(s))' if warned else ''}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
