"""Which rows run, with which benchmark trainer and schedule, and the printed plan with expected minutes."""
import dataclasses
import json
from typing import Dict, List, Optional, Sequence

from .cost import cost_profile, estimate_prep, estimate_row, updates_3d
from .spec import (DatasetSpec, Row, ROWS, ROW_BY_NAME, Schedule, bench_trainer_name, describe_2d,
                   resolved_attributes)

# ====================================================================================================== plan
@dataclasses.dataclass
class PlannedRow:
    row: Row
    spec: DatasetSpec
    bench_trainer: str
    attrs: dict
    same_as: Optional[str] = None  # an earlier row that runs exactly the same trainer settings on the same data
    schedule: Optional[Schedule] = None  # the table's schedule with the row's own epochs

    @property
    def updates_3d(self) -> int:
        return updates_3d(self.attrs, self.schedule)


def plan_rows(names: Sequence[str], schedule: Schedule, datasets: Dict[str, DatasetSpec]) -> List[PlannedRow]:
    planned, seen = [], {}
    for name in names:
        row = ROW_BY_NAME[name]
        attrs = resolved_attributes(row.trainer, schedule)
        key = (row.data, row.run, row.epochs, json.dumps(attrs, sort_keys=True, default=str))
        row_schedule = dataclasses.replace(schedule, num_epochs=row.epochs) if row.epochs else schedule
        p = PlannedRow(row, datasets[row.data], bench_trainer_name(row.trainer, schedule, row.run, row.epochs), attrs,
                       seen.get(key), row_schedule)
        seen.setdefault(key, name)
        planned.append(p)
    return planned


def estimate(p: PlannedRow, schedule: Schedule = None) -> Dict[str, float]:
    """Expected wall seconds of a planned row (its own epochs)."""
    return estimate_row(p.attrs, p.schedule or schedule, p.spec.num_test, p.spec.num_unlabeled,
                        num_labeled=p.spec.num_labeled)


def default_rows(schedule: Schedule) -> List[str]:
    if schedule.name == "tiny":
        return ["baseline", "mn"]
    gpu = schedule.device.startswith("cuda")
    return [r.name for r in ROWS if (r.gpu if gpu else r.cpu)]



def schedule_text(s: Schedule, planned: List[PlannedRow], datasets: Dict[str, DatasetSpec]) -> str:
    """The schedule and its arithmetic: expected wall minutes per row and in total."""
    model2d = ("offline EfficientNet-Lite0 U-Net for SegFormer-based trainers" if s.model2d == "effnet_lite0"
               else "each trainer's own")
    lines = [f"schedule {s.name!r}: {s.num_epochs} epochs x {s.iterations} iterations = {s.total_iterations} training "
             f"steps per row, {s.val_iterations} validation iteration(s) per epoch, device {s.device}, "
             f"test-time mirroring {'on' if s.tta else 'off'}, 2D model: {model2d}", ""]
    table, total = [("row", "benchmark trainer", "data", "2D model", "expected min")], 0.0
    for p in planned:
        if p.same_as:
            est = "= " + p.same_as
        else:
            t = estimate(p, s)["total"]
            total += t
            est = f"{t / 60:.1f}"
        table.append((p.row.name, p.bench_trainer, p.spec.folder, describe_2d(p.attrs), est))
    keys = {p.spec.key for p in planned if not p.same_as}
    unl = {p.spec.key for p in planned if not p.same_as and p.attrs["family"] != "nnunet"}
    prep = estimate_prep([datasets[k] for k in ("main", "small", "full") if k in keys], unl, cost_profile(s))
    total += sum(prep.values())
    table.append(("data sets", "(make, plan, preprocess)", "", "", f"{sum(prep.values()) / 60:.1f}"))
    table.append(("total", "", "", "", f"{total / 60:.1f}"))
    widths = [max(len(r[i]) for r in table) for i in range(5)]
    for r in table:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4].rjust(widths[4]))
    return "\n".join(lines)


