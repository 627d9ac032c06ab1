"""benchmarks/hippocampus: schedule arithmetic, the trainer factory, report writer, and (slow) a --tiny run of the
real pipeline on the Hippocampus data."""
import inspect
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
import benchmarks.hippocampus as hb  # noqa: E402


# ------------------------------------------------------------------------------------------------ schedules
def test_default_rows_cover_the_issues():
    """Issue #9: the headline rows first (baseline, M&N, self-training, the 4-label pair), the second runs, then the
    ablations (first the two semi-supervised rows with the labelled batch kept whole) and the ceiling."""
    cpu = hb.default_rows(hb.SCHEDULES["cpu"])
    assert cpu[:16] == ["baseline", "mn", "self_training", "baseline_4lab", "mn_4lab", "self_training_run2",
                        "self_training_from_teacher", "baseline_run2", "mn_run2", "baseline_4lab_run2", "mn_4lab_run2",
                        "mn_replace", "self_training_replace", "mn_replace_run2", "mn_4lab_replace",
                        "mn_4lab_replace_run2"]
    # the default rows run the defaults; the *_replace rows the paper's batch
    s = hb.SCHEDULES["cpu"]
    for row in cpu[:16]:
        attrs = hb.resolved_attributes(hb.ROW_BY_NAME[row].trainer, s)
        assert attrs.get("unlabeled_samples") == ("replace" if "replace" in row else
                                                  None if attrs["family"] == "nnunet" else "add"), row
    for row in ("mn_alt_epochs", "mn_floor", "mn_restart", "mn_whole", "mean_teacher", "ceiling",
                "mn_alt_epochs_equal3d", "baseline_long"):
        assert row in cpu
    assert cpu[-1] == "ceiling"
    assert set(cpu) - {"mn_alt_epochs_equal3d", "baseline_long", "mn_cheap"} <= set(hb.default_rows(hb.SCHEDULES["gpu"]))
    for a, b in ((q[1], q[2]) for q in hb.COMPARISONS):
        assert a in hb.ROW_BY_NAME and b in hb.ROW_BY_NAME
    assert hb.default_rows(hb.SCHEDULES["tiny"]) == ["baseline", "mn"]
    assert hb.ROW_BY_NAME["ceiling"].data == "full" and hb.DATASETS["full"].num_labeled == 160
    # every data set: same seed and test size, so the same test cases (the tool guarantees it for equal seeds)
    assert len({(d.seed, d.num_test) for d in hb.DATASETS.values()}) == 1
    assert {d.num_labeled for d in hb.DATASETS.values()} == {4, 8, 160}
    assert hb.DATASETS["main"].num_unlabeled == 152 and hb.TINY_DATASETS["main"].num_unlabeled == 10


def test_cost_model_uses_the_trainers_schedule():
    """The driver asks the trainer's own schedule object who learns when: 3D updates per row."""
    s = hb.SCHEDULES["cpu"]
    for trainer, expected in (("nnUNetTrainer", 1000), ("nnUNetTrainerMN", 1000), ("nnUNetTrainerSelfTraining", 1000),
                              ("nnUNetTrainerMN_AlternateEpochs", 5 * 25 + 18 * 25)):
        assert hb.updates_3d(hb.resolved_attributes(trainer, s), s) == expected
    equal3d = hb.plan_rows(["mn_alt_epochs_equal3d"], s, hb.DATASETS)[0]
    assert equal3d.schedule.num_epochs == 70 and equal3d.updates_3d == 1000


