"""Issue #13's prediction-time features measured on the Hippocampus benchmark's trained M&N rows.

For each trained row (an M&N trainer that kept its 2D model), on the row's 40 test cases, with the stock-layout
commands of this package:

* **2D+3D ensemble** (`nnUNetv2_mn_predict_ensemble --weight_2d w`, no mirroring as the CPU schedule's own
  predictions): Dice and HD95 against the row's stock `nnUNetv2_predict` output (its benchmark record), paired over
  the cases. The weights are the ones given on the command line; none is chosen from these test cases.
* **Uncertainty** (`nnUNetv2_mn_predict_uncertainty`, with test-time mirroring): does a case's mean uncertainty inside
  its predicted foreground (entropy; 2D/3D disagreement) rank the cases as their Dice does? Spearman's rho between
  the summary's column and the case's Dice (of that command's own segmentation), and how many of the k worst cases
  (lowest Dice) are among the k most uncertain, against k·k/n expected by chance.

    python -m benchmarks.hippocampus_predict --workdir /root/mn_bench_cpu --rows mn mn_4lab \\
        --weights 0.25 0.5 --out docs/benchmarks/hippocampus_predict.md

Outputs go to `<workdir>/predictions/<schedule>_predict/`; a finished prediction (every test case and its summary
there) is not run again. Raw values: `<out stem>_raw/<row>.json`.
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from benchmarks.hippocampus.bench_trainers import SPEC_FILE
from benchmarks.hippocampus.runner import bench_env
from benchmarks.hippocampus.spec import BENCH_MODULE, SUMMARY_MM
from benchmarks.hippocampus.trainers import FACTORY
from nnunetv2_mn.evaluation.compare import compare_summaries, per_case_foreground_mean
from nnunetv2_mn.evaluation.evaluate import evaluate_folder

COLUMNS = ("mean_uncertainty_foreground", "mean_disagreement_foreground")


# ================================================================================================ statistics
def ranking_agreement(scores: Dict[str, float], dice: Dict[str, float], k: int) -> dict:
    """How well `scores` (higher = more uncertain) flag the cases with low Dice: Spearman's rho between score and
    Dice over the cases both have (negative = uncertain cases score worse) and the overlap of the k most uncertain
    with the k lowest-Dice cases, with its expectation under a random order (k^2 / n)."""
    from scipy.stats import spearmanr

    cases = sorted(c for c in set(scores) & set(dice) if scores[c] is not None and np.isfinite(scores[c]))
    n = len(cases)
    if n < 3:
        raise ValueError(f"need at least 3 cases with a score and a Dice, got {n}")
    k = min(k, n)
    s, d = np.array([scores[c] for c in cases]), np.array([dice[c] for c in cases])
    rho, p = spearmanr(s, d)
    most_uncertain = {cases[i] for i in np.argsort(-s, kind="stable")[:k]}
    worst = {cases[i] for i in np.argsort(d, kind="stable")[:k]}
    return {"n": n, "spearman_rho": float(rho), "p": float(p), "k": k,
            "worst_k_among_most_uncertain_k": len(most_uncertain & worst), "expected_by_chance": k * k / n}


def dice_by_case_id(summary: dict) -> Dict[str, float]:
    """{case id: mean foreground Dice} from an `evaluate_folder` summary (file ending stripped)."""
    return {name.split(".")[0]: v for name, v in per_case_foreground_mean(summary, "Dice").items()}


# ================================================================================================ running
class PredictBench:
    def __init__(self, workdir: Path, schedule: str = "cpu", dry_run: bool = False):
        self.workdir, self.schedule, self.dry = workdir.resolve(), schedule, dry_run
        self.out_root = self.workdir / "predictions" / f"{schedule}_predict"
        self.env = bench_env(self.workdir, self.trainer_folder())

    def trainer_folder(self) -> Path:
        """The benchmark's trainer classes for this package version: the factory module of this checkout with the
        variants the rows were trained with (`<workdir>/bench_trainers/<schedule>/variants.json`), in a folder of
        its own, so that the driver's folder (written by the code a running row uses) is never touched."""
        source = self.workdir / BENCH_MODULE / self.schedule / SPEC_FILE
        if not source.is_file():
            raise FileNotFoundError(f"{source}: no benchmark run of schedule {self.schedule!r} in {self.workdir}")
        folder = self.workdir / BENCH_MODULE / f"{self.schedule}_predict"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / SPEC_FILE).write_text(source.read_text())
        (folder / f"{BENCH_MODULE}.py").write_text(FACTORY.read_text())
        return folder

    def record(self, row: str) -> dict:
        path = self.workdir / "rows" / self.schedule / f"{row}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: row {row} has not been run (python -m benchmarks.hippocampus)")
        record = json.loads(path.read_text())
        if record.get("status") != "ok":
            raise RuntimeError(f"{path}: row {row} did not finish (status {record.get('status')!r})")
        return record

    def say(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def predict(self, command: str, record: dict, out: Path, extra: Sequence[str]) -> Optional[float]:
        """One prediction command on the row's test images into `out`; its wall seconds (None: done earlier)."""
        raw = self.workdir / "nnUNet_raw" / record["dataset"]
        n_test = len(list((raw / "labelsTs").iterdir()))
        if out.is_dir() and len(list(out.glob("*.nii.gz"))) == n_test and (out / SUMMARY_MM).is_file():
            return None
        cmd = [command, "-i", str(raw / "imagesTs"), "-o", str(out), "-d", record["dataset"], "-c", "3d_fullres",
               "-tr", record["bench_trainer"], "-p", "nnUNetPlans", "-f", "all", "-device", "cpu", "-npp", "1",
               "-nps", "1", "--disable_progress_bar", *extra]
        self.say("$ " + " ".join(cmd))
        if self.dry:
            return 0.0
        start = time.time()
        log = self.out_root / f"{out.name}.log"
        with open(log, "w") as f:
            done = subprocess.run(cmd, env=self.env, stdout=f, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            raise RuntimeError(f"{command} failed (exit {done.returncode}); see {log}")
        return time.time() - start

    def evaluate(self, record: dict, pred: Path) -> dict:
        summary_file = pred / SUMMARY_MM
        if summary_file.is_file():
            return json.loads(summary_file.read_text())
        raw = self.workdir / "nnUNet_raw" / record["dataset"]
        return evaluate_folder(str(raw / "labelsTs"), str(pred), str(raw / "dataset.json"), str(summary_file),
                               voxel_units=False, num_processes=2)

    def run_row(self, row: str, weights: Sequence[float], k: int) -> dict:
        record = self.record(row)
        self.out_root.mkdir(parents=True, exist_ok=True)
        stock = record["summary_mm"]
        result = {"row": row, "trainer": record["trainer"], "dataset": record["dataset"],
                  "num_labeled": record["num_labeled"], "model2d": record["model2d"],
                  "stock_dice": stock["foreground_mean"]["Dice"], "ensemble": [], "uncertainty": None}
        for w in weights:
            out = self.out_root / f"{row}_ensemble_w{w:g}"
            wall = self.predict("nnUNetv2_mn_predict_ensemble", record, out, ["--disable_tta", "--weight_2d", str(w)])
            if self.dry:
                continue
            summary = self.evaluate(record, out)
            result["ensemble"].append({
                "weight_2d": w, "wall_s": wall, "dice": summary["foreground_mean"]["Dice"],
                "hd95": summary["foreground_mean"].get("HD95"),
                "vs_stock_dice": compare_summaries(summary, stock, "Dice"),
                "vs_stock_hd95": compare_summaries(summary, stock, "HD95")})
            self.say(f"{row}: ensemble w = {w:g}: Dice {result['ensemble'][-1]['dice']:.3f}")
        out = self.out_root / f"{row}_uncertainty"
        wall = self.predict("nnUNetv2_mn_predict_uncertainty", record, out, [])
        if self.dry:
            return result
        summary = self.evaluate(record, out)
        rows = json.loads((out / "uncertainty" / "summary.json").read_text())["cases"]
        dice = dice_by_case_id(summary)
        result["uncertainty"] = {
            "wall_s": wall, "dice": summary["foreground_mean"]["Dice"],
            **{column: ranking_agreement({r["case"]: r[column] for r in rows}, dice, k)
               for column in COLUMNS if any(r[column] is not None for r in rows)}}
        self.say(f"{row}: uncertainty: " + ", ".join(
            f"{c} rho {result['uncertainty'][c]['spearman_rho']:+.2f}" for c in COLUMNS if c in result["uncertainty"]))
        return result


# ================================================================================================ report
def _ci(c: dict, digits: int = 3) -> str:
    return f"{c['mean']:+.{digits}f} [{c['ci_low']:+.{digits}f}, {c['ci_high']:+.{digits}f}]"


def markdown(results: List[dict], command: str) -> str:
    lines = ["# Prediction-time features on the Hippocampus benchmark (issue #13)", "",
             "Written by `benchmarks/hippocampus_predict.py` from the trained rows of the CPU benchmark "
             "([hippocampus.md](hippocampus.md)): each row's own 3D network and the 2D model it kept at the end of "
             "training, its 40 test cases. Nothing was trained for this page and no setting was chosen from it.", "",
             "```bash", command, "```", "",
             "## 2D+3D ensemble (`nnUNetv2_mn_predict_ensemble`)", "",
             "P = (1 − w)·P_3D + w·P_2D; no test-time mirroring, as the rows' stock predictions; w = 1 is the kept 2D "
             "model alone. Differences are ensemble − stock `nnUNetv2_predict` (the row's benchmark output), paired "
             "over the test cases, 95 % bootstrap interval, Wilcoxon p.", "",
             "| row | labelled | 2D model | stock Dice | w | ensemble Dice | Dice difference | p | HD95 difference (mm) "
             "| wall (s) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for e in r["ensemble"]:
            lines.append(f"| {r['row']} | {r['num_labeled']} | {r['model2d']} | {r['stock_dice']:.3f} | "
                         f"{e['weight_2d']:g} | {e['dice']:.3f} | {_ci(e['vs_stock_dice'])} | "
                         f"{e['vs_stock_dice']['p_wilcoxon']:.2g} | {_ci(e['vs_stock_hd95'], 2)} | "
                         f"{e['wall_s'] or 0:.0f} |")
    lines += ["", "## Uncertainty (`nnUNetv2_mn_predict_uncertainty`)", "",
              "Per case, the summary's mean inside the predicted foreground, against the case's Dice (of the "
              "command's own segmentation, with test-time mirroring). A useful review order has rho < 0 (more "
              "uncertain, lower Dice) and catches more of the worst cases than chance.", "",
              "| row | Dice (with mirroring) | score | Spearman rho | p | worst k among the k most uncertain | by "
              "chance |", "|---|---|---|---|---|---|---|"]
    for r in results:
        u = r["uncertainty"]
        if not u:
            continue
        for column in COLUMNS:
            if column in u:
                a = u[column]
                lines.append(f"| {r['row']} | {u['dice']:.3f} | {column} | {a['spearman_rho']:+.2f} | {a['p']:.2g} | "
                             f"{a['worst_k_among_most_uncertain_k']} of {a['k']} | {a['expected_by_chance']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True, help="the benchmark's work folder (python -m benchmarks.hippocampus)")
    p.add_argument("--schedule", default="cpu")
    p.add_argument("--rows", nargs="+", default=["mn", "mn_4lab"])
    p.add_argument("--weights", nargs="+", type=float, default=[0.25, 0.5], help="2D weights of the ensemble")
    p.add_argument("-k", type=int, default=10, help="how many worst / most uncertain cases are compared")
    p.add_argument("--out", required=True, help="Markdown report; raw JSON in <stem>_raw/")
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args(argv)
    bench = PredictBench(Path(args.workdir), args.schedule, args.dry_run)
    results = [bench.run_row(row, args.weights, args.k) for row in args.rows]
    if args.dry_run:
        return
    out = Path(args.out)
    raw = out.parent / f"{out.stem}_raw"
    raw.mkdir(parents=True, exist_ok=True)
    for r in results:
        (raw / f"{r['row']}.json").write_text(json.dumps(r, indent=2))
    command = "python -m benchmarks.hippocampus_predict " + " ".join(
        a if a != args.workdir else "<workdir>" for a in (argv if argv is not None else sys.argv[1:]))
    out.write_text(markdown(results, command))
    bench.say(f"written {out}")


if __name__ == "__main__":
    main()
