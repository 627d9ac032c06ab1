"""Command line of the Hippocampus benchmark (`python -m benchmarks.hippocampus`)."""
import argparse
import sys
from pathlib import Path

from .plan import default_rows
from .runner import Bench
from .spec import DEFAULT_OUT, DEFAULT_SOURCE, ENV_2D_MODEL, ROW_BY_NAME, schedule_from_args

# ====================================================================================================== CLI
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--schedule", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--rows", nargs="+", default=None, metavar="ROW",
                   help=f"rows to run (default: the schedule's set); any of: {', '.join(ROW_BY_NAME)}")
    p.add_argument("--workdir", default=str(Path.home() / "mn_bench_hippocampus"),
                   help="nnUNet_raw/preprocessed/results, predictions, logs, records (default: %(default)s)")
    p.add_argument("--source", default=str(DEFAULT_SOURCE), help="MSD Task04_Hippocampus folder (default: %(default)s)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="Markdown report; plots and raw JSON go next to it "
                                                           "(default: %(default)s)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: the schedule's)")
    p.add_argument("--dry-run", action="store_true", help="print the schedule, expected times and commands only")
    p.add_argument("--report-only", action="store_true",
                   help="write the report from the finished rows in --workdir; run nothing")
    p.add_argument("--import-records", default=None, metavar="RAW_DIR",
                   help="first take the finished rows of a report's raw folder (e.g. docs/benchmarks/hippocampus_raw, "
                        "made on another machine) into --workdir: they are skipped and reported")
    p.add_argument("--tiny", action="store_true",
                   help="smoke test: 2 epochs x 2 iterations, 2 labelled / 4 test / 10 unlabelled cases")
    p.add_argument("--epochs", type=int, default=None, help="override the schedule's epochs (renames the schedule)")
    p.add_argument("--iterations", type=int, default=None, help="override iterations per epoch")
    p.add_argument("--val-iterations", type=int, default=None, help="override validation iterations per epoch")
    p.add_argument("--model2d", choices=("effnet_lite0", "trainer"), default=None,
                   help="2D model of SegFormer-based trainers: offline EfficientNet-Lite0 (CPU default) or the "
                        "trainer's own (GPU default)")
    p.add_argument("--tta", dest="tta", action="store_true", default=None, help="mirroring at prediction")
    p.add_argument("--no-tta", dest="tta", action="store_false")
    p.add_argument("--segformer", default=None,
                   help=f"SegFormer source (hub id or save_pretrained dir) for SegFormer rows; default: ${ENV_2D_MODEL} "
                        "or the trainer's hub id")
    p.add_argument("--resunet-weights", default=None, help="timm resnet50 state dict for mn_resunet (ImageNet)")
    args = p.parse_args(argv)
    unknown = [r for r in (args.rows or []) if r not in ROW_BY_NAME]
    if unknown:
        p.error(f"unknown row(s) {unknown}; choose from {list(ROW_BY_NAME)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    schedule = schedule_from_args(args)
    bench = Bench(args, schedule)
    if args.import_records:
        bench.import_records(Path(args.import_records))
    if args.report_only:
        return bench.report()
    return bench.main(args.rows or default_rows(schedule))


if __name__ == "__main__":
    sys.exit(main())