def test_cpu_schedule_arithmetic():
    s = hb.SCHEDULES["cpu"]
    c = hb.CPU_COST
    assert (s.num_epochs, s.iterations, s.val_iterations, s.tta) == (40, 25, 5, False)
    # nnU-Net baseline: start-up + steps + validation + per-epoch overhead; prediction of 40 cases; evaluation
    base = hb.estimate_row({"family": "nnunet"}, s, 40)
    assert base["train"] == pytest.approx(c["train_start"] + 1000 * c["3d_train"] + 200 * c["3d_forward"]
                                          + 40 * c["epoch"])
    assert base["predict"] == pytest.approx(c["predict_start"] + 40 * c["predict_case"])
    assert base["total"] == pytest.approx(base["train"] + base["predict"] + c["evaluate"])
    # M&N: 5 stage-1 epochs (both models learn), then a 3D-student and a 2D-student step in every iteration, each
    # on the whole labelled batch and an unlabelled sample on top (1.5 x the samples of a stage-1 step)
    attrs = hb.resolved_attributes("nnUNetTrainerMN", s)
    assert attrs["branch2d_kind"] == "effnet_lite0" and attrs["branch2d_finetune"] == "lora"
    t2, f2 = c["2d_train"]["effnet_lite0/lora"], c["2d_forward"]["effnet_lite0/lora"]
    steps = 25 * (5 * (c["3d_train"] + t2) + 35 * ((1.5 * c["3d_train"] + f2 / 2) + (c["3d_forward"] / 2 + 1.5 * t2)))
    mn = hb.estimate_row(attrs, s, 40, 152)
    assert mn["train"] == pytest.approx(c["train_start"] + steps + 200 * (c["3d_forward"] + f2) + 40 * c["epoch"])
    # the paper's alternation by epoch: 18 3D-student and 17 2D-student epochs
    alt = hb.estimate_row(hb.resolved_attributes("nnUNetTrainerMN_AlternateEpochs", s), s, 40, 152)
    alt_steps = 25 * (5 * (c["3d_train"] + t2) + 18 * (1.5 * c["3d_train"] + f2 / 2)
                      + 17 * (c["3d_forward"] / 2 + 1.5 * t2))
    assert alt["train"] == pytest.approx(mn["train"] - steps + alt_steps)
    # fixed pseudo-masks (no co-training) never train the 2D model after stage 1
    noco = hb.estimate_row(hb.resolved_attributes("nnUNetTrainerMN_NoCoTrain", s), s, 40, 152)
    assert noco["train"] == pytest.approx(mn["train"] - 35 * 25 * (c["3d_forward"] / 2 + 1.5 * t2))
    # pseudo-foreground crops add one sliding window per unlabelled case and refresh (5 refreshes in 35 epochs)
    biased = dict(attrs, unlabeled_foreground_bias=0.5, pseudo_mask_refresh_fraction=0.125)
    assert hb.estimate_row(biased, s, 40, 152)["train"] == pytest.approx(mn["train"] + 7 * 152 * c["pseudo_mask_case"])
    # self-training: nnU-Net steps and one prediction of every unlabelled case
    st = hb.estimate_row(hb.resolved_attributes("nnUNetTrainerSelfTraining_ReplaceUnlabeled", s), s, 40, 152)
    assert st["train"] == pytest.approx(base["train"] + 152 * c["pseudo_mask_case"])
    # ... and with the pseudo-labelled samples on top (the default), the student's 20 epochs draw them uniformly
    # from the pool: b_u = 152 / 160 of B on average on top of the B labelled samples
    st_add = hb.estimate_row(hb.resolved_attributes("nnUNetTrainerSelfTraining", s), s, 40, 152, num_labeled=8)
    assert st_add["train"] == pytest.approx(st["train"] + 0.95 * 20 * 25 * c["3d_train"])
    # mirroring multiplies the prediction
    assert hb.estimate_row({"family": "nnunet"}, hb.SCHEDULES["gpu"], 40)["predict"] > 0


def test_cpu_table_arithmetic_and_readme_says_so():
    """The CPU table is a job of many sessions (about an hour a row): the README gives its expected total."""
    s = hb.SCHEDULES["cpu"]
    planned = hb.plan_rows(hb.default_rows(s), s, hb.DATASETS)
    text = hb.schedule_text(s, planned, hb.DATASETS)
    total = float(text.splitlines()[-1].split()[-1])
    assert 5 * 60 < total < 30 * 60, text
    readme = (REPO / "benchmarks" / "README.md").read_text()
    assert f"{total:.0f} min" in readme, f"README's CPU total is stale: the model says {total:.1f} min"
    # the GPU schedule is longer in every respect
    g = hb.SCHEDULES["gpu"]
    assert g.total_iterations > 20 * s.total_iterations and g.tta and g.model2d == "trainer"


def test_identical_settings_run_once():
    cpu = hb.plan_rows(["mn", "mn_whole", "mn_effnetlite0", "mn_effnetlite0_scratch"], hb.SCHEDULES["cpu"],
                       hb.DATASETS)
    assert {p.row.name: p.same_as for p in cpu} == {"mn": None, "mn_whole": None, "mn_effnetlite0": "mn_whole",
                                                     "mn_effnetlite0_scratch": None}
    runs = hb.plan_rows(["mn", "mn_run2"], hb.SCHEDULES["cpu"], hb.DATASETS)
    assert [p.same_as for p in runs] == [None, None]  # a second run is trained again
    assert runs[1].bench_trainer == "nnUNetTrainerMN_benchcpu_run2"
    gpu = hb.plan_rows(["mn_whole", "mn_effnetlite0"], hb.SCHEDULES["gpu"], hb.DATASETS)
    assert [p.same_as for p in gpu] == [None, None]  # SegFormer whole vs EfficientNet-Lite0 whole
    assert "SegFormer" in hb.describe_2d(gpu[0].attrs) and "ImageNet" in hb.describe_2d(gpu[1].attrs)


def test_custom_schedule_gets_its_own_trainer_names():
    args = hb.parse_args(["--epochs", "20", "--iterations", "10"])
    s = hb.schedule_from_args(args)
    assert s.name != "cpu" and "__" not in s.suffix and (s.num_epochs, s.iterations) == (20, 10)
    assert hb.schedule_from_args(hb.parse_args(["--device", "cuda"])).name == "cpu"  # device only: same runs
    assert hb.schedule_from_args(hb.parse_args(["--tiny"])).name == "tiny"
    with pytest.raises(SystemExit):
        hb.parse_args(["--rows", "no_such_row"])


