"""Shared fixtures: isolated nnU-Net folders and the real data set when it is present."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HIPPOCAMPUS = REPO.parent / "shared" / "data" / "Task04_Hippocampus"


@pytest.fixture
def nnunet_dirs(tmp_path, monkeypatch):
    """Fresh nnUNet_raw / nnUNet_preprocessed / nnUNet_results for one test, exported to the env."""
    dirs = {}
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        d = tmp_path / name
        d.mkdir()
        monkeypatch.setenv(name, str(d))
        dirs[name] = d
    return dirs


@pytest.fixture
def hippocampus_dir():
    if not (HIPPOCAMPUS / "dataset.json").is_file():
        pytest.skip(f"real data not found at {HIPPOCAMPUS}")
    return HIPPOCAMPUS


def run_cli(args, env, timeout=900, check=True):
    """Run a console script as a user would; on failure show its output."""
    import subprocess
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="session")
def plan_in_process():
    """`plan(base, dataset_id, make_raw)`: fresh nnU-Net folders under `base`, the raw data set written by
    `make_raw()`, then nnU-Net's fingerprint, plans and 3d_fullres preprocessing in this process. Returns `base`."""
    def plan(base, dataset_id, make_raw):
        from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprints, plan_experiments,
                                                                          preprocess_dataset)
        with pytest.MonkeyPatch.context() as mp:
            for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
                (base / name).mkdir()
                mp.setenv(name, str(base / name))
            make_raw()
            extract_fingerprints([dataset_id], num_processes=1)
            plan_experiments([dataset_id])
            preprocess_dataset(dataset_id, configurations=("3d_fullres",), num_processes=(1,))
        return base

    return plan


SYNTHETIC_ID = 911


@pytest.fixture
def synthetic_own_results(planned_synthetic, tmp_path):
    """`planned_synthetic` with an nnUNet_results of this test's own, so that trainings of the same trainer in other
    tests of the session never share a result folder."""
    results = tmp_path / "nnUNet_results"
    results.mkdir()
    return {**planned_synthetic, "env": {**planned_synthetic["env"], "nnUNet_results": str(results)},
            "results": results}


@pytest.fixture(scope="session")
def cli():
    """`run_cli(args, env)` for tests (conftest is not importable by name under --import-mode=importlib)."""
    return run_cli


@pytest.fixture(scope="session")
def planned_synthetic(tmp_path_factory, cli):
    """A small synthetic dataset with unlabelled images, planned and preprocessed with the real console
    scripts (nnU-Net's and ours). Returns the environment for further subprocess calls and the folders."""
    base = tmp_path_factory.mktemp("nnunet")
    env = dict(os.environ)
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (base / name).mkdir()
        env[name] = str(base / name)
    # 2 cores: no augmentation workers, and 2 (not 8) spawned export workers in nnU-Net's final validation
    env.update({"nnUNet_n_proc_DA": "0", "nnUNet_def_n_proc": "2", "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"})
    cli(["nnUNetv2_mn_synthetic", "-d", str(SYNTHETIC_ID), "--num_labeled", "5", "--num_unlabeled", "4",
             "--num_test", "2", "--shape", "16", "32", "32"], env)
    # nnU-Net's planner calls torch.set_num_threads(nnUNet_n_proc_DA), which rejects 0
    plan_env = {**env, "nnUNet_n_proc_DA": "2"}
    cli(["nnUNetv2_plan_and_preprocess", "-d", str(SYNTHETIC_ID), "-c", "3d_fullres", "-npfp", "2", "-np", "2",
             "--verify_dataset_integrity"], plan_env)
    cli(["nnUNetv2_mn_preprocess_unlabeled", "-d", str(SYNTHETIC_ID), "-c", "3d_fullres", "-np", "2"], env)
    raw = next((base / "nnUNet_raw").glob(f"Dataset{SYNTHETIC_ID}_*"))
    pre = next((base / "nnUNet_preprocessed").glob(f"Dataset{SYNTHETIC_ID}_*"))
    return {"env": env, "raw": raw, "preprocessed": pre, "results": base / "nnUNet_results",
            "dataset_id": str(SYNTHETIC_ID)}
