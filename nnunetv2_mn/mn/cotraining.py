"""Who learns when in M&N (Sec. 2.2), as a pure object: stage 1, the students of stage 2, the pseudo-mask refresh.

Stage 1 (the first `stage1_fraction` of the epochs): both models learn from labelled data only. Stage 2: each
model learns from the other's pseudo-masks; `stage2_students` says how the two students share the iterations:

* 'epochs': alternate by epoch, as the paper (its odd stage-2 epochs train the 3D model). With the same number of
  epochs the 3D network gets about half of nnU-Net's updates in stage 2;
* 'iterations': alternate by iteration within every epoch (same update count, both learning rates used alike);
* 'pair': both students learn in every stage-2 iteration, the 3D student first (a 3D-student step, then a
  2D-student step from the updated 3D teacher), so the 3D network gets nnU-Net's full update budget.

Without iterative co-training (Table 4, row a) the 2D model stops learning after stage 1 and is the only teacher.
"""
from dataclasses import dataclass
from typing import Tuple

STAGE2_STUDENTS = ("epochs", "iterations", "pair")
MODELS = ("3d", "2d")


@dataclass(frozen=True)
class CoTrainingSchedule:
    num_epochs: int
    stage1_fraction: float = 0.125
    stage2_students: str = "pair"
    first_student: str = "3d"
    co_training: bool = True
    #: hard pseudo-masks for pseudo-foreground crops: at the start of stage 2, then every this share of the epochs
    refresh_fraction: float = 0.125

    def __post_init__(self):
        if not 0.0 <= self.stage1_fraction < 1.0:
            raise ValueError(f"stage1_fraction must lie in [0, 1), not {self.stage1_fraction}")
        if self.stage2_students not in STAGE2_STUDENTS:
            raise ValueError(f"stage2_students must be one of {STAGE2_STUDENTS}, not {self.stage2_students!r}")
        if self.first_student not in MODELS:
            raise ValueError(f"first_student must be one of {MODELS}, not {self.first_student!r}")
        if not 0.0 < self.refresh_fraction <= 1.0:
            raise ValueError(f"pseudo_mask_refresh_fraction must lie in (0, 1], not {self.refresh_fraction}")

    @property
    def stage2_start(self) -> int:
        """First epoch of stage 2 (the first in which unlabelled data may be used)."""
        return int(round(self.stage1_fraction * self.num_epochs))

    def stage(self, epoch: int) -> int:
        return 1 if epoch < self.stage2_start else 2

    @property
    def _order(self) -> Tuple[str, str]:
        return ("3d", "2d") if self.first_student == "3d" else ("2d", "3d")

    def students(self, epoch: int, iteration: int = 0) -> Tuple[str, ...]:
        """The students of one stage-2 iteration, in the order they learn; stage 1: ('3d', '2d'), both from
        labelled data."""
        if epoch < self.stage2_start:
            return MODELS
        if not self.co_training:
            return ("3d",)
        if self.stage2_students == "pair":
            return self._order
        k = epoch - self.stage2_start if self.stage2_students == "epochs" else iteration
        return (self._order[k % 2],)

    def learns(self, model: str, epoch: int) -> bool:
        """Whether `model` learns in any iteration of `epoch`."""
        return any(model in self.students(epoch, i) for i in range(2))

    def refresh_due(self, epoch: int, have_masks: bool) -> bool:
        """Whether the hard pseudo-masks (pseudo-foreground crops) are predicted again at the start of `epoch`."""
        if epoch < self.stage2_start:
            return False
        every = max(1, int(round(self.refresh_fraction * self.num_epochs)))
        return not have_masks or (epoch - self.stage2_start) % every == 0

    def num_refreshes(self) -> int:
        return sum(self.refresh_due(e, have_masks=True) for e in range(self.num_epochs))

    def steps(self, iterations: int) -> dict:
        """Optimizer steps per model over the whole run, and the stage-1 iterations (both models step in them)."""
        out = {m: 0 for m in MODELS}
        for epoch in range(self.num_epochs):
            for i in range(iterations):
                for m in self.students(epoch, i):
                    out[m] += 1
        return out