# ------------------------------------------------------------------------------------------------ trainer module
def test_trainer_module_found_by_nnunet_lookup(tmp_path, monkeypatch):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    from nnunetv2_mn.trainers import nnUNetTrainerMN, nnUNetTrainerMN_EffNetLite0Scratch

    s = hb.SCHEDULES["cpu"]
    folder = tmp_path / "bench_trainers"
    path = hb.write_trainer_module(folder, [r.variant for r in hb.ROWS], s)
    compile(path.read_text(), str(path), "exec")
    ext = [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p] + [str(folder)]
    monkeypatch.setenv("nnUNet_extTrainer", os.pathsep.join(ext))

    mn = recursive_find_trainer_class_by_name("nnUNetTrainerMN_benchcpu")
    assert issubclass(mn, nnUNetTrainerMN) and mn.__name__ == "nnUNetTrainerMN_benchcpu"
    assert mn.schedule_overrides == s.overrides() == {"num_epochs": 40, "num_iterations_per_epoch": 25,
                                                      "num_val_iterations_per_epoch": 5, "save_every": 1}
    run2 = recursive_find_trainer_class_by_name("nnUNetTrainerMN_benchcpu_run2")
    assert issubclass(run2, nnUNetTrainerMN) and run2.schedule_overrides == mn.schedule_overrides
    e70 = recursive_find_trainer_class_by_name("nnUNetTrainerMN_AlternateEpochs_benchcpu_e70")
    assert e70.schedule_overrides["num_epochs"] == 70 and e70.stage2_students == "epochs"
    assert recursive_find_trainer_class_by_name("nnUNetTrainerSelfTraining_benchcpu").stage1_fraction == 0.5
    assert (mn.branch2d_kind, mn.branch2d_source, mn.branch2d_finetune) == ("effnet_lite0", None, "lora")
    scratch = recursive_find_trainer_class_by_name("nnUNetTrainerMN_EffNetLite0Scratch_benchcpu")
    assert issubclass(scratch, nnUNetTrainerMN_EffNetLite0Scratch) and scratch.branch2d_source == "random"
    base = recursive_find_trainer_class_by_name("nnUNetTrainer_benchcpu")
    assert issubclass(base, nnUNetTrainer) and base.schedule_overrides["num_epochs"] == 40
    # nnU-Net records its init arguments by the parameter names of type(self).__init__
    assert list(inspect.signature(base.__init__).parameters) == list(inspect.signature(nnUNetTrainer.__init__).parameters)
    for name in ("nnUNetTrainerMN_ResUNet_benchcpu", "nnUNetTrainerMeanTeacher_benchcpu", "nnUNetTrainerMN_Whole_benchcpu"):
        assert recursive_find_trainer_class_by_name(name).__name__ == name
    # unchanged module is not rewritten (its mtime stays)
    mtime = path.stat().st_mtime_ns
    hb.write_trainer_module(folder, [r.variant for r in hb.ROWS], s)
    assert path.stat().st_mtime_ns == mtime


def test_gpu_variants_keep_each_trainers_2d_model():
    from benchmarks.hippocampus.bench_trainers import make_trainers
    from nnunetv2_mn.trainers import nnUNetTrainerMN

    spec = hb.variant_spec(["nnUNetTrainerMN", "nnUNetTrainerMN_Whole"], hb.SCHEDULES["gpu"])
    assert [v["attributes"] for v in spec["variants"]] == [{}, {}]
    cls = make_trainers(json.loads(json.dumps(spec)))["nnUNetTrainerMN_benchgpu"]  # through JSON, as on disk
    assert issubclass(cls, nnUNetTrainerMN) and cls.branch2d_kind == "segformer"
    assert cls.schedule_overrides["num_epochs"] == hb.SCHEDULES["gpu"].num_epochs
    with pytest.raises(ValueError):
        hb.bench_trainer_name("Bad__Name", hb.SCHEDULES["cpu"])


def test_dry_run_prints_commands_and_writes_nothing(tmp_path, capsys):
    work = tmp_path / "w"
    assert hb.main(["--dry-run", "--workdir", str(work), "--out", str(tmp_path / "r.md")]) == 0
    out = capsys.readouterr().out
    assert not work.exists() and not (tmp_path / "r.md").exists()
    assert "nnUNetv2_mn_make_semisupervised -d" in out and "--num_labeled 160 --num_test 40 --seed 0" in out
    assert "nnUNetv2_plan_and_preprocess -d 508 -c 3d_fullres -npfp 2 -np 2" in out
    assert "nnUNetv2_mn_preprocess_unlabeled -d 504" in out
    assert "nnUNetv2_mn_preprocess_unlabeled -d 560" not in out  # the ceiling has no unlabelled cases
    assert "nnUNetv2_train 508 3d_fullres all -tr nnUNetTrainerMN_benchcpu -device cpu" in out
    assert "--disable_tta" in out and "-f all" in out
    assert "nnUNetTrainerMN_EffNetLite0_benchcpu -device" not in out  # same run as mn_whole


