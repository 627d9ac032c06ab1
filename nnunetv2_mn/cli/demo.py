"""`nnUNetv2_mn_demo`: the whole M&N workflow on a small synthetic data set, offline, in minutes on a CPU.

    nnUNetv2_mn_demo [--workdir DIR] [--trainer nnUNetTrainerMN_EffNetLite0_demo] [--keep] [--device auto]

Writes a synthetic data set (labelled, unlabelled and held-out test cases) into DIR/nnUNet_raw, then runs the real
console scripts as subprocesses, exactly as a user would: nnU-Net's planning and preprocessing, ours for the
unlabelled images, nnUNetv2_train with an M&N trainer, nnUNetv2_predict on the test images, and scores the
predictions (Dice per class). nnUNet_raw / nnUNet_preprocessed / nnUNet_results point into DIR for the
subprocesses only. Every command is printed before it runs; the full output of each goes to DIR/logs/.
"""
import argparse
import glob
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from typing import Callable, Dict, List, Optional, Sequence

from nnunetv2_mn.trainers import discovery

DATASET_ID = 987
DATASET_NAME = "MNDemo"
DEFAULT_TRAINER = "nnUNetTrainerMN_EffNetLite0_demo"
CONFIGURATION = "3d_fullres"
#: small enough for a few CPU minutes; 5 labelled cases are the minimum of the semi-supervised trainers
SYNTHETIC = {"num_labeled": 5, "num_unlabeled": 8, "num_test": 4, "shape": (24, 40, 40), "spacing": (2.0, 1.0, 1.0)}
MARKER = ".nnunetv2_mn_demo"
OWN_FOLDERS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "predictions", "logs")
N_STEPS = 6
#: lines of the training output worth showing live (the rest goes to the step's log file)
TRAIN_PROGRESS = re.compile(r": (Epoch \d+$|Pseudo dice|Epoch time|train_loss|M&N |Training done|Mean Validation)")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: ")
NUMPY_SCALAR = re.compile(r"np\.float\d+\(([^)]*)\)")
TAIL_LINES = 40


class DemoStepFailed(RuntimeError):
    """A step of the demo failed; the message names the step and shows the end of its output."""


# ------------------------------------------------------------------------------------------------ set-up
def prepare_workdir(workdir: Optional[str]) -> str:
    """Create (or reuse a previous demo's) work folder; refuse a non-empty folder that is not a demo's."""
    if workdir is None:
        return tempfile.mkdtemp(prefix="nnunetv2_mn_demo_")
    workdir = os.path.abspath(os.path.expanduser(workdir))
    if os.path.isdir(workdir) and os.listdir(workdir):
        if not os.path.isfile(os.path.join(workdir, MARKER)):
            raise SystemExit(f"nnUNetv2_mn_demo: {workdir} is not empty and was not written by the demo; "
                             f"pass an empty or new --workdir.")
        for name in OWN_FOLDERS:
            shutil.rmtree(os.path.join(workdir, name), ignore_errors=True)
    os.makedirs(workdir, exist_ok=True)
    return workdir


def demo_env(workdir: str) -> Dict[str, str]:
    """The user's environment with the nnU-Net folders inside `workdir` (for the subprocesses only)."""
    env = dict(os.environ)
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        env[name] = os.path.join(workdir, name)
        os.makedirs(env[name], exist_ok=True)
    env["PYTHONUNBUFFERED"] = "1"  # stream the subprocesses' output
    # nnU-Net's planner calls torch.set_num_threads(nnUNet_n_proc_DA), which rejects 0; 2 workers suit 2 cores
    env["nnUNet_n_proc_DA"] = "2"
    # nnU-Net's final validation spawns nnUNet_def_n_proc (default 8) export workers, each importing torch
    env["nnUNet_def_n_proc"] = "2"
    discovery.add_lookup_dir(env)  # find our trainers even when the start-up hook is disabled
    return env


def pick_device(requested: str) -> str:
    if requested != "auto":
        return requested
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def executable(name: str) -> str:
    """A console script: on PATH, else next to this Python (a venv that is not activated)."""
    found = shutil.which(name)
    if found:
        return found
    beside = os.path.join(os.path.dirname(sys.executable), name)
    return beside if os.path.exists(beside) else name


