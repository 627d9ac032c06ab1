"""The benchmark's trainer folder: the factory module `bench_trainers.py` and the variants it makes."""
import json
import os
from pathlib import Path
from typing import Sequence

from .bench_trainers import SPEC_FILE
from .spec import BENCH_MODULE, Schedule, Variant, bench_trainer_name, class_overrides

FACTORY = Path(__file__).with_name("bench_trainers.py")


def variant_spec(variants: Sequence, schedule: Schedule) -> dict:
    """What `bench_trainers.make_trainers` builds for `variants` (a `Variant`, or a trainer name for its first run
    with the schedule's epochs): one entry per class, JSON-serialisable."""
    variants = sorted({v if isinstance(v, Variant) else Variant(v) for v in variants},
                      key=lambda v: (v.trainer, v.run, v.epochs or 0))
    entries = []
    for v in variants:
        overrides = schedule.overrides() | ({"num_epochs": v.epochs} if v.epochs else {})
        entries.append({"name": bench_trainer_name(v.trainer, schedule, v.run, v.epochs), "trainer": v.trainer,
                        "schedule_overrides": overrides, "attributes": class_overrides(v.trainer, schedule)})
    return {"schedule": schedule.name, "final_validation": schedule.final_validation, "variants": entries}


def write_trainer_module(folder: Path, variants: Sequence, schedule: Schedule) -> Path:
    """The trainer folder nnU-Net's lookup searches: the factory module and its `variants.json` (each written only
    when it changed)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{BENCH_MODULE}.py"
    for target, text in ((folder / SPEC_FILE, json.dumps(variant_spec(variants, schedule), indent=1)),
                         (path, FACTORY.read_text())):
        if not target.is_file() or target.read_text() != text:
            tmp = target.with_suffix(".tmp")
            tmp.write_text(text)
            os.replace(tmp, target)
    return path