# ------------------------------------------------------------------------------------------------ report
def _summary(dice1, dice2, hd_nan_case=None, units="mm"):
    cases = []
    for i, (d1, d2) in enumerate(zip(dice1, dice2)):
        metrics = {}
        for key, d in (("1", d1), ("2", d2)):
            hd = float("nan") if (hd_nan_case == i and key == "2") else 2.0 + i
            metrics[key] = {"Dice": d, "Jaccard": d / (2 - d), "HD95": hd, "ASD": 0.5 * (i + 1), "n_pred": 10,
                            "n_ref": 10, "empty": "prediction" if hd != hd else "none"}
        cases.append({"prediction_file": f"/w/pred/hippocampus_{i:03d}.nii.gz",
                      "reference_file": f"/w/ref/hippocampus_{i:03d}.nii.gz", "spacing": [1.0, 1.0, 1.0],
                      "metrics": metrics})
    fg = {"Dice": (sum(dice1) / len(dice1) + sum(dice2) / len(dice2)) / 2}
    return {"metric_per_case": cases, "labels": {"1": "Anterior", "2": "Posterior"}, "foreground_mean": fg,
            "settings": {"units": units, "n_cases": len(cases)}}


def _record(row, dice1, dice2, minutes, **kw):
    rec = {"row": row, "what": hb.ROW_BY_NAME[row].what, "trainer": hb.ROW_BY_NAME[row].trainer,
           "bench_trainer": hb.ROW_BY_NAME[row].trainer + "_benchcpu", "dataset": "Dataset508_Hippocampus_8lab",
           "num_labeled": 8, "num_test": len(dice1), "model2d": "-", "attributes": {"family": "nnunet"},
           "status": "ok", "same_as": None, "wall_s": {"train": 60 * minutes - 30, "predict": 20, "evaluate": 10,
                                                        "total": 60 * minutes},
           "estimate_s": {"total": 60 * minutes + 6}, "train_log": {"mean_epoch_s": 12.5},
           "commands": {"train": f"nnUNetv2_train 508 3d_fullres all -tr {row}_x -device cpu"},
           "summary_mm": _summary(dice1, dice2, kw.pop("hd_nan_case", None)),
           "summary_voxel": _summary(dice1, dice2, units="voxel")}
    rec.update(kw)
    return rec


def test_report_from_fabricated_summaries(tmp_path):
    records = [_record("baseline", [0.8, 0.6], [0.7, 0.5], 5.0, hd_nan_case=1),
               _record("mn", [0.9, 0.7], [0.8, 0.6], 7.0, model2d="EffNet-Lite0 U-Net, lora",
                       attributes={"family": "mn", "branch2d_kind": "effnet_lite0", "branch2d_finetune": "lora",
                                   "sampling": "lrg", "co_training": True}),
               _record("mn_effnetlite0", [0.9, 0.7], [0.8, 0.6], 7.0, same_as="mn_whole"),
               {**_record("mn_resunet", [0.1], [0.1], 1.0), "status": "failed", "error": "boom\nmore"}]
    prep = {"Dataset508_Hippocampus_8lab": {"wall_s": {"make": 30.0, "plan": 60.0, "unlabeled": 30.0},
                                            "split": {"num_labeled": 8, "num_unlabeled": 152, "num_test": 40,
                                                      "test": ["a", "b"], "command": "nnUNetv2_mn_make_semisupervised "
                                                      "-d /src -o 508 --num_labeled 8 --num_test 40"},
                                            "plans": {"patch_size": [40, 48, 40], "batch_size": 2}}}
    meta = {"machine": {"cpu": "Test CPU", "cpu_count": 2, "torch": "2.x", "device": "cpu"},
            "command": "python -m benchmarks.hippocampus --workdir /work/x", "started": "t0", "finished": "t1"}
    files = hb.write_report(tmp_path / "bench.md", records, prep, meta, hb.SCHEDULES["cpu"], Path("/work/x"))
    md = files["md"].read_text()
    # overview row: per-case mean over labels, mean ± std (ddof 0) over cases
    assert "| baseline | 8 | `nnUNetTrainer` | - | 0.650 ± 0.100 |" in md
    assert "| mn_effnetlite0 (= mn_whole) |" in md and "same run" in md
    assert "| mn_resunet | 8 |" in md and "failed" in md and "boom" in md
    # per class: Anterior Dice 0.8/0.6 -> 0.700 ± 0.100; Posterior HD95 has one undefined case
    assert "Dice Anterior | Dice Posterior" in md and "0.700 ± 0.100 | 0.600 ± 0.100" in md
    assert "2.00 ± 0.00 (1 excl.)" in md
    assert "HD95 (mm)" in md and "Distances in voxels" in md
    # wall time: rows (5 + 7 min) + data sets (2 min); the alias and the failed row count nothing
    assert "**Total: 14.0 min**" in md and "| baseline | 4.5 | 0.3 | 0.2 | 5.0 | 5.1 | 12.5 | n/a |" in md
    assert "Test CPU" in md and "$WORKDIR" in md and "--num_labeled 8" in md and "seed 0" in md
    for png in (files["dice_png"], files["time_png"]):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png.name})" in md
    raw = {p.name for p in files["raw_dir"].iterdir()}
    assert {"baseline.json", "mn.json", "mn_effnetlite0.json", "mn_resunet.json", "run.json",
            "comparisons.json"} <= raw
    # paired comparison of the finished rows named in COMPARISONS (mn vs baseline only here)
    assert "## Which setting wins" in md and "| M&N vs nnU-Net (8 labels) | mn | baseline | +0.100 [+0.100, +0.100] |" in md
    comp = json.loads((files["raw_dir"] / "comparisons.json").read_text())
    assert [(c["a"], c["b"]) for c in comp] == [("mn", "baseline")] and comp[0]["Dice"]["n"] == 2
    again = json.loads((files["raw_dir"] / "baseline.json").read_text())
    assert again["summary_mm"]["metric_per_case"][1]["metrics"]["2"]["HD95"] is None  # strict JSON, NaN -> null


