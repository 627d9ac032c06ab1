"""benchmarks/step_cost.py on the synthetic plans: every step kind timed, ratios to nnUNetTrainer, the 2D
student's slice share, CPU peak memory per step kind in processes of their own."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "step_cost.py"


def _run(planned_synthetic, tmp_path, *extra):
    out = tmp_path / "cost.json"
    cmd = [sys.executable, str(SCRIPT), "-d", planned_synthetic["dataset_id"], "--device", "cpu", "--steps", "2",
           "--warmup", "1", "--model", "effnet_lite0", "--finetune", "whole", "--out", str(out), *extra]
    proc = subprocess.run(cmd, env=planned_synthetic["env"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_step_cost_split_memory_and_slice_share(planned_synthetic, tmp_path):
    res = _run(planned_synthetic, tmp_path, "--memory", "--slice-fraction", "0.25")
    for k in ("nnunet", "stage1", "3d_student", "2d_teacher", "2d_student", "predict_nnunet", "predict_mn"):
        assert res[k]["mean_s"] > 0, k
    r = res["ratio_to_nnunet"]
    assert r["stage1"] == pytest.approx(res["stage1"]["mean_s"] / res["nnunet"]["mean_s"])
    assert r["mean_stage2_epoch_pair"] == pytest.approx((r["3d_student"] + r["2d_student"]) / 2)
    assert r["predict"] == pytest.approx(res["predict_mn"]["mean_s"] / res["predict_nnunet"]["mean_s"])
    assert res["student2d_slice_fraction"] == 0.25 and "effnet_lite0 (whole)" in res["trainable_2d"]
    mem = res["memory_cpu"]
    assert set(mem) == {"nnunet", "stage1", "3d_student", "2d_teacher", "2d_student"}
    for v in mem.values():
        assert v["peak_rss_gb"] >= v["rss_after_setup_gb"] > 0.1
    # the nnU-Net process holds no 2D model: it sets up lighter than the M&N ones
    assert mem["nnunet"]["rss_after_setup_gb"] < mem["stage1"]["rss_after_setup_gb"]
    assert all(v["step_increase_gb"] > 0 for v in mem.values())


def test_render_table_from_results(tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location("step_cost_script", SCRIPT)
    sc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sc)
    r = {"2d_model": "effnet_lite0 (lora)", "student2d_slice_fraction": 0.25, "nnunet": {"mean_s": 2.0},
         "ratio_to_nnunet": {"stage1": 1.5, "3d_student": 1.25, "2d_teacher": 0.25, "2d_student": 0.5,
                             "mean_stage2_epoch_pair": 0.875, "predict": 1.0},
         "memory_cpu": {k: {"step_increase_gb": v} for k, v in
                        (("nnunet", 0.5), ("stage1", 0.75), ("3d_student", 0.6), ("2d_student", 0.25))}}
    (tmp_path / "a.json").write_text(json.dumps(r))
    row = sc.render_table([tmp_path / "a.json"]).splitlines()[-1]
    assert row == ("| effnet_lite0 (lora) | 0.25 | 2 | 1.50× | 1.25× | 0.25× | 0.50× | 0.88× | 1.00× | "
                   "0.50 / 0.75 / 0.60 / 0.25 |")


def test_render_table_names_the_views_of_a_multi_view_2d_model(tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location("step_cost_script", SCRIPT)
    sc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sc)
    r = {"2d_model": "segformer-b2 (lora)", "student2d_slice_fraction": 1.0, "slice_axes": [0, 1, 2],
         "nnunet": {"mean_s": 1.0}, "ratio_to_nnunet": {"stage1": 3, "3d_student": 2, "2d_teacher": 1, "2d_student": 3,
                                                        "mean_stage2_epoch_pair": 2.5}}
    (tmp_path / "a.json").write_text(json.dumps(r))
    assert "| segformer-b2 (lora) | 1, axes [0, 1, 2] | 1 |" in sc.render_table([tmp_path / "a.json"])


def test_step_cost_on_a_plans_preset_without_data(tmp_path):
    """`--plans hippocampus` needs no preprocessed data set; `--kinds` times a subset (nnU-Net's step always); `--ab`
    times each M&N kind also without the levers, in the same process."""
    import os
    out = tmp_path / "cost.json"
    env = {k: v for k, v in os.environ.items() if k not in ("nnUNet_preprocessed", "nnUNet_raw")}
    env.update({"nnUNet_results": str(tmp_path / "results"), "OMP_NUM_THREADS": "2"})
    cmd = [sys.executable, str(SCRIPT), "--plans", "hippocampus", "--device", "cpu", "--steps", "1", "--warmup", "0",
           "--model", "effnet_lite0", "--finetune", "whole", "--kinds", "2d_teacher", "--teacher-inference-mode",
           "--channels-last", "--ab", "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["plans"] == "hippocampus" and res["patch_size"] == [40, 48, 40] and res["batch_size"] == 2
    assert set(res["ratio_to_nnunet"]) == {"2d_teacher"} and res["nnunet"]["mean_s"] > 0
    assert "stage1" not in res and "predict_mn" not in res
    assert res["levers"]["teacher_inference_mode"] and res["levers"]["channels_last_2d"]
    plain = res["2d_teacher:without_levers"]["mean_s"]
    assert res["ratio_to_nnunet:without_levers"]["2d_teacher"] == pytest.approx(plain / res["nnunet"]["mean_s"])
    assert res["lever_speedup"]["2d_teacher"] == pytest.approx(plain / res["2d_teacher"]["mean_s"])


def test_render_table_names_the_levers_and_leaves_untimed_kinds_empty(tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location("step_cost_script", SCRIPT)
    sc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sc)
    r = {"2d_model": "segformer-b2 (lora)", "nnunet": {"mean_s": 4.0},
         "levers": {"teacher_merge_lora": True, "teacher_inference_mode": True, "teacher_slice_chunk": None,
                    "channels_last_2d": False, "cpu_bf16_2d": False},
         "ratio_to_nnunet": {"3d_student": 1.5, "2d_teacher": 0.25}}
    (tmp_path / "a.json").write_text(json.dumps(r))
    assert sc.render_table([tmp_path / "a.json"]).splitlines()[-1] == (
        "| segformer-b2 (lora) + merged LoRA, inference mode | 1 | 4 | – | 1.50× | 0.25× | – | – | – | "
        "not measured |")
    a = sc.make_parser().parse_args(["--plans", "la", "--teacher-merge-lora", "--cpu-bf16", "--teacher-chunk", "8",
                                     "--out", "x"])
    assert sc.lever_args(a) == ["--teacher-merge-lora", "--cpu-bf16", "--teacher-chunk", "8"]


def test_render_lever_table_gives_the_speedups_of_an_ab_run(tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location("step_cost_script", SCRIPT)
    sc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sc)
    r = {"2d_model": "effnet_lite0 (lora)", "plans": "hippocampus", "clock": "cpu",
         "levers": {"teacher_merge_lora": False, "teacher_inference_mode": False, "teacher_slice_chunk": None,
                    "channels_last_2d": True, "cpu_bf16_2d": False},
         "lever_speedup": {"stage1": 1.09, "2d_teacher": 1.405}}
    (tmp_path / "a.json").write_text(json.dumps(r))
    assert sc.render_lever_table([tmp_path / "a.json"]).splitlines()[-1] == (
        "| effnet_lite0 (lora) | channels-last | hippocampus | cpu | 1.09× | – | 1.41× | – |")


@pytest.mark.parametrize("flag, b_l", [((), 2), (("--replace-unlabeled",), 1)])
def test_student_steps_follow_the_trainers_batch(flag, b_l, monkeypatch):
    """The stage-2 student steps are timed with the trainer's batch: by default the whole labelled batch (B = 2) and
    b_u = 1 unlabelled sample on top; with --replace-unlabeled the paper's b_l = B - b_u."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("step_cost_script", SCRIPT)
    sc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sc)
    monkeypatch.setenv("nnUNet_preprocessed", "unset")  # the preset writes its own
    a = sc.make_parser().parse_args(["--plans", "hippocampus", "--device", "cpu", "--model", "effnet_lite0",
                                     "--out", "x", *flag])
    bench = sc.build_steps(a, phases=("3d_student", "2d_student"))
    mn, seen = bench["mn"], []
    for name in ("train_3d_student", "train_2d_student"):
        monkeypatch.setattr(mn, name, lambda data_l, target_l, data_u: seen.append(
            (data_l.shape[0], target_l[0].shape[0], data_u.shape[0])) or {"loss": 0.0})
    bench["steps"]["3d_student"]()
    bench["steps"]["2d_student"]()
    assert seen == [(b_l, b_l, 1)] * 2
    assert (bench["meta"]["b_l"], bench["meta"]["b_u"]) == (b_l, 1)
    assert bench["meta"]["unlabeled_samples"] == ("replace" if flag else "add")


