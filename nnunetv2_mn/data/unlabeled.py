"""Preprocess unlabelled raw images with exactly the plans of a labelled nnU-Net data set.

raw:          $nnUNet_raw/DatasetXXX_Name/imagesUnlabeled/{CASE}_{XXXX}{file_ending}   (+ imagesTs/ if asked)
preprocessed: $nnUNet_preprocessed/DatasetXXX_Name/{data_identifier}_unlabeled/{CASE}.b2nd, _seg.b2nd, .pkl

Each case goes through the plans' own preprocessor class (`run_case_save` with `seg_file=None`: transpose, crop to
nonzero, normalisation with the plans' intensity statistics, resampling). `_seg.b2nd` is only the nonzero mask
(0 inside, -1 outside) and the `.pkl` has no `class_locations`: never use them as supervision.

`unlabeled_manifest.json` in the output folder records the raw files (size, mtime) of each case and a hash of the
preprocessing-relevant plans; a rerun only preprocesses new or changed cases and removes vanished ones. The manifest
says `"complete": true` only after a run that preprocessed every case; the trainers refuse anything else
(`check_preprocessed_unlabeled`).

Before anything is written, the raw images are checked (`nnunetv2_mn.data.validation`): damaged or truncated files,
cases that are labelled cases (same name or same voxel data), spacing or orientation unlike the labelled images.
"""
import hashlib
import json
import multiprocessing
import os
import re
from time import sleep
from typing import Dict, List, Optional, Sequence, Union

from batchgenerators.utilities.file_and_folder_operations import load_json, save_json, subfiles

from nnunetv2_mn.data.validation import ImageDigests, UnlabeledDataError, check_geometry, check_not_labeled
from nnunetv2_mn.paths import UNLABELED_RAW_FOLDER, unlabeled_preprocessed_dir, unlabeled_raw_dir

MANIFEST = "unlabeled_manifest.json"
MANIFEST_VERSION = 2
OUTPUT_SUFFIXES = (".b2nd", "_seg.b2nd", ".pkl")
#: set to 1 to train on an incomplete or stale set of preprocessed unlabelled cases anyway
ALLOW_PARTIAL_ENV = "nnUNet_MN_allow_partial_unlabeled"

__all__ = ["UnlabeledDataError", "MANIFEST", "preprocess_unlabeled", "get_unlabeled_preprocessed_folder",
           "list_unlabeled_cases", "check_preprocessed_unlabeled", "plans_fingerprint"]


# ----------------------------------------------------------------------------------------------------- lookups
def _dataset_name(dataset: Union[str, int]) -> str:
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    try:
        return maybe_convert_to_dataset_name(dataset)
    except (RuntimeError, ValueError) as e:
        raise UnlabeledDataError(f"Unknown data set {dataset!r}: {e}")


def _load_plans(dataset_name: str, plans_identifier: str, configurations: Sequence[str]):
    """(PlansManager, dataset_json) from nnUNet_preprocessed; clear error if the data set was not planned."""
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import convert_dataset_name_to_id
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    folder = os.path.join(nnUNet_preprocessed.require(), dataset_name)
    plans_file = os.path.join(folder, plans_identifier + ".json")
    dataset_json_file = os.path.join(folder, "dataset.json")
    if not (os.path.isfile(plans_file) and os.path.isfile(dataset_json_file)):
        raise UnlabeledDataError(
            f"{dataset_name} is not planned/preprocessed yet ({plans_file} or {dataset_json_file} missing). Run "
            f"`nnUNetv2_plan_and_preprocess -d {convert_dataset_name_to_id(dataset_name)} -c {' '.join(configurations)}` first "
            f"(with -pl/-overwrite_plans_name if you use plans other than {plans_identifier}).")
    plans_manager = PlansManager(plans_file)
    missing = [c for c in configurations if c not in plans_manager.available_configurations]
    if missing:
        raise UnlabeledDataError(f"Configuration(s) {missing} not in {plans_file}. "
                                 f"Available: {plans_manager.available_configurations}.")
    return plans_manager, load_json(dataset_json_file)