def test_report_counts_every_epoch_of_a_resumed_training(tmp_path):
    # the invocation that finished ran 3 min of the 6 epochs; the killed ones left their epoch times in the checkpoint
    resumed = _record("baseline", [0.8, 0.6], [0.7, 0.5], 3.5, resumed_training=True,
                      train_log={"epoch_s": [60.0] * 6, "mean_epoch_s": 60.0})
    whole = _record("mn", [0.9, 0.7], [0.8, 0.6], 7.0, train_log={"epoch_s": [30.0] * 6, "mean_epoch_s": 30.0})
    meta = {"machine": {"cpu": "Test CPU", "cpu_count": 2, "torch": "2.x", "device": "cpu"},
            "command": "python -m benchmarks.hippocampus", "started": "t0", "finished": "t1"}
    md = hb.write_report(tmp_path / "bench.md", [resumed, whole], {}, meta, hb.SCHEDULES["cpu"],
                         Path("/w"))["md"].read_text()
    # resumed: 6 epochs x 1 min + predict 20 s + evaluate 10 s; not resumed: the invocation's own wall time
    assert "| baseline | 6.0 (resumed) | 0.3 | 0.2 | 6.5 |" in md and "| mn | 6.5 | 0.3 | 0.2 | 7.0 |" in md
    assert "**Total: 13.5 min**" in md and "sum of the epoch times" in md


def test_report_only_rewrites_the_report_from_the_work_folder(tmp_path, capsys):
    work, out = tmp_path / "work", tmp_path / "docs" / "bench.md"
    args = ["--report-only", "--workdir", str(work), "--out", str(out)]
    with pytest.raises(SystemExit, match="nothing to report"):
        hb.main(args)
    rows = work / "rows" / "cpu"
    rows.mkdir(parents=True)
    for rec in (_record("baseline", [0.8, 0.6], [0.7, 0.5], 5.0), _record("mn_2dslices025", [0.9, 0.7], [0.8, 0.6], 6.0)):
        (rows / f"{rec['row']}.json").write_text(json.dumps(rec))
    inv = [{"started": f"t{i}", "finished": f"u{i}", "command": f"python -m benchmarks.hippocampus --rows r{i}",
            "machine": {"cpu": "Test CPU", "loadavg_start": [1.0], "loadavg_end": [2.0]}} for i in range(2)]
    (rows / "invocations.json").write_text(json.dumps(inv))
    other = work / hb.BENCH_MODULE / "e20i10v1no" / "variants.json"  # a run of another schedule
    other.parent.mkdir(parents=True)
    other.write_text("{}")
    assert hb.main(args) == 0
    assert not (out.parent / "bench_raw" / "bench_trainers_variants.json").exists()  # not this schedule's
    md = out.read_text()
    assert "| baseline | 8 |" in md and "| mn_2dslices025 | 8 |" in md
    assert "  - t0 to u0" in md and "  - t1 to u1" in md and "--rows r1" in md
    assert "| 2D student slices: all vs a random quarter |" not in md  # needs row mn, which did not run
    assert not (work / "nnUNet_raw").exists()  # nothing was run or prepared


def test_the_report_names_each_rows_environment_and_every_run_of_the_driver(tmp_path):
    """Rows of one table run over several sessions, machines and library versions: the report lists each environment
    with its rows, and the driver lists its run when it starts (a run killed by the end of a session too)."""
    old = {"cpu": "CPU A", "cpus_usable": 2, "device": "cpu", "torch": "2.14.1", "nnunetv2": "2.8.1",
           "nnunetv2-mn": "0.1.0", "timm": "1.0", "transformers": "5.24.0", "peft": "0.21.2", "python": "3.11"}
    new = {**old, "transformers": "5.25.0", "peft": "0.22.0"}
    records = [{"row": "baseline"}, {"row": "mn", "environment": old}, {"row": "mn_run2", "environment": new},
               {"row": "mn_4lab", "environment": old}]
    meta = {"invocations": [{"started": "t0", "machine": {**old, "cpu": "CPU 0"}}]}
    lines = hb.environment_lines(records, meta)
    assert lines[0] == ("- CPU A (2 usable cores), device `cpu`; torch 2.14.1, nnunetv2 2.8.1, nnunetv2-mn 0.1.0, timm "
                        "1.0, transformers 5.24.0, peft 0.21.2; Python 3.11: `mn`, `mn_4lab`")
    assert "transformers 5.25.0, peft 0.22.0" in lines[1] and lines[1].endswith(": `mn_run2`")
    assert lines[2].startswith("- rows whose record does not name its environment (they ran before the records did): "
                               "`baseline`; the table's first run, t0, ran on CPU 0")
    bench = hb.Bench(hb.parse_args(["--workdir", str(tmp_path)]), hb.SCHEDULES["cpu"])
    assert bench.save_invocation({"started": "s1", "machine": old}) == 0
    assert bench.save_invocation({"started": "s2", "machine": new}) == 1  # the next session's run
    assert bench.save_invocation({"started": "s2", "finished": "f2", "machine": new}, 1) == 1  # its end
    assert [(i["started"], i.get("finished")) for i in bench.invocations()] == [("s1", None), ("s2", "f2")]
    assert hb.environment_of({**new, "platform": "Linux", "loadavg_start": [1.0]}) == new