def test_peer_steps_are_the_trainers_own_steps_on_their_batch(monkeypatch):
    """--kinds mean_teacher uamt dtc self_training: each peer's own step on B = 2 labelled samples and b_u = 1
    unlabelled sample on top (their default batch); self-training's student trains nnU-Net's step on B labelled and B
    pseudo-labelled samples. No M&N trainer (no 2D model) is built for them."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("step_cost_script", SCRIPT)
    sc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sc)
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    monkeypatch.setenv("nnUNet_preprocessed", "unset")  # the preset writes its own
    kinds = ("mean_teacher", "uamt", "dtc", "self_training")
    a = sc.make_parser().parse_args(["--plans", "hippocampus", "--device", "cpu", "--out", "x", "--kinds", *kinds])
    seen = {}
    built = []
    load = sc.load_trainer
    monkeypatch.setattr(sc, "load_trainer", lambda cls, *args: built.append(cls.__name__) or load(cls, *args))
    monkeypatch.setattr(nnUNetTrainer, "train_step", lambda self, batch: seen.setdefault(
        type(self).__name__, (batch["data"].shape[0], batch["target"][0].shape[0])) and {"loss": 0.0})
    bench = sc.build_steps(a, phases=("nnunet", *kinds))
    assert bench["mn"] is None and sorted(built) == sorted(["nnUNetTrainer", *map(sc.PEERS.get, kinds)])
    for kind in kinds[:3]:
        cls = sc.peer_class(kind)
        monkeypatch.setattr(cls, "semi_supervised_step", lambda self, data_l, target_l, data_u: seen.setdefault(
            type(self).__name__, (data_l.shape[0], target_l[0].shape[0], data_u.shape[0])) and {"loss": 0.0})
    for kind in kinds:
        bench["steps"][kind]()
    assert seen["nnUNetTrainerSelfTraining"] == (4, 4)
    for kind in kinds[:3]:
        assert seen[sc.PEERS[kind]] == (2, 2, 1), kind
    assert set(sc.ratios({"nnunet": {"mean_s": 2.0}, "dtc": {"mean_s": 3.0}})) == {"dtc"}


def test_render_peer_table(tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location("step_cost_script", SCRIPT)
    sc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sc)
    r = {"plans": "hippocampus", "patch_size": [40, 48, 40], "batch_size": 2, "clock": "cpu", "threads": 1,
         "nnunet": {"mean_s": 2.0}, "ratio_to_nnunet": {"mean_teacher": 1.5, "uamt": 2.75, "dtc": 1.25}}
    (tmp_path / "a.json").write_text(json.dumps(r))
    assert sc.render_peer_table([tmp_path / "a.json"]).splitlines()[-1] == (
        "| hippocampus (40×48×40, 2) | cpu, 1 | 2 | 1.50× | 2.75× | 1.25× | – | not measured |")
