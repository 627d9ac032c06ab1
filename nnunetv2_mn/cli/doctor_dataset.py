"""`nnUNetv2_mn_doctor -d D`: check one data set end to end without training.

raw layout (dataset.json, imagesTr/labelsTr naming and channels), the unlabelled images (naming, channels, damaged
files, label leaks, geometry), the preprocessing state (plans, labelled and unlabelled folders complete and
current), the label values of the preprocessed labelled cases, and the channel count of every preprocessed case.
Each check returns a `CheckResult` (`doctor_result.py`).
"""
import os
from typing import Callable, List, Optional

from nnunetv2_mn.cli.doctor_result import FAIL, INFO, OK, WARN, CheckResult


class _Context:
    """What the checks share: names, folders, dataset.json and plans (None where missing)."""

    def __init__(self, dataset: str, plans_identifier: str, configuration: str):
        from nnunetv2_mn.data.unlabeled import _dataset_name
        self.dataset, self.plans_identifier, self.configuration = dataset, plans_identifier, configuration
        self.name = _dataset_name(dataset)
        self.raw = os.path.join(os.environ.get("nnUNet_raw", ""), self.name)
        self.pre = os.path.join(os.environ.get("nnUNet_preprocessed", ""), self.name)
        self.dataset_json = _load_json(os.path.join(self.raw, "dataset.json"))
        self.plans_file = os.path.join(self.pre, plans_identifier + ".json")

    @property
    def fix_preprocess(self) -> str:
        return (f"nnUNetv2_plan_and_preprocess -d {self.dataset} -c {self.configuration}\n"
                f"nnUNetv2_mn_preprocess_unlabeled -d {self.dataset} -c {self.configuration} -p {self.plans_identifier}")

    def plans_manager(self):
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
        if not os.path.isfile(self.plans_file):
            return None
        pm = PlansManager(self.plans_file)
        return pm if self.configuration in pm.available_configurations else None


def _load_json(path: str) -> Optional[dict]:
    import json
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _labeled_cases(ctx: _Context):
    from nnunetv2_mn.data.unlabeled import _labeled_cases
    return _labeled_cases(ctx.raw, ctx.dataset_json)


def check_raw_layout(ctx: _Context) -> CheckResult:
    name = f"{ctx.name} raw layout"
    if ctx.dataset_json is None:
        return CheckResult(name, FAIL, f"{os.path.join(ctx.raw, 'dataset.json')} is missing or not valid JSON",
                           "see nnU-Net's dataset_format.md")
    missing = [k for k in ("channel_names", "labels", "file_ending") if k not in ctx.dataset_json]
    if missing:
        return CheckResult(name, FAIL, f"dataset.json lacks {missing}", "see nnU-Net's dataset_format.md")
    from nnunetv2_mn.data.validation import UnlabeledDataError
    try:
        cases = _labeled_cases(ctx)
    except UnlabeledDataError as e:
        return CheckResult(name, FAIL, f"imagesTr: {e}")
    if not cases:
        return CheckResult(name, FAIL, f"no images in {os.path.join(ctx.raw, 'imagesTr')}")
    fe = ctx.dataset_json["file_ending"]
    no_label = [c for c in cases if not os.path.isfile(os.path.join(ctx.raw, "labelsTr", c + fe))]
    if no_label:
        return CheckResult(name, FAIL, f"{len(no_label)} imagesTr case(s) have no labelsTr/{{CASE}}{fe}: {no_label[:5]}")
    n = ctx.dataset_json.get("numTraining")
    if n is not None and n != len(cases):
        return CheckResult(name, FAIL, f"dataset.json numTraining is {n} but imagesTr holds {len(cases)} case(s)",
                           f"set numTraining to {len(cases)}")
    return CheckResult(name, OK, f"{len(cases)} labelled case(s), {len(ctx.dataset_json['channel_names'])} "
                                 f"channel(s) each, labels {ctx.dataset_json['labels']}")


def check_unlabeled_images(ctx: _Context) -> CheckResult:
    from nnunetv2_mn.data.unlabeled import find_unlabeled_images, validate_raw_cases
    from nnunetv2_mn.data.validation import UnlabeledDataError, check_geometry
    name = f"{ctx.name} unlabelled images"
    if ctx.dataset_json is None:
        return CheckResult(name, INFO, "skipped (no dataset.json)")
    pm = ctx.plans_manager()
    reader = pm.image_reader_writer_class if pm is not None else None
    try:
        cases = find_unlabeled_images(ctx.raw, ctx.dataset_json)
        validate_raw_cases(ctx.raw, cases, ctx.dataset_json, reader, None, accept_geometry=True, verbose=False)
        problems = check_geometry({c: v["images"] for c, v in cases.items()}, _labeled_cases(ctx), accept=True)
    except UnlabeledDataError as e:
        return CheckResult(name, FAIL, str(e).splitlines()[0], "\n".join(str(e).splitlines()[1:]))
    if problems:
        return CheckResult(name, WARN, f"{len(problems)} image(s) differ in geometry from the labelled images: "
                                       + "; ".join(problems[:3]),
                           "check their headers; if they are right, preprocess with --accept_geometry")
    return CheckResult(name, OK, f"{len(cases)} unlabelled case(s): readable, complete, no labelled case among them, "
                                 f"spacing and orientation like the labelled images")