def test_untrained_rows_name_no_winner():
    trained = [_record("baseline", [0.8, 0.6, 0.7], [0.7, 0.5, 0.6], 5.0), _record("mn", [0.9, 0.7, 0.8], [0.8, 0.6, 0.7], 5.0)]
    comp = hb.comparisons(trained)
    assert comp[0]["untrained"] == [] and comp[0]["Dice"]["verdict"] == "A"
    assert "No row learned" not in "\n".join(hb.reading_note(trained))
    untrained = [_record("baseline", [0.05, 0.06, 0.04], [0.0, 0.0, 0.0], 5.0),
                 _record("mn", [0.0, 0.01, 0.0], [0.0, 0.0, 0.0], 5.0)]
    comp = hb.comparisons(untrained)
    assert comp[0]["untrained"] == ["mn", "baseline"] and comp[0]["Dice"]["verdict"] == "untrained"
    assert "none: mn and baseline did not learn" in "\n".join(hb.comparison_lines(untrained))
    assert "No row learned to segment" in hb.reading_note(untrained)[0] and "`baseline`" in hb.reading_note(untrained)[0]


def test_metric_cell_and_per_case_means():
    s = _summary([0.8, 0.6], [0.7, 0.5], hd_nan_case=0)
    assert hb.per_case_values(s, "Dice") == pytest.approx([0.75, 0.55])
    assert hb.per_case_values(s, "HD95") == pytest.approx([2.0, 3.0])  # case 0: the finite label only
    assert hb.metric_cell(s, "HD95", "2", 2) == "3.00 ± 0.00 (1 excl.)"
    assert hb.metric_cell({"metric_per_case": []}, "Dice") == "n/a"
    assert hb.json_safe({"a": [float("nan"), 1.0, math.inf]}) == {"a": [None, 1.0, None]}


