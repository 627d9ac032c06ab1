"""Running the rows: data sets, the stock console scripts per row, evaluation, per-row records."""
import dataclasses
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .bench_trainers import SPEC_FILE
from .plan import PlannedRow, estimate, plan_rows, schedule_text
from .spec import (BENCH_MODULE, CONFIGURATION, DATASETS, ENV_2D_MODEL, PLANS, ROWS, SUMMARY_MM, SUMMARY_VOXEL,
                   TINY_DATASETS, TINY_SOURCE_CASES, DatasetSpec, Schedule, describe_2d)
from .report import fmt, json_safe, write_report
from .trainers import write_trainer_module

# ====================================================================================================== running
NNUNET_DIRS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
#: written into a row's results folder at its first training: the trainer settings it is trained with
ROW_SETTINGS = "bench_row.json"


def bench_env(workdir: Path, trainer_dir: Path) -> dict:
    """The environment of the benchmark's console scripts: nnU-Net's three folders inside `workdir`, `trainer_dir`
    (the benchmark's trainer classes) appended to nnUNet_extTrainer, unbuffered output."""
    env = dict(os.environ)
    env.update({k: str(workdir / k) for k in NNUNET_DIRS})
    env["PYTHONUNBUFFERED"] = "1"
    ext = [p for p in env.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    if str(trainer_dir) not in ext:
        ext.append(str(trainer_dir))
    env["nnUNet_extTrainer"] = os.pathsep.join(ext)
    return env

class Bench:
    def __init__(self, args, schedule: Schedule):
        self.args, self.schedule = args, schedule
        self.workdir = Path(args.workdir).resolve()
        self.datasets = TINY_DATASETS if args.tiny else DATASETS
        self.source = Path(args.source).resolve()
        self.dirs = {k: self.workdir / k for k in NNUNET_DIRS}
        # one folder per schedule: runs of different schedules never replace each other's trainer module
        self.trainer_dir = self.workdir / BENCH_MODULE / schedule.name
        self.logs = self.workdir / "logs"
        self.records = self.workdir / "rows"
        self.dry = args.dry_run
        self.environment: Optional[dict] = None  # the software and machine the rows run on (set by `main`)

    # ---------------------------------------------------------------- environment and commands
    def env(self, model2d_source: Optional[str] = None) -> dict:
        env = bench_env(self.workdir, self.trainer_dir)
        env.pop(ENV_2D_MODEL, None)  # it would apply to every 2D kind; set per row below
        if model2d_source:
            env[ENV_2D_MODEL] = model2d_source
        return env

    def run(self, cmd: List[str], log_name: str, env: dict = None, extra_env: dict = None) -> float:
        """Run one console script, output to logs/<log_name>.log; return its wall seconds."""
        shown = " ".join(shlex.quote(str(c)) for c in cmd)
        if extra_env:
            shown = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in extra_env.items()) + " " + shown
        self.say(f"$ {shown}")
        if self.dry:
            return 0.0
        env = dict(env or self.env())
        env.update({k: str(v) for k, v in (extra_env or {}).items()})
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{log_name}.log"
        start = time.perf_counter()
        with open(log, "a") as f:
            f.write(f"\n### {datetime.datetime.now().isoformat(timespec='seconds')} {shown}\n")
            f.flush()
            proc = subprocess.run([str(c) for c in cmd], env=env, stdout=f, stderr=subprocess.STDOUT)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{shown} failed with exit code {proc.returncode} (log: {log}):\n{tail}")
        return seconds

    def say(self, msg: str) -> None:
        print(f"[{datetime.datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)

    # ---------------------------------------------------------------- data
    def tiny_source(self) -> Path:
        """An MSD-layout folder with the first 16 source cases (symlinks), for --tiny."""
        folder = self.workdir / "tiny_source" / self.source.name
        if self.dry or (folder / "dataset.json").is_file():
            return folder
        cases = sorted(p.name for p in (self.source / "imagesTr").glob("*.nii.gz"))[:TINY_SOURCE_CASES]
        for sub in ("imagesTr", "labelsTr", "imagesTs"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        for case in cases:
            for sub in ("imagesTr", "labelsTr"):
                link = folder / sub / case
                if not link.exists():
                    link.symlink_to(self.source / sub / case)
        shutil.copyfile(self.source / "dataset.json", folder / "dataset.json")
        return folder

    def raw(self, spec: DatasetSpec) -> Path:
        return self.dirs["nnUNet_raw"] / spec.folder

    def prepare(self, spec: DatasetSpec, unlabeled: bool, source: Path) -> Dict[str, float]:
        """make_semisupervised, plan_and_preprocess, preprocess_unlabeled; each skipped when already done."""
        times, raw = {}, self.raw(spec)
        record = raw / "split_record.json"
        if record.is_file() and not self.dry:
            rec = json.loads(record.read_text())
            want = {"seed": spec.seed, "num_labeled": spec.num_labeled, "num_test": spec.num_test}
            if any(rec.get(k) != v for k, v in want.items()) or Path(rec["source"]).resolve() != source.resolve():
                raise RuntimeError(f"{raw} holds another split ({ {k: rec.get(k) for k in want} }, "
                                   f"source {rec['source']}); use another --workdir")
        else:
            times["make"] = self.run(["nnUNetv2_mn_make_semisupervised", "-d", str(source), "-o", str(spec.dataset_id),
                                      "--name", spec.name, "--num_labeled", str(spec.num_labeled), "--num_test",
                                      str(spec.num_test), "--seed", str(spec.seed)], f"prep_{spec.folder}")
        pre = self.dirs["nnUNet_preprocessed"] / spec.folder
        if not (pre / f"{PLANS}.json").is_file() or not (pre / f"{PLANS}_{CONFIGURATION}").is_dir() or self.dry:
            # not with nnUNet_n_proc_DA=0: nnU-Net's planner passes it to torch.set_num_threads
            times["plan"] = self.run(["nnUNetv2_plan_and_preprocess", "-d", str(spec.dataset_id), "-c", CONFIGURATION,
                                      "-npfp", "2", "-np", "2"], f"prep_{spec.folder}")
        if unlabeled and (self.dry or not self._unlabeled_done(spec)):
            times["unlabeled"] = self.run(["nnUNetv2_mn_preprocess_unlabeled", "-d", str(spec.dataset_id), "-c",
                                           CONFIGURATION, "-np", "2"], f"prep_{spec.folder}")
        return times

    def _unlabeled_done(self, spec: DatasetSpec) -> bool:
        manifest = (self.dirs["nnUNet_preprocessed"] / spec.folder / f"{PLANS}_{CONFIGURATION}_unlabeled"
                    / "unlabeled_manifest.json")
        if not manifest.is_file():
            return False
        cases = {p.name.rsplit("_", 1)[0] for p in (self.raw(spec) / "imagesUnlabeled").glob("*.nii.gz")}
        return set(json.loads(manifest.read_text()).get("cases", {})) == cases

    # ---------------------------------------------------------------- one row
    def result_folder(self, p: PlannedRow) -> Path:
        return (self.dirs["nnUNet_results"] / p.spec.folder / f"{p.bench_trainer}__{PLANS}__{CONFIGURATION}"
                / "fold_all")

    def prediction_folder(self, p: PlannedRow) -> Path:
        return self.workdir / "predictions" / self.schedule.name / p.row.name

    def record_path(self, name: str) -> Path:
        return self.records / self.schedule.name / f"{name}.json"

    def row_done(self, p: PlannedRow) -> bool:
        """A finished row: its record says ok (made here, or imported with --import-records from another machine)."""
        rec = self.record_path(p.row.name)
        return rec.is_file() and json.loads(rec.read_text()).get("status") == "ok"

    def row_commands(self, p: PlannedRow) -> Dict[str, List[str]]:
        s, spec = self.schedule, p.spec
        train = ["nnUNetv2_train", str(spec.dataset_id), CONFIGURATION, "all", "-tr", p.bench_trainer,
                 "-device", s.device]
        predict = ["nnUNetv2_predict", "-i", str(self.raw(spec) / "imagesTs"), "-o", str(self.prediction_folder(p)),
                   "-d", str(spec.dataset_id), "-c", CONFIGURATION, "-tr", p.bench_trainer, "-p", PLANS, "-f", "all",
                   "-device", s.device, "-npp", str(s.npp), "-nps", str(s.nps), "--disable_progress_bar"]
        if not s.tta:
            predict.append("--disable_tta")
        dj = self.raw(spec) / "dataset.json"
        ref, pred = self.raw(spec) / "labelsTs", self.prediction_folder(p)
        evaluate = ["nnUNetv2_mn_evaluate", "-ref", str(ref), "-pred", str(pred), "-djfile", str(dj),
                    "-np", str(s.eval_processes)]
        evaluate_voxel = evaluate + ["-o", str(pred / SUMMARY_VOXEL), "--voxel"]
        return {"train": train, "predict": predict, "evaluate": evaluate, "evaluate_voxel": evaluate_voxel}

    def row_model2d_source(self, p: PlannedRow) -> Optional[str]:
        kind = p.attrs.get("branch2d_kind")
        if kind in ("segformer", "hf"):
            return self.args.segformer or os.environ.get(ENV_2D_MODEL)
        if kind == "resunet":
            return self.args.resunet_weights
        return None

    def run_row(self, p: PlannedRow) -> dict:
        cmds = self.row_commands(p)
        source = self.row_model2d_source(p)
        extra = {ENV_2D_MODEL: source} if source else None
        env = self.env(source)
        out = self.result_folder(p)
        train_record = self.records / self.schedule.name / f"{p.row.name}.train.json"
        wall = {}
        if not self.dry:
            self.claim_result_folder(p, out)
        if (out / "checkpoint_final.pth").is_file() and not self.dry:
            self.say(f"{p.row.name}: training already finished ({out}), not trained again")
            earlier = json.loads(train_record.read_text()) if train_record.is_file() else {}
            wall["train"] = earlier.get("seconds")
            resumed = bool(earlier.get("resumed", False))
        else:
            resumed = (out / "checkpoint_latest.pth").is_file() and not self.dry
            # wall seconds summed over the training invocations of this row that ran to their end; an invocation
            # killed with its session is not counted here (the record's epoch times, from the checkpoint, cover it)
            earlier = json.loads(train_record.read_text()).get("invocations", []) \
                if train_record.is_file() and not self.dry else []
            seconds = self.run(cmds["train"] + (["--c"] if resumed else []), f"{p.row.name}_train", env, extra)
            invocations = [*earlier, {"seconds": seconds, "resumed": resumed, "loadavg_end": _loadavg()}]
            wall["train"] = sum(i["seconds"] for i in invocations if i.get("seconds") is not None)
            if not self.dry:
                train_record.parent.mkdir(parents=True, exist_ok=True)
                train_record.write_text(json.dumps({"seconds": wall["train"], "resumed": resumed or len(earlier) > 0,
                                                    "invocations": invocations}))
        pred = self.prediction_folder(p)
        if pred.is_dir() and not self.dry:
            shutil.rmtree(pred)  # a partial prediction of an interrupted run
        wall["predict"] = self.run(cmds["predict"], f"{p.row.name}_predict", env, extra)
        self.say(f"$ {' '.join(map(shlex.quote, cmds['evaluate']))}  (in-process: evaluate_folder, mm and voxel)")
        if self.dry:
            return {}
        from nnunetv2_mn.evaluation.evaluate import evaluate_folder
        start = time.perf_counter()
        dj, ref = str(self.raw(p.spec) / "dataset.json"), str(self.raw(p.spec) / "labelsTs")
        summary_mm = evaluate_folder(ref, str(pred), dj, str(pred / SUMMARY_MM), voxel_units=False,
                                     num_processes=self.schedule.eval_processes)
        summary_vox = evaluate_folder(ref, str(pred), dj, str(pred / SUMMARY_VOXEL), voxel_units=True,
                                      num_processes=self.schedule.eval_processes)
        wall["evaluate"] = time.perf_counter() - start
        wall["total"] = sum(v for v in wall.values() if v is not None)
        return {"status": "ok", "wall_s": wall, "resumed_training": resumed, "train_log": training_log(out),
                "loadavg_end": _loadavg(),
                "summary_mm": summary_mm, "summary_voxel": summary_vox}

    def claim_result_folder(self, p: PlannedRow, out: Path) -> None:
        """Refuse to resume or reuse a results folder that was trained with other settings (a renamed row, a changed
        default): `ROW_SETTINGS` in the folder holds what it was trained with."""
        mine = json.loads(json.dumps(json_safe({"trainer": p.row.trainer, "dataset": p.spec.folder,
                                                "attributes": p.attrs})))
        guard = out / ROW_SETTINGS
        if guard.is_file():
            theirs = json.loads(guard.read_text())
            if theirs != mine:
                changed = sorted(k for k in set(theirs.get("attributes", {})) | set(mine["attributes"])
                                 if theirs.get("attributes", {}).get(k) != mine["attributes"].get(k))
                raise RuntimeError(f"{out} was trained by {theirs.get('trainer')} with other settings than row "
                                   f"{p.row.name} has now (differing: {changed or 'trainer or data set'}); delete "
                                   f"that folder (and rows/{self.schedule.name}/{p.row.name}.train.json) to train the row "
                                   f"again, or use another --workdir")
        elif (out / "checkpoint_latest.pth").is_file() or (out / "checkpoint_final.pth").is_file():
            raise RuntimeError(f"{out} holds a training without {ROW_SETTINGS}: its settings are unknown; delete it "
                               f"to train row {p.row.name}")
        else:
            out.mkdir(parents=True, exist_ok=True)
            guard.write_text(json.dumps(mine, indent=1))

    def import_records(self, folder: Path) -> List[str]:
        """Take the finished rows of a report's raw folder (another machine's work folder, e.g.
        docs/benchmarks/hippocampus_raw) into this work folder, so that the driver skips them and the report holds
        them. A row that already has a record here is kept as it is. The data sets' splits are imported too and
        checked against the ones this machine prepares (`check_same_split`)."""
        folder = Path(folder)
        if self.dry:  # a dry run writes nothing
            self.say(f"--dry-run: the finished rows of {folder} are not imported")
            return []
        run_file = folder / "run.json"
        if not run_file.is_file():
            raise SystemExit(f"{run_file} not found: --import-records takes the raw folder a report wrote")
        run = json.loads(run_file.read_text())
        if run.get("schedule", {}).get("name") != self.schedule.name:
            raise SystemExit(f"{folder} holds schedule {run.get('schedule', {}).get('name')!r}, not "
                             f"{self.schedule.name!r}")
        dest = self.records / self.schedule.name
        dest.mkdir(parents=True, exist_ok=True)
        imported = []
        for f in sorted(folder.glob("*.json")):
            if f.name in ("run.json", "comparisons.json", SPEC_FILE):
                continue
            rec = json.loads(f.read_text())
            if rec.get("status") != "ok" or (dest / f.name).is_file():
                continue
            rec["imported_from"] = str(folder)
            (dest / f.name).write_text(json.dumps(rec, indent=1))
            imported.append(rec["row"])
        prep_file = dest / "prep.json"
        prep = json.loads(prep_file.read_text()) if prep_file.is_file() else {}
        for name, entry in run.get("prep", {}).items():
            prep.setdefault(name, entry)
        prep_file.write_text(json.dumps(prep, indent=2))
        if not (dest / "invocations.json").is_file():
            earlier = run.get("meta", {}).get("invocations") or [run.get("meta", {})]
            (dest / "invocations.json").write_text(json.dumps(earlier, indent=1))
        self.say(f"imported {len(imported)} finished row(s) from {folder}: {', '.join(imported) or '-'}")
        return imported

    def base_record(self, p: PlannedRow) -> dict:
        cmds = self.row_commands(p)
        source = self.row_model2d_source(p)
        return {"row": p.row.name, "what": p.row.what, "trainer": p.row.trainer, "bench_trainer": p.bench_trainer,
                "dataset": p.spec.folder, "dataset_key": p.spec.key, "num_labeled": p.spec.num_labeled,
                "num_test": p.spec.num_test, "seed": p.spec.seed, "model2d": describe_2d(p.attrs),
                "attributes": p.attrs, "model2d_env": {ENV_2D_MODEL: source} if source else {},
                "schedule": dataclasses.asdict(p.schedule) | {"suffix": self.schedule.suffix},
                "run": p.row.run, "updates_3d": p.updates_3d,
                "commands": {k: " ".join(shlex.quote(str(c)) for c in v) for k, v in cmds.items()},
                "same_as": p.same_as, "estimate_s": estimate(p, self.schedule), "loadavg_start": _loadavg(),
                "code_commit": _code_commit(), "environment": self.environment,
                "finished": datetime.datetime.now().isoformat(timespec="seconds")}

    def save_record(self, p: PlannedRow, record: dict) -> None:
        path = self.record_path(p.row.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(json_safe(record), indent=1))

    # ---------------------------------------------------------------- everything
    def main(self, names: List[str]) -> int:
        s = self.schedule
        planned = plan_rows(names, s, self.datasets)
        self.print_plan(planned)
        source = self.tiny_source() if self.args.tiny else self.source
        if not self.dry:
            if not (source / "dataset.json").is_file():
                raise SystemExit(f"source data set not found: {source}")
            for d in self.dirs.values():
                d.mkdir(parents=True, exist_ok=True)
            write_trainer_module(self.trainer_dir, [r.variant for r in ROWS], s)
        run_start = time.perf_counter()
        meta = {"started": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine_info(s.device),
                "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
                "workdir": str(self.workdir), "source": str(self.source), "tiny": bool(self.args.tiny)}
        self.environment = environment_of(meta["machine"])
        invocation = None if self.dry else self.save_invocation(meta)  # now: a killed run is listed too
        prep_file = self.records / s.name / "prep.json"
        prep = json.loads(prep_file.read_text()) if prep_file.is_file() else {}
        failed = []
        needed = {p.spec.key for p in planned if p.same_as is None}
        for key in ("main", "small", "full"):
            if key not in needed:
                continue
            spec = self.datasets[key]
            unlabeled = any(p.spec.key == key and p.attrs["family"] != "nnunet" for p in planned)
            try:
                times = self.prepare(spec, unlabeled, source)
            except Exception as e:  # noqa: BLE001 - report and go on with the other data sets
                self.say(f"ERROR preparing {spec.folder}: {e}")
                failed.append(spec.folder)
                continue
            if not self.dry:
                entry = prep.setdefault(spec.folder, {"wall_s": {}, "commands": []})
                facts = dataset_facts(self.raw(spec), self.dirs["nnUNet_preprocessed"] / spec.folder)
                check_same_split(entry, facts, spec.folder)
                entry.setdefault("wall_s", {}).update(times)
                entry.update(facts)
                prep_file.parent.mkdir(parents=True, exist_ok=True)
                prep_file.write_text(json.dumps(prep, indent=2))
        for p in planned:
            if p.same_as is not None:
                continue
            if p.spec.folder in failed:
                failed.append(p.row.name)
                if not self.dry:
                    self.save_record(p, {**self.base_record(p), "status": "failed",
                                         "error": f"preparing {p.spec.folder} failed (see {self.logs})"})
                continue
            if not self.dry and self.row_done(p):
                self.say(f"{p.row.name}: done earlier ({self.prediction_folder(p)}), skipped")
                continue
            self.say(f"=== row {p.row.name}: {p.bench_trainer} on {p.spec.folder} "
                     f"(expected {estimate(p, s)['total'] / 60:.1f} min)")
            record = self.base_record(p)
            try:
                record.update(self.run_row(p))
            except Exception as e:  # noqa: BLE001 - one failed row must not stop the table
                self.say(f"ERROR in row {p.row.name}: {e}")
                record.update({"status": "failed", "error": str(e)[-4000:]})
                failed.append(p.row.name)
            if not self.dry:
                self.save_record(p, record)
                if record["status"] == "ok":
                    self.say(f"{p.row.name}: Dice {fmt(record['summary_mm']['foreground_mean']['Dice'])}, "
                             f"{record['wall_s']['total'] / 60:.1f} min")
        for p in planned:  # identical settings: the row reports the earlier row's run
            if p.same_as is not None and not self.dry:
                src = self.record_path(p.same_as)
                if src.is_file():
                    rec = json.loads(src.read_text())
                    own = self.base_record(p)
                    rec.update({k: own[k] for k in ("row", "what", "trainer", "same_as", "model2d")})
                    rec["estimate_s"] = {"train": 0, "predict": 0, "evaluate": 0, "total": 0}
                    self.record_path(p.row.name).write_text(json.dumps(rec, indent=1))
        if self.dry:
            return 0
        meta["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
        meta["this_invocation_s"] = time.perf_counter() - run_start
        meta["machine"]["loadavg_end"] = _loadavg()
        meta["rows_run"] = [p.row.name for p in planned if p.same_as is None]
        self.save_invocation(meta, invocation)
        return self.report(meta, failed)

    def save_invocation(self, meta: dict, index: Optional[int] = None) -> int:
        """Add this run's meta data to the schedule's invocations (or replace entry `index`, its start); its index."""
        invocations = self.invocations()
        entry = json_safe({k: v for k, v in meta.items() if k != "invocations"})
        if index is None:
            index = len(invocations)
            invocations.append(entry)
        else:
            invocations[index] = entry
        path = self.records / self.schedule.name / "invocations.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(invocations, indent=1))
        return index

    def invocations(self) -> List[dict]:
        """The meta data of every earlier run of the schedule in this work folder."""
        path = self.records / self.schedule.name / "invocations.json"
        return json.loads(path.read_text()) if path.is_file() else []

    def report(self, meta: Optional[dict] = None, failed: Sequence[str] = ()) -> int:
        """Write the report from every record of the schedule in the work folder (`--report-only`: no run)."""
        s = self.schedule
        invocations = self.invocations()
        if meta is None:
            if not invocations:
                raise SystemExit(f"nothing to report: no finished run of schedule {s.name!r} in {self.workdir}")
            meta = dict(invocations[-1])
        meta["invocations"] = invocations
        prep_file = self.records / s.name / "prep.json"
        prep = json.loads(prep_file.read_text()) if prep_file.is_file() else {}
        records = load_records(self.records / s.name)
        out = Path(self.args.out).resolve()
        files = write_report(out, records, prep, meta, s, self.workdir)
        variants = self.trainer_dir / SPEC_FILE  # what the factory made the trainers from (this schedule's only)
        if variants.is_file():
            shutil.copyfile(variants, files["raw_dir"] / "bench_trainers_variants.json")
        self.say(f"report: {out}")
        if failed:
            self.say(f"FAILED: {', '.join(failed)} (see {self.logs})")
            return 1
        return 0

    def print_plan(self, planned: List[PlannedRow]) -> None:
        s = self.schedule
        print(schedule_text(s, planned, self.datasets), flush=True)



def check_same_split(earlier: dict, facts: dict, folder: str) -> None:
    """The rows of a table compare per test case: a data set prepared again (another machine, imported records)
    must hold the same labelled and test cases and the same plans as the one the earlier rows ran on."""
    for part, keys in (("split", ("seed", "num_labeled", "num_test", "labeled", "test")),
                       ("plans", ("patch_size", "batch_size", "spacing"))):
        old, new = earlier.get(part) or {}, facts.get(part) or {}
        differ = [k for k in keys if k in old and k in new and old[k] != new[k]]
        if differ:
            raise RuntimeError(f"{folder}: the {part} prepared here differs from the one the earlier rows of this "
                               f"table ran on ({', '.join(differ)}); their results cannot be compared: use another "
                               f"--workdir without imported records")


def training_log(folder: Path) -> dict:
    """Epoch times and pseudo Dice from checkpoint_final.pth (nnU-Net's logger)."""
    ckpt = folder / "checkpoint_final.pth"
    if not ckpt.is_file():
        return {}
    import torch
    log = torch.load(ckpt, map_location="cpu", weights_only=False).get("logging", {})
    start, end = log.get("epoch_start_timestamps", []), log.get("epoch_end_timestamps", [])
    epoch_s = [b - a for a, b in zip(start, end)]
    keep = {k: [_num(x) for x in v] for k, v in log.items()
            if isinstance(v, list) and all(isinstance(x, (int, float)) for x in v)}
    keep.pop("epoch_start_timestamps", None)
    keep.pop("epoch_end_timestamps", None)
    return {"epoch_s": epoch_s, "mean_epoch_s": sum(epoch_s) / len(epoch_s) if epoch_s else None, "logging": keep}


def _num(x):
    return float(x) if isinstance(x, float) else x


def dataset_facts(raw: Path, pre: Path) -> dict:
    facts = {}
    rec = raw / "split_record.json"
    if rec.is_file():
        r = json.loads(rec.read_text())
        facts["split"] = {k: r.get(k) for k in ("source", "seed", "num_labeled", "num_unlabeled", "num_test",
                                                "labeled", "test", "command")}
    plans = pre / f"{PLANS}.json"
    if plans.is_file():
        c = json.loads(plans.read_text())["configurations"].get(CONFIGURATION, {})
        facts["plans"] = {"patch_size": c.get("patch_size"), "batch_size": c.get("batch_size"),
                          "spacing": c.get("spacing"), "median_image_size": c.get("median_image_size_in_voxels"),
                          "network": (c.get("architecture") or {}).get("network_class_name")}
    return facts


#: what a row's record says of the software and machine it ran on (keys of `machine_info`)
ENVIRONMENT_KEYS = ("cpu", "cpus_usable", "device", "gpu", "torch", "nnunetv2", "nnunetv2-mn", "timm", "transformers",
                    "peft", "python")


def environment_of(machine: dict) -> dict:
    return {k: machine[k] for k in ENVIRONMENT_KEYS if k in machine}


def machine_info(device: str) -> dict:
    import torch

    from ..step_cost import cpu_model
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu_model(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "device": device, "loadavg_start": _loadavg()}
    try:
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    for pkg in ("nnunetv2", "nnunetv2-mn", "timm", "transformers", "peft"):
        try:
            from importlib.metadata import version
            info[pkg] = version(pkg)
        except Exception:  # noqa: BLE001 - optional
            pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def _code_commit() -> Optional[str]:
    """The git commit of the benchmark's code (a snapshot worktree), so that each row names what it ran."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def load_records(folder: Path) -> List[dict]:
    """Every finished or failed row of a schedule, in the ROWS order."""
    recs = {}
    if folder.is_dir():
        for f in folder.glob("*.json"):
            if f.name in ("prep.json", "invocations.json") or f.name.endswith(".train.json"):
                continue
            rec = json.loads(f.read_text())
            recs[rec["row"]] = rec
    order = [r.name for r in ROWS]
    return [recs[k] for k in sorted(recs, key=lambda k: order.index(k) if k in order else len(order))]