def stop_process_group(proc: subprocess.Popen) -> None:
    """Kill a step started with `start_new_session=True` together with the workers it spawned."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (AttributeError, OSError):  # no process groups (Windows) or already gone
        proc.kill()
    proc.wait()


def tidy(line: str) -> str:
    """A log line for the console: no timestamp, 'np.float32(0.5)' shown as '0.5'."""
    return NUMPY_SCALAR.sub(r"\1", TIMESTAMP.sub("", line.rstrip()))


class TrainingProgress:
    """Picks nnU-Net's training output for the console and folds each epoch into one line:
    'Epoch 3 | M&N stage 2, student: 3D (teacher: 2D) | train_loss -0.2372 | Pseudo dice [0.851, 0.0] | 22.74 s'."""

    def __init__(self):
        self.epoch: List[str] = []

    def __call__(self, line: str) -> Optional[str]:
        if not TRAIN_PROGRESS.search(line.rstrip()):
            return None
        text = tidy(line)
        if re.fullmatch(r"Epoch \d+", text):
            self.epoch = [text]
            return None
        if text.startswith("Epoch time:") and self.epoch:
            folded, self.epoch = " | ".join(self.epoch + [text.split(":", 1)[1].strip()]), []
            return folded
        if self.epoch and text.startswith(("M&N stage", "train_loss", "Pseudo dice")):
            self.epoch.append(text)
            return None
        return text


# ------------------------------------------------------------------------------------------------ steps
class Demo:
    def __init__(self, workdir: str, trainer: str, device: str, verbose: bool = False):
        self.workdir, self.trainer, self.device, self.verbose = workdir, trainer, device, verbose
        self.env = demo_env(workdir)
        self.raw = os.path.join(self.env["nnUNet_raw"], f"Dataset{DATASET_ID:03d}_{DATASET_NAME}")
        self.predictions = os.path.join(workdir, "predictions")
        self.logs = os.path.join(workdir, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.step_no = 0
        self.timings: List[tuple] = []

    def header(self, title: str) -> None:
        self.step_no += 1
        print(f"\n[{self.step_no}/{N_STEPS}] {title}", flush=True)

    def run(self, title: str, cmd: Sequence[str], show: Optional[Callable[[str], Optional[str]]] = None) -> None:
        """Run a console script, print its command, stream the lines `show` picks (and reformats), fail naming
        the step."""
        self.header(title)
        print("$ " + shlex.join(cmd), flush=True)
        log_file = os.path.join(self.logs, f"{self.step_no}_{os.path.basename(cmd[0])}.log")
        tail: deque = deque(maxlen=TAIL_LINES)
        start = time.time()
        try:
            # own process group: on Ctrl-C the demo stops the step with all of its workers
            proc = subprocess.Popen([executable(cmd[0]), *cmd[1:]], env=self.env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True)
        except OSError as e:
            raise DemoStepFailed(f"step {self.step_no}/{N_STEPS} ({title}): could not start {cmd[0]}: {e}. "
                                 f"Is nnunetv2-mn installed in this Python environment?")
        try:
            with open(log_file, "w", encoding="utf-8") as log:
                for line in proc.stdout:
                    log.write(line)
                    tail.append(line.rstrip())
                    shown = line.rstrip() if self.verbose else (show(line) if show is not None else None)
                    if shown is not None:
                        print("    " + shown, flush=True)
            rc = proc.wait()
        finally:
            if proc.poll() is None:  # interrupted: do not leave training running
                stop_process_group(proc)
        elapsed = time.time() - start
        self.timings.append((cmd[0], elapsed))
        if rc != 0:
            last = "\n".join("    " + t for t in tail)
            raise DemoStepFailed(f"step {self.step_no}/{N_STEPS} ({title}) failed: {cmd[0]} exited with code {rc} "
                                 f"after {elapsed:.0f} s.\nLast lines of its output:\n{last}\nFull output: {log_file}")
        print(f"    done in {elapsed:.0f} s (output: {log_file})", flush=True)

    # -- 1
    def make_data(self) -> None:
        from nnunetv2_mn.data.synthetic import make_synthetic_dataset

        self.header("Synthetic data set: labelled, unlabelled and held-out test cases")
        s = SYNTHETIC
        print(f"$ nnUNetv2_mn_synthetic -d {DATASET_ID} --name {DATASET_NAME} --num_labeled {s['num_labeled']} "
              f"--num_unlabeled {s['num_unlabeled']} --num_test {s['num_test']} "
              f"--shape {' '.join(map(str, s['shape']))}   (run in-process)", flush=True)
        start = time.time()
        try:
            make_synthetic_dataset(DATASET_ID, DATASET_NAME, s["num_labeled"], s["num_unlabeled"], s["num_test"],
                                   s["shape"], s["spacing"], raw_dir=self.env["nnUNet_raw"])
        except Exception as e:
            raise DemoStepFailed(f"step 1/{N_STEPS} (synthetic data set) failed: {type(e).__name__}: {e}")
        self.timings.append(("nnUNetv2_mn_synthetic", time.time() - start))
        print(f"    {self.raw}: imagesTr/labelsTr {s['num_labeled']}, imagesUnlabeled {s['num_unlabeled']}, "
              f"imagesTs/labelsTs {s['num_test']} cases of {s['shape']} voxels", flush=True)

    # -- 2-5
    def plan_and_preprocess(self) -> None:
        self.run("nnU-Net planning and preprocessing of the labelled cases",
                 ["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", CONFIGURATION,
                  "--verify_dataset_integrity", "-npfp", "2", "-np", "2"])

    def preprocess_unlabeled(self) -> None:
        self.run("Preprocessing of the unlabelled images with the same plans",
                 ["nnUNetv2_mn_preprocess_unlabeled", "-d", str(DATASET_ID), "-c", CONFIGURATION, "-np", "2"])

    def train(self) -> None:
        self.run(f"Training {self.trainer} on all labelled cases (fold 'all') + the unlabelled images",
                 ["nnUNetv2_train", str(DATASET_ID), CONFIGURATION, "all", "-tr", self.trainer,
                  "-device", self.device], show=TrainingProgress())

    def predict(self) -> None:
        self.run("Prediction of the held-out test images (3D network only, as in M&N)",
                 ["nnUNetv2_predict", "-i", os.path.join(self.raw, "imagesTs"), "-o", self.predictions,
                  "-d", str(DATASET_ID), "-c", CONFIGURATION, "-tr", self.trainer, "-f", "all",
                  "--disable_tta", "-device", self.device, "-npp", "1", "-nps", "1"])

    # -- 6
    def evaluate(self) -> dict:
        from nnunetv2_mn.evaluation.evaluate import evaluate_folder

        self.header("Evaluation of the predictions against labelsTs")
        print(f"$ nnUNetv2_mn_evaluate -ref {os.path.join(self.raw, 'labelsTs')} -pred {self.predictions} "
              f"-djfile {os.path.join(self.raw, 'dataset.json')}   (run in-process)", flush=True)
        start = time.time()
        try:
            summary = evaluate_folder(os.path.join(self.raw, "labelsTs"), self.predictions,
                                      os.path.join(self.raw, "dataset.json"), num_processes=1)
        except Exception as e:
            raise DemoStepFailed(f"step {self.step_no}/{N_STEPS} (evaluation) failed: {type(e).__name__}: {e}")
        self.timings.append(("evaluation", time.time() - start))
        return summary

    # -- report
    def training_output_folder(self) -> str:
        return os.path.join(self.env["nnUNet_results"], f"Dataset{DATASET_ID:03d}_{DATASET_NAME}",
                            f"{self.trainer}__nnUNetPlans__{CONFIGURATION}", "fold_all")

    def model2d_used(self) -> Optional[str]:
        return model2d_from_logs(self.training_output_folder())


def model2d_from_logs(output_folder: str) -> Optional[str]:
    """The text after 'M&N 2D model:' in the newest training log of `output_folder`, or None."""
    for log in sorted(glob.glob(os.path.join(output_folder, "training_log_*.txt")), reverse=True):
        with open(log, encoding="utf-8", errors="replace") as f:
            for line in f:
                if "M&N 2D model:" in line:
                    return line.split("M&N 2D model:", 1)[1].strip()
    return None


def dice_lines(summary: dict) -> List[str]:
    width = max(len(name) for name in summary["labels"].values())
    lines = []
    for key, name in summary["labels"].items():
        mean, std = summary["mean"][key]["Dice"], summary["std"][key]["Dice"]
        value = "n/a" if mean is None else f"{mean:.4f} ± {std:.4f}"
        lines.append(f"  Dice label {key} {name:<{width}}  {value}")
    fg = summary["foreground_mean"]["Dice"]
    lines.append(f"  Dice foreground mean{' ' * (width - 6)}  {'n/a' if fg is None else f'{fg:.4f}'}")
    return lines


NEXT_STEPS = """\
Next, on your own data (README.md, docs/data.md):
  export nnUNet_raw=... nnUNet_preprocessed=... nnUNet_results=...
  # $nnUNet_raw/DatasetXXX_Name: imagesTr/ + labelsTr/ (labelled), imagesUnlabeled/ (images only), dataset.json
  #   or split a labelled data set: nnUNetv2_mn_make_semisupervised -d SOURCE -o XXX --num_labeled N --num_test M
  nnUNetv2_mn_doctor
  nnUNetv2_plan_and_preprocess -d XXX -c 3d_fullres --verify_dataset_integrity
  nnUNetv2_mn_preprocess_unlabeled -d XXX -c 3d_fullres
  nnUNetv2_train XXX 3d_fullres 0 -tr nnUNetTrainerMN          # folds 0-4; offline: -tr nnUNetTrainerMN_EffNetLite0
  nnUNetv2_predict -i IMAGES -o PRED -d XXX -c 3d_fullres -tr nnUNetTrainerMN -f 0 1 2 3 4
  nnUNetv2_mn_evaluate -ref LABELS -pred PRED -djfile $nnUNet_raw/DatasetXXX_Name/dataset.json"""


def report(demo: Demo, summary: dict, total: float, kept: bool) -> None:
    print("\n" + "=" * 78)
    print(f"nnUNetv2_mn_demo finished in {total / 60:.1f} min ({total:.0f} s) on {demo.device}.")
    print(f"Trainer: {demo.trainer}")
    model2d = demo.model2d_used()
    print(f"2D model: {model2d}" if model2d else "2D model: none logged (this trainer has no M&N 2D model)")
    print(f"Test cases: {summary['settings']['n_cases']} (held out: never seen in training)")
    print("\n".join(dice_lines(summary)))
    print("Time per step: " + ", ".join(f"{name} {sec:.0f} s" for name, sec in demo.timings))
    if kept:
        print(f"Outputs in {demo.workdir}: predictions/ (+ summary_mn.json/.md), "
              f"nnUNet_results/ (model, training log, progress.png), logs/")
    print("\n" + NEXT_STEPS)


# ------------------------------------------------------------------------------------------------ driver
def _parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="nnUNetv2_mn_demo", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default=None,
                   help="folder for the data, models and predictions (kept; reused if a previous demo wrote it). "
                        "Default: a new temporary folder, deleted at the end unless --keep or a step fails")
    p.add_argument("--trainer", default=DEFAULT_TRAINER,
                   help=f"trainer for nnUNetv2_train -tr (default: {DEFAULT_TRAINER}: EfficientNet-Lite0 2D model, "
                        f"offline; nnUNetTrainerMN_debug: a 4-epoch smoke test)")
    p.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="-device of nnUNetv2_train / nnUNetv2_predict (default: cuda if available, else cpu)")
    p.add_argument("--verbose", action="store_true", help="print the subprocesses' whole output")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = _parse_args(argv)
    workdir = prepare_workdir(args.workdir)
    keep = args.keep or args.workdir is not None
    with open(os.path.join(workdir, MARKER), "w") as f:
        f.write("written by nnUNetv2_mn_demo; the demo may delete this folder's contents\n")
    device = pick_device(args.device)
    print(f"nnUNetv2_mn_demo: M&N on a synthetic data set, offline, device {device}\n"
          f"work folder: {workdir}{'' if keep else ' (temporary: deleted at the end; --keep keeps it)'}\n"
          f"the subprocesses get nnUNet_raw, nnUNet_preprocessed, nnUNet_results inside it", flush=True)
    demo = Demo(workdir, args.trainer, device, args.verbose)
    start = time.time()
    try:
        demo.make_data()
        demo.plan_and_preprocess()
        demo.preprocess_unlabeled()
        demo.train()
        demo.predict()
        summary = demo.evaluate()
    except DemoStepFailed as e:
        print(f"\nnnUNetv2_mn_demo FAILED: {e}\nThe work folder is kept for inspection: {workdir}\n"
              f"Run nnUNetv2_mn_doctor to check the set-up.", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print(f"\nnnUNetv2_mn_demo interrupted; work folder: {workdir}", file=sys.stderr)
        return 130
    report(demo, summary, time.time() - start, keep)
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"\n(temporary work folder {workdir} deleted; run with --keep or --workdir DIR to keep it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