# ------------------------------------------------------------------------------------------------ slow: --tiny
@pytest.mark.slow
@pytest.mark.hippocampus
def test_tiny_run_end_to_end(hippocampus_dir, tmp_path):
    """--tiny for the nnU-Net baseline and M&N (offline EfficientNet-Lite0): data sets, stock console scripts,
    evaluation, report; then a second call finds both rows done and only rewrites the report."""
    work, out = tmp_path / "work", tmp_path / "report" / "hippocampus.md"
    cmd = [sys.executable, "-m", "benchmarks.hippocampus", "--tiny", "--rows", "baseline", "mn", "--workdir", str(work),
           "--out", str(out), "--source", str(hippocampus_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    md = out.read_text()
    assert "| baseline | 2 | `nnUNetTrainer` |" in md and "| mn | 2 | `nnUNetTrainerMN` |" in md
    assert "EffNet-Lite0 U-Net, ImageNet-1k (PyPI, offline), lora" in md
    for png in ("hippocampus_dice.png", "hippocampus_walltime.png"):
        assert (out.parent / png).read_bytes()[:4] == b"\x89PNG"
    raw = out.parent / "hippocampus_raw"
    assert (raw / "bench_trainers_variants.json").is_file() and (raw / "run.json").is_file()
    for row, trainer in (("baseline", "nnUNetTrainer_benchtiny"), ("mn", "nnUNetTrainerMN_benchtiny")):
        rec = json.loads((raw / f"{row}.json").read_text())
        assert rec["status"] == "ok" and rec["bench_trainer"] == trainer
        assert rec["summary_mm"]["settings"]["n_cases"] == 4 and rec["summary_voxel"]["settings"]["units"] == "voxel"
        assert len(rec["train_log"]["epoch_s"]) == 2  # the 2-epoch schedule was applied
        assert all(rec["wall_s"][k] > 0 for k in ("train", "predict", "evaluate"))
    log = next((work / "nnUNet_results").glob("Dataset902_*/nnUNetTrainerMN_benchtiny__*/fold_all/training_log_*.txt"))
    assert "effnet_lite0" in log.read_text()
    split = json.loads(next((work / "nnUNet_raw").glob("Dataset902_*/split_record.json")).read_text())
    assert (split["num_labeled"], split["num_unlabeled"], split["num_test"], split["seed"]) == (2, 10, 4, 0)

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    assert "baseline: done earlier" in again.stdout and "mn: done earlier" in again.stdout
    assert "nnUNetv2_train" not in again.stdout


def test_noise_note_names_the_largest_run_to_run_difference():
    def row(question, a, b, dice, hd95):
        return {"question": question, "a": a, "b": b, "Dice": {"mean": dice, "verdict": "A"},
                "HD95": {"mean": hd95, "verdict": "unresolved"}}

    rows = [row("M&N vs nnU-Net (8 labels)", "mn", "baseline", -0.027, 0.18),
            row(f"{hb.RUN_TO_RUN}: nnU-Net, two runs (8 labels)", "baseline", "baseline_run2", -0.0004, -0.40),
            row(f"{hb.RUN_TO_RUN}: M&N, two runs (8 labels)", "mn", "mn_run2", -0.009, -0.02)]
    note = hb.noise_note(rows)[0]
    assert "`mn` vs `mn_run2` -0.009 Dice, -0.02 mm HD95" in note and "`baseline` vs `baseline_run2`" in note
    assert "smaller than about 0.009 Dice" in note and "`mn` vs `baseline`" not in note
    assert "not known" in hb.noise_note(rows[:1])[0]
    # a pair of which one run did not learn is instability, not the noise of the trained runs
    collapsed = {**row(f"{hb.RUN_TO_RUN}: self-training, two runs (8 labels)", "self_training", "self_training_run2",
                       -0.452, 10.4), "untrained": ["self_training"]}
    lines = hb.noise_note([*rows, collapsed])
    assert "smaller than about 0.009 Dice" in lines[0] and "-0.452" not in lines[0]
    assert "`self_training` vs `self_training_run2` (`self_training` did not learn)" in lines[2]


# ------------------------------------------------------------------------------------------------ new machine
def _raw_folder(tmp_path, records, split_test=("hippocampus_001", "hippocampus_002")):
    raw = tmp_path / "docs_raw"
    raw.mkdir()
    prep = {"Dataset508_Hippocampus_8lab": {"wall_s": {"make": 1.0}, "split": {"seed": 0, "num_labeled": 8,
            "num_test": 40, "labeled": ["hippocampus_003"], "test": list(split_test)},
            "plans": {"patch_size": [40, 56, 40], "batch_size": 9, "spacing": [1, 1, 1]}}}
    meta = {"started": "t0", "finished": "t1", "command": "python -m benchmarks.hippocampus", "machine": {"cpu": "old"},
            "invocations": [{"started": "t0", "finished": "t1", "command": "old run", "machine": {"cpu": "old"}}]}
    (raw / "run.json").write_text(json.dumps({"meta": meta, "prep": prep, "schedule": {"name": "cpu"}}))
    for rec in records:
        (raw / f"{rec['row']}.json").write_text(json.dumps(rec))
    (raw / "comparisons.json").write_text("[]")
    return raw


def test_import_records_continues_the_table_on_a_new_machine(tmp_path):
    """--import-records: the finished rows of a committed report are skipped and reported; failed ones run again;
    a row that already has a record here keeps it."""
    work = tmp_path / "work"
    raw = _raw_folder(tmp_path, [_record("baseline", [0.8, 0.6], [0.7, 0.5], 5.0),
                                 {**_record("mn", [0.1], [0.1], 1.0), "status": "failed", "error": "x"},
                                 _record("self_training", [0.7, 0.6], [0.7, 0.5], 5.0)])
    bench = hb.Bench(hb.parse_args(["--workdir", str(work), "--out", str(tmp_path / "r.md")]), hb.SCHEDULES["cpu"])
    mine = work / "rows" / "cpu" / "self_training.json"
    mine.parent.mkdir(parents=True)
    mine.write_text(json.dumps(_record("self_training", [0.9, 0.9], [0.9, 0.9], 5.0)))
    assert bench.import_records(raw) == ["baseline"]
    planned = {p.row.name: p for p in hb.plan_rows(["baseline", "mn", "self_training"], bench.schedule, bench.datasets)}
    assert bench.row_done(planned["baseline"]) and not bench.row_done(planned["mn"])
    assert json.loads(mine.read_text())["summary_mm"]["foreground_mean"]["Dice"] == 0.9  # kept
    rec = json.loads((work / "rows" / "cpu" / "baseline.json").read_text())
    assert rec["imported_from"] == str(raw)
    prep = json.loads((work / "rows" / "cpu" / "prep.json").read_text())
    assert prep["Dataset508_Hippocampus_8lab"]["split"]["test"] == ["hippocampus_001", "hippocampus_002"]
    # the report holds the imported rows and the earlier machine's run
    assert bench.report() == 0
    md = (tmp_path / "r.md").read_text()
    assert "| baseline | 8 |" in md and "old run" in md
    assert "Renamed rows" not in md  # none here
    renamed = {**_record("mn_replace", [0.7, 0.6], [0.7, 0.5], 5.0),
               "renamed_from": {"row": "mn", "trainer": "nnUNetTrainerMN", "on": "2026-12-07", "why": "a new default"}}
    assert "**Renamed rows.** `mn_replace` ran as row `mn` (`nnUNetTrainerMN`, 2026-12-07). Why: a new default." \
        in hb.renamed_note([renamed])
    other = {**_record("mn", [0.7, 0.6], [0.7, 0.5], 5.0),
             "renamed_from": {"row": "mn_add", "trainer": "nnUNetTrainerMN_AddUnlabeled", "on": "2026-12-07",
                              "why": "the same settings, now the default."}}
    twice = {**renamed, "row": "mn_replace_run2", "renamed_from": {**renamed["renamed_from"], "row": "mn_run2"}}
    # the rows table describes a renamed row by the question of its new name, not its old one
    renamed["what"] = "M&N as shipped"
    md = hb.markdown_report([renamed], {}, {}, hb.SCHEDULES["cpu"], tmp_path, "d.png", "t.png", "raw")
    assert f"| mn_replace | {hb.ROW_BY_NAME['mn_replace'].what} |" in md and "M&N as shipped" not in md
    # each reason once, after the rows it explains
    assert hb.renamed_note([renamed, other, twice])[0] == (
        "**Renamed rows.** `mn_replace` ran as row `mn` (`nnUNetTrainerMN`, 2026-12-07); `mn_replace_run2` ran as row "
        "`mn_run2` (`nnUNetTrainerMN`, 2026-12-07). Why: a new default. `mn` ran as row `mn_add` "
        "(`nnUNetTrainerMN_AddUnlabeled`, 2026-12-07). Why: the same settings, now the default.")
    dry = hb.Bench(hb.parse_args(["--dry-run", "--workdir", str(tmp_path / "dry")]), hb.SCHEDULES["cpu"])
    assert dry.import_records(raw) == [] and not (tmp_path / "dry").exists()  # a dry run writes nothing
    with pytest.raises(SystemExit, match="schedule 'cpu', not 'tiny'"):
        hb.Bench(hb.parse_args(["--tiny", "--workdir", str(work)]), hb.SCHEDULES["tiny"]).import_records(raw)


def test_a_data_set_prepared_again_must_give_the_same_split_and_plans():
    earlier = {"split": {"seed": 0, "labeled": ["a"], "test": ["b", "c"], "command": "old"},
               "plans": {"patch_size": [40, 56, 40], "batch_size": 9}}
    same = {"split": {"seed": 0, "labeled": ["a"], "test": ["b", "c"], "command": "new path"},
            "plans": {"patch_size": [40, 56, 40], "batch_size": 9, "network": "x"}}
    hb.check_same_split(earlier, same, "D")  # another command line does not matter
    hb.check_same_split({}, same, "D")  # nothing earlier
    with pytest.raises(RuntimeError, match="D: the split .*test"):
        hb.check_same_split(earlier, {**same, "split": {**same["split"], "test": ["b", "d"]}}, "D")
    with pytest.raises(RuntimeError, match="D: the plans .*patch_size"):
        hb.check_same_split(earlier, {**same, "plans": {"patch_size": [48, 56, 40], "batch_size": 9}}, "D")


def test_a_results_folder_is_never_resumed_with_other_settings(tmp_path):
    """A renamed row or a changed default must not continue (or reuse) a training made with other settings."""
    bench = hb.Bench(hb.parse_args(["--workdir", str(tmp_path / "w")]), hb.SCHEDULES["cpu"])
    mn, replace = hb.plan_rows(["mn", "mn_replace"], bench.schedule, bench.datasets)
    out = tmp_path / "results" / "fold_all"
    bench.claim_result_folder(mn, out)
    assert json.loads((out / hb.ROW_SETTINGS).read_text())["attributes"]["unlabeled_samples"] == "add"
    (out / "checkpoint_latest.pth").write_bytes(b"x")
    bench.claim_result_folder(mn, out)  # the same row resumes
    refusal = r"unlabeled_samples.*delete that folder \(and rows/cpu/mn_replace\.train\.json\)"
    with pytest.raises(RuntimeError, match=refusal):
        bench.claim_result_folder(replace, out)
    (out / hb.ROW_SETTINGS).unlink()
    with pytest.raises(RuntimeError, match="settings are unknown"):
        bench.claim_result_folder(mn, out)


def test_a_finished_training_keeps_its_resumed_flag(tmp_path, monkeypatch):
    """Predicting a row again whose training finished in an earlier, resumed run keeps `resumed_training` (the
    report then counts its epoch times, not the last invocation's wall time)."""
    import nnunetv2_mn.evaluation.evaluate as ev
    bench = hb.Bench(hb.parse_args(["--workdir", str(tmp_path / "w")]), hb.SCHEDULES["cpu"])
    p = hb.plan_rows(["baseline"], bench.schedule, bench.datasets)[0]
    out = bench.result_folder(p)
    bench.claim_result_folder(p, out)
    (out / "checkpoint_final.pth").write_bytes(b"")
    train = bench.records / "cpu" / "baseline.train.json"
    train.parent.mkdir(parents=True)
    train.write_text(json.dumps({"seconds": 100.0, "resumed": True, "invocations": []}))
    monkeypatch.setattr(bench, "run", lambda cmd, *a, **k: 1.0 if cmd[0] == "nnUNetv2_predict" else pytest.fail(cmd))
    monkeypatch.setattr(ev, "evaluate_folder", lambda *a, **k: {"foreground_mean": {"Dice": 0.5}})
    monkeypatch.setattr(hb.runner, "training_log", lambda folder: {})
    rec = bench.run_row(p)
    assert rec["resumed_training"] is True and rec["wall_s"]["train"] == 100.0