def get_unlabeled_preprocessed_folder(dataset: Union[str, int], configuration: str = "3d_fullres",
                                      plans_identifier: str = "nnUNetPlans") -> str:
    """`$nnUNet_preprocessed/DatasetXXX_Name/{data_identifier}_unlabeled` for this configuration."""
    from nnunetv2.paths import nnUNet_preprocessed
    name = _dataset_name(dataset)
    plans_manager, _ = _load_plans(name, plans_identifier, [configuration])
    data_identifier = plans_manager.get_configuration(configuration).data_identifier
    return unlabeled_preprocessed_dir(os.path.join(nnUNet_preprocessed.require(), name), data_identifier)


def list_unlabeled_cases(preprocessed_folder: str) -> List[str]:
    """Sorted identifiers of the preprocessed unlabelled cases in `preprocessed_folder`."""
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
    if not os.path.isdir(preprocessed_folder):
        raise UnlabeledDataError(f"{preprocessed_folder} does not exist. Run `nnUNetv2_mn_preprocess_unlabeled` "
                                 f"for this data set and configuration first.")
    return sorted(nnUNetDatasetBlosc2.get_identifiers(preprocessed_folder))


# ----------------------------------------------------------------------------------------------------- raw cases
def _naming_help(folder: str, file_ending: str, num_channels: int) -> str:
    channels = ", ".join(f"{{CASE}}_{c:04d}{file_ending}" for c in range(num_channels))
    return (f"Put unlabelled images into {folder} named {{CASE}}_{{XXXX}}{file_ending}, XXXX = 4-digit channel "
            f"index ({num_channels} channel(s) per case: {channels}), exactly like imagesTr.")


def _case_files(folder: str, file_ending: str, channel_names: dict) -> Dict[str, List[str]]:
    """{case: [channel files in channel order]}; raise on bad names or a wrong channel set."""
    num_channels = len(channel_names)
    pattern = re.compile(r"(.+)_(\d{4})" + re.escape(file_ending))
    by_case: Dict[str, Dict[int, str]] = {}
    for f in subfiles(folder, suffix=file_ending, join=False, sort=True):
        m = pattern.fullmatch(f)
        if m is None:
            raise UnlabeledDataError(f"{os.path.join(folder, f)} does not follow the naming convention. "
                                     + _naming_help(folder, file_ending, num_channels))
        by_case.setdefault(m.group(1), {})[int(m.group(2))] = os.path.join(folder, f)
    for case, ch in by_case.items():
        if sorted(ch) != list(range(num_channels)):
            raise UnlabeledDataError(
                f"Case {case} in {folder} has channel(s) {[f'{c:04d}' for c in sorted(ch)]}, but dataset.json "
                f"channel_names {channel_names} expects {num_channels} channel(s) "
                f"{[f'{c:04d}' for c in range(num_channels)]}.")
    return {case: [ch[c] for c in range(num_channels)] for case, ch in sorted(by_case.items())}


def find_unlabeled_images(raw_dataset_dir: str, dataset_json: dict,
                          include_imagesTs: bool = False) -> Dict[str, dict]:
    """{case: {'folder': 'imagesUnlabeled' or 'imagesTs', 'images': [files]}} of the raw data set."""
    fe, channel_names = dataset_json["file_ending"], dataset_json["channel_names"]
    unl = unlabeled_raw_dir(raw_dataset_dir)
    folders = [UNLABELED_RAW_FOLDER] + (["imagesTs"] if include_imagesTs else [])
    if not os.path.isdir(unl) and not include_imagesTs:
        raise UnlabeledDataError(f"No {UNLABELED_RAW_FOLDER} folder in {raw_dataset_dir}. "
                                 + _naming_help(unl, fe, len(channel_names)))
    if include_imagesTs and not os.path.isdir(os.path.join(raw_dataset_dir, "imagesTs")):
        raise UnlabeledDataError(f"--include_imagesTs given but {raw_dataset_dir} has no imagesTs folder.")
    cases: Dict[str, dict] = {}
    for folder in folders:
        path = os.path.join(raw_dataset_dir, folder)
        if not os.path.isdir(path):
            continue
        for case, files in _case_files(path, fe, channel_names).items():
            if case in cases:
                raise UnlabeledDataError(f"Case {case} is in both {cases[case]['folder']} and {folder}; "
                                         f"rename one of them.")
            cases[case] = {"folder": folder, "images": files}
    if not cases:
        raise UnlabeledDataError(f"No images ending in {fe} in {' or '.join(os.path.join(raw_dataset_dir, f) for f in folders)}. "
                                 + _naming_help(unl, fe, len(channel_names)))
    return cases