def check_preprocessing(ctx: _Context) -> CheckResult:
    from nnunetv2_mn.data.unlabeled import (_load_manifest, list_unlabeled_cases, plans_fingerprint,
                                            unlabeled_state_problems)
    from nnunetv2_mn.paths import unlabeled_preprocessed_dir
    name = f"{ctx.name} preprocessing ({ctx.plans_identifier} {ctx.configuration})"
    pm = ctx.plans_manager()
    if pm is None:
        return CheckResult(name, FAIL, f"{ctx.plans_file} is missing or has no configuration {ctx.configuration}",
                           ctx.fix_preprocess)
    cm = pm.get_configuration(ctx.configuration)
    labelled = os.path.join(ctx.pre, cm.data_identifier)
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    n_raw = len(_labeled_cases(ctx)) if ctx.dataset_json else None
    n_pre = len(infer_dataset_class(labelled).get_identifiers(labelled)) if os.path.isdir(labelled) else 0
    if n_pre == 0 or (n_raw is not None and n_pre != n_raw):
        return CheckResult(name, FAIL, f"{labelled} holds {n_pre} of {n_raw} labelled case(s)", ctx.fix_preprocess)
    unl = unlabeled_preprocessed_dir(ctx.pre, cm.data_identifier)
    if not os.path.isdir(unl) or not list_unlabeled_cases(unl):
        return CheckResult(name, FAIL, f"no preprocessed unlabelled cases in {unl}", ctx.fix_preprocess)
    ids = list_unlabeled_cases(unl)
    dataset_json = _load_json(os.path.join(ctx.pre, "dataset.json")) or ctx.dataset_json
    if _load_manifest(unl).get("plans_fingerprint") != plans_fingerprint(pm, cm, dataset_json):
        return CheckResult(name, FAIL, f"the unlabelled cases in {unl} were preprocessed with other plans",
                           ctx.fix_preprocess)
    problems = unlabeled_state_problems(unl, ids, ctx.raw, ctx.dataset_json)
    if problems:
        return CheckResult(name, FAIL, "; ".join(problems), ctx.fix_preprocess)
    return CheckResult(name, OK, f"{n_pre} labelled and {len(ids)} unlabelled case(s) preprocessed, complete and "
                                 f"current")


def _datasets(ctx: _Context):
    """(labelled dataset, identifiers, unlabelled dataset, identifiers) of the preprocessed folders, or None."""
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    from nnunetv2_mn.data.unlabeled import list_unlabeled_cases
    from nnunetv2_mn.paths import unlabeled_preprocessed_dir
    from nnunetv2_mn.training.dataloading import UnlabeledDataset
    pm = ctx.plans_manager()
    if pm is None:
        return None
    did = pm.get_configuration(ctx.configuration).data_identifier
    labelled, unl = os.path.join(ctx.pre, did), unlabeled_preprocessed_dir(ctx.pre, did)
    if not os.path.isdir(labelled):
        return None
    cls = infer_dataset_class(labelled)
    ids = cls.get_identifiers(labelled)
    ids_u = list_unlabeled_cases(unl) if os.path.isdir(unl) else []
    return cls(labelled, ids), ids, UnlabeledDataset(unl, ids_u, cls) if ids_u else None, ids_u


def check_label_values_of(ctx: _Context) -> CheckResult:
    from nnunetv2.utilities.label_handling.label_handling import LabelManager
    from nnunetv2_mn.data.validation import UnlabeledDataError, check_label_values
    name = f"{ctx.name} label values"
    found = _datasets(ctx)
    if found is None or ctx.dataset_json is None:
        return CheckResult(name, INFO, "skipped (labelled cases not preprocessed)")
    dataset, ids, _, _ = found
    labels = ctx.dataset_json["labels"]
    label_manager = LabelManager(labels, ctx.dataset_json.get("regions_class_order"))
    try:
        check_label_values(dataset, ids, label_manager, os.path.join(ctx.raw, "dataset.json"))
    except UnlabeledDataError as e:
        return CheckResult(name, FAIL, str(e).split(". Fix")[0], "fix labelsTr (or dataset.json 'labels'), then "
                                                                  "run nnUNetv2_plan_and_preprocess again")
    return CheckResult(name, OK, f"the {len(ids)} preprocessed labelled case(s) hold only labels of dataset.json")


def check_channels(ctx: _Context) -> CheckResult:
    name = f"{ctx.name} channel count"
    found = _datasets(ctx)
    if found is None or ctx.dataset_json is None:
        return CheckResult(name, INFO, "skipped (not preprocessed)")
    expected = len(ctx.dataset_json["channel_names"])
    dataset, ids, dataset_u, ids_u = found
    wrong = [f"{i}: {d.load_case(i)[0].shape[0]}" for d, keys in ((dataset, ids), (dataset_u, ids_u)) if d
             for i in keys if d.load_case(i)[0].shape[0] != expected]
    if wrong:
        return CheckResult(name, FAIL, f"{len(wrong)} preprocessed case(s) do not have {expected} channel(s): "
                                       f"{wrong[:5]}", ctx.fix_preprocess)
    return CheckResult(name, OK, f"{len(ids)} labelled and {len(ids_u)} unlabelled case(s) with {expected} channel(s)")


def dataset_checks(dataset: str, plans_identifier: str = "nnUNetPlans",
                   configuration: str = "3d_fullres") -> List[Callable[[], CheckResult]]:
    """The checks of one data set, in order (each returns a CheckResult; an unknown data set is one FAIL)."""
    from nnunetv2_mn.data.validation import UnlabeledDataError
    try:
        ctx = _Context(dataset, plans_identifier, configuration)
    except UnlabeledDataError as e:
        failure = CheckResult(f"data set {dataset}", FAIL, str(e), "check -d and $nnUNet_raw")
        return [lambda: failure]
    return [lambda f=f: f(ctx) for f in (check_raw_layout, check_unlabeled_images, check_preprocessing,
                                         check_label_values_of, check_channels)]