# ----------------------------------------------------------------------------------------------------- manifest
def _file_state(files: List[str]) -> Dict[str, dict]:
    state = {}
    for f in files:
        st = os.stat(f)
        state[os.path.basename(f)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return state


def plans_fingerprint(plans_manager, configuration_manager, dataset_json: dict) -> str:
    """Hash of everything in the plans that changes the preprocessed arrays (not the network, batch or patch size:
    nnU-Net's ResEnc presets share the data folder of the default plans, and so do their unlabelled cases)."""
    c = configuration_manager.configuration
    keys = ("data_identifier", "preprocessor_name", "spacing", "normalization_schemes", "use_mask_for_norm",
            "resampling_fn_data", "resampling_fn_data_kwargs", "resampling_fn_seg", "resampling_fn_seg_kwargs")
    relevant = {"configuration": {k: c.get(k) for k in keys},
                "transpose_forward": plans_manager.transpose_forward,
                "image_reader_writer": plans_manager.plans.get("image_reader_writer"),
                "intensity": plans_manager.foreground_intensity_properties_per_channel,
                "channel_names": dataset_json.get("channel_names")}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()


def _load_manifest(output_folder: str) -> dict:
    path = os.path.join(output_folder, MANIFEST)
    if not os.path.isfile(path):
        return {}
    try:
        return load_json(path)
    except (ValueError, OSError):
        return {}


def _save_manifest(output_folder: str, manifest: dict) -> None:
    tmp = os.path.join(output_folder, MANIFEST + ".tmp")
    save_json(manifest, tmp, sort_keys=False)
    os.replace(tmp, os.path.join(output_folder, MANIFEST))


def _outputs_exist(output_folder: str, case: str) -> bool:
    return all(os.path.isfile(os.path.join(output_folder, case + s)) for s in OUTPUT_SUFFIXES)


def _remove_case(output_folder: str, case: str) -> None:
    for s in OUTPUT_SUFFIXES:
        f = os.path.join(output_folder, case + s)
        if os.path.isfile(f):
            os.remove(f)


def _plan_work(cases: Dict[str, dict], manifest: dict, fingerprint: str, output_folder: str):
    """(to do, unchanged, to remove) case lists against the previous manifest and the output folder."""
    old = manifest.get("cases", {}) if manifest.get("plans_fingerprint") == fingerprint else {}
    todo, unchanged = [], []
    for case, info in cases.items():
        entry = old.get(case)
        same = (entry is not None and entry.get("folder") == info["folder"]
                and entry.get("files") == info["files_state"] and _outputs_exist(output_folder, case))
        (unchanged if same else todo).append(case)
    present = set(list_unlabeled_cases(output_folder)) | set(manifest.get("cases", {}))
    return todo, unchanged, sorted(present - set(cases))


def _raw_case_problems(manifest: dict, raw_dataset_dir: Optional[str], dataset_json: Optional[dict]) -> List[str]:
    """Raw unlabelled cases that are not preprocessed, or changed since (skipped when the raw folder is absent)."""
    if not raw_dataset_dir or dataset_json is None or not os.path.isdir(raw_dataset_dir):
        return []
    try:
        raw_cases = find_unlabeled_images(raw_dataset_dir, dataset_json, "imagesTs" in manifest.get("source_folders", []))
    except UnlabeledDataError:
        return []  # no raw unlabelled images here (e.g. removed after preprocessing): nothing to compare with
    recorded = manifest.get("cases", {})
    new = sorted(set(raw_cases) - set(recorded))
    changed = sorted(c for c in raw_cases if c in recorded
                     and recorded[c].get("files") != _file_state(raw_cases[c]["images"]))
    problems = []
    if new:
        problems.append(f"{len(new)} unlabelled case(s) in {raw_dataset_dir} are not preprocessed: {new[:5]}")
    if changed:
        problems.append(f"{len(changed)} raw unlabelled case(s) changed after preprocessing: {changed[:5]}")
    return problems


def unlabeled_state_problems(folder: str, identifiers: Sequence[str], raw_dataset_dir: Optional[str] = None,
                             dataset_json: Optional[dict] = None) -> List[str]:
    """Why the preprocessed unlabelled cases in `folder` are not the complete, current set (empty list: they are)."""
    manifest = _load_manifest(folder)
    if not manifest:
        return [f"{folder} has no {MANIFEST}: it was not written by nnUNetv2_mn_preprocess_unlabeled, or that run "
                f"was stopped before it started"]
    problems = []
    recorded = set(manifest.get("cases", {}))
    if not manifest.get("complete"):
        problems.append(f"the last nnUNetv2_mn_preprocess_unlabeled run did not finish (failed or interrupted): "
                        f"{len(recorded)} of {manifest.get('num_cases', '?')} case(s) are preprocessed")
    if recorded != set(identifiers):
        extra, missing = sorted(set(identifiers) - recorded), sorted(recorded - set(identifiers))
        problems.append(f"the cases in the folder differ from {MANIFEST}: not recorded {extra[:5]}, "
                        f"missing {missing[:5]}")
    return problems + _raw_case_problems(manifest, raw_dataset_dir, dataset_json)


def check_preprocessed_unlabeled(folder: str, identifiers: Sequence[str], fingerprint: str, plans_label: str,
                                 fix: str, raw_dataset_dir: Optional[str] = None, dataset_json: Optional[dict] = None,
                                 warn=print) -> None:
    """Before training: the unlabelled cases must be preprocessed with these plans, completely and from the
    current raw files. A partial or stale set is used only when the user sets ALLOW_PARTIAL_ENV=1 (a warning)."""
    manifest = _load_manifest(folder)
    if manifest and manifest.get("format_version", 1) < MANIFEST_VERSION:
        raise UnlabeledDataError(f"The unlabelled cases in {folder} were preprocessed by an older nnunetv2-mn (manifest "
                                 f"format {manifest.get('format_version', 1)}, now {MANIFEST_VERSION}: it records "
                                 f"whether a run finished). Preprocess them again, once:\n{fix}")
    recorded = manifest.get("plans_fingerprint")
    if recorded is not None and recorded != fingerprint:
        raise UnlabeledDataError(f"The unlabelled cases in {folder} were preprocessed with other plans than "
                                 f"{plans_label} now has (spacing, normalisation or resampling changed). Preprocess "
                                 f"them again:\n{fix}")
    problems = unlabeled_state_problems(folder, identifiers, raw_dataset_dir, dataset_json)
    if not problems:
        return
    text = "; ".join(problems)
    if os.environ.get(ALLOW_PARTIAL_ENV, "").strip() == "1":
        warn(f"WARNING: training on {len(identifiers)} preprocessed unlabelled case(s) although {text} "
             f"({ALLOW_PARTIAL_ENV}=1).")
        return
    raise UnlabeledDataError(f"The preprocessed unlabelled cases in {folder} are not a complete, current set: {text}. "
                             f"Run the preprocessing again (it only redoes what is missing or changed):\n{fix}\n"
                             f"(To train on this partial set anyway: export {ALLOW_PARTIAL_ENV}=1.)")


# ----------------------------------------------------------------------------------------------------- workers
def _first_unreadable(files: List[str], reader_writer_class):
    for f in files:
        try:
            reader_writer_class().read_images([f])
        except Exception:
            return f
    return None


def _preprocess_case(preprocessor, output_filename_truncated: str, image_files: List[str], plans_manager,
                     configuration_manager, dataset_json: dict) -> str:
    """One case through the plans' preprocessor; errors name the unreadable file. Returns the identifier."""
    case = os.path.basename(output_filename_truncated)
    try:
        preprocessor.run_case_save(output_filename_truncated, image_files, None, plans_manager,
                                   configuration_manager, dataset_json)
    except Exception as e:
        bad = _first_unreadable(image_files, plans_manager.image_reader_writer_class())
        if bad is not None:
            raise UnlabeledDataError(f"Cannot read image {bad} (case {case}): {type(e).__name__}: {e}. "
                                     f"Replace or remove this file.") from None
        raise UnlabeledDataError(f"Preprocessing case {case} ({image_files}) failed: "
                                 f"{type(e).__name__}: {e}") from None
    return case


def _run_inline(jobs: List[tuple], progress):
    for job in jobs:
        yield _preprocess_case(*job)
        progress.update()


def _run_pool(jobs: List[tuple], num_processes: int, progress):
    """Like nnU-Net's DefaultPreprocessor.run: spawn pool, async jobs, fail loudly if a worker dies."""
    with multiprocessing.get_context("spawn").Pool(num_processes) as pool:
        workers = list(pool._pool)
        pending = [pool.apply_async(_preprocess_case, job) for job in jobs]
        while pending:
            if not all(w.is_alive() for w in workers):
                raise UnlabeledDataError("A preprocessing worker died (out of RAM?). Retry with fewer processes "
                                         "(-np); finished cases are kept.")
            done = [r for r in pending if r.ready()]
            for r in done:
                yield r.get()
                progress.update()
            pending = [r for r in pending if r not in done]
            sleep(0.05)


# ----------------------------------------------------------------------------------------------------- main API
def _preprocess_configuration(dataset_name: str, cases: Dict[str, dict], plans_manager, configuration: str,
                              plans_identifier: str, dataset_json: dict, num_processes: int, verbose: bool) -> dict:
    from tqdm import tqdm
    from nnunetv2.paths import nnUNet_preprocessed
    cm = plans_manager.get_configuration(configuration)
    pp_dir = os.path.join(nnUNet_preprocessed.require(), dataset_name)
    out = unlabeled_preprocessed_dir(pp_dir, cm.data_identifier)
    os.makedirs(out, exist_ok=True)
    if verbose and not os.path.isdir(os.path.join(pp_dir, cm.data_identifier)):
        print(f"WARNING: {os.path.join(pp_dir, cm.data_identifier)} does not exist: the labelled cases of "
              f"{configuration} are not preprocessed yet (training needs them).")
    fingerprint = plans_fingerprint(plans_manager, cm, dataset_json)
    manifest = _load_manifest(out)
    todo, unchanged, removed = _plan_work(cases, manifest, fingerprint, out)
    entries = {c: manifest["cases"][c] for c in unchanged}
    new_manifest = {"format_version": MANIFEST_VERSION, "dataset": dataset_name, "plans_identifier": plans_identifier,
                    "configuration": configuration, "data_identifier": cm.data_identifier,
                    "plans_fingerprint": fingerprint, "complete": False, "num_cases": len(cases),
                    "source_folders": sorted({v["folder"] for v in cases.values()}), "cases": entries}
    _save_manifest(out, {**new_manifest, "cases": dict(sorted(entries.items()))})  # incomplete until the end
    for case in removed + todo:
        _remove_case(out, case)
    if verbose:
        print(f"{configuration}: {len(todo)} to preprocess, {len(unchanged)} unchanged, {len(removed)} removed "
              f"-> {out}")
    preprocessor_class = cm.preprocessor_class
    if preprocessor_class is None:
        raise UnlabeledDataError(f"Preprocessor class {cm.preprocessor_name} of the plans was not found in nnunetv2.")
    preprocessor = preprocessor_class(verbose=False)
    jobs = [(preprocessor, os.path.join(out, c), cases[c]["images"], plans_manager, cm, dataset_json) for c in todo]
    try:
        with tqdm(total=len(jobs), desc=f"Preprocessing unlabelled ({configuration})",
                  disable=not (verbose and jobs)) as bar:
            nproc = min(num_processes, len(jobs))
            runner = _run_pool(jobs, nproc, bar) if nproc > 1 else _run_inline(jobs, bar)
            for case in runner:
                entries[case] = {"folder": cases[case]["folder"], "files": cases[case]["files_state"],
                                 "digest": cases[case].get("digest")}
        new_manifest["complete"] = sorted(entries) == sorted(cases)
    finally:
        new_manifest["cases"] = dict(sorted(entries.items()))
        _save_manifest(out, new_manifest)
    return {"output_folder": out, "processed": sorted(todo), "unchanged": sorted(unchanged), "removed": removed}


def _labeled_cases(raw_dataset_dir: str, dataset_json: dict) -> Dict[str, List[str]]:
    folder = os.path.join(raw_dataset_dir, "imagesTr")
    if not os.path.isdir(folder):
        return {}
    return _case_files(folder, dataset_json["file_ending"], dataset_json["channel_names"])


def validate_raw_cases(raw_dataset_dir: str, cases: Dict[str, dict], dataset_json: dict, reader_writer_class,
                       cache_folder: Optional[str], accept_geometry: bool = False, verbose: bool = True) -> None:
    """Stop before preprocessing on damaged files, label leaks (name or voxel data of an imagesTr case) and, unless
    `accept_geometry`, spacing/orientation unlike the labelled images. Stores each case's voxel digest in `cases`."""
    labeled = _labeled_cases(raw_dataset_dir, dataset_json)
    unlabeled = {case: info["images"] for case, info in cases.items()}
    check_not_labeled(unlabeled, labeled)
    digests = ImageDigests(cache_folder, reader_writer_class)
    try:
        for case, files in unlabeled.items():
            cases[case]["digest"] = digests.case_digest(files)
        check_not_labeled(unlabeled, labeled, digests.case_digest)
    finally:
        digests.save()
    problems = check_geometry(unlabeled, labeled, accept=accept_geometry)
    if problems and verbose:
        print(f"WARNING (accepted with --accept_geometry): {len(problems)} unlabelled image(s) differ in geometry "
              f"from the labelled images:\n  " + "\n  ".join(problems))


def _mark_incomplete(dataset_name: str, plans_manager, configurations: Sequence[str]) -> None:
    """After a failed check, an earlier complete output folder must not look current to the trainer."""
    from nnunetv2.paths import nnUNet_preprocessed
    for c in configurations:
        out = unlabeled_preprocessed_dir(os.path.join(nnUNet_preprocessed.require(), dataset_name),
                                         plans_manager.get_configuration(c).data_identifier)
        manifest = _load_manifest(out)
        if manifest.get("complete"):
            _save_manifest(out, {**manifest, "complete": False})


def preprocess_unlabeled(dataset: Union[str, int], configurations: Sequence[str] = ("3d_fullres",),
                         plans_identifier: str = "nnUNetPlans", num_processes: int = 2,
                         include_imagesTs: bool = False, verbose: bool = True,
                         accept_geometry: bool = False) -> Dict[str, dict]:
    """Preprocess imagesUnlabeled/ (and imagesTs/ if include_imagesTs: transductive) with the data set's plans.

    Returns {configuration: {'output_folder', 'processed', 'unchanged', 'removed'}}. Configurations that share a
    data_identifier (3d_fullres, 3d_cascade_fullres) are processed once.
    """
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
    configurations = list(configurations)
    name = _dataset_name(dataset)
    plans_manager, dataset_json = _load_plans(name, plans_identifier, configurations)
    raw = os.path.join(nnUNet_raw.require(), name)
    cases = find_unlabeled_images(raw, dataset_json, include_imagesTs)
    for info in cases.values():
        info["files_state"] = _file_state(info["images"])
    if verbose:
        folders = sorted({v["folder"] for v in cases.values()})
        print(f"{name}: {len(cases)} unlabelled case(s) from {', '.join(os.path.join(raw, f) for f in folders)}"
              + (" (transductive: imagesTs included)" if include_imagesTs else ""))
    try:
        validate_raw_cases(raw, cases, dataset_json, plans_manager.image_reader_writer_class,
                           os.path.join(nnUNet_preprocessed.require(), name), accept_geometry, verbose)
    except UnlabeledDataError:
        _mark_incomplete(name, plans_manager, configurations)
        raise
    results, done_identifiers = {}, {}
    for c in configurations:
        data_identifier = plans_manager.get_configuration(c).data_identifier
        if data_identifier in done_identifiers:
            results[c] = results[done_identifiers[data_identifier]]
            continue
        results[c] = _preprocess_configuration(name, cases, plans_manager, c, plans_identifier, dataset_json,
                                               num_processes, verbose)
        done_identifiers[data_identifier] = c
    return results
