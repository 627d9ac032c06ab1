"""What every check of `nnUNetv2_mn_doctor` returns: a `CheckResult` with one of four statuses."""
from dataclasses import dataclass

OK, WARN, INFO, FAIL = "OK", "WARN", "INFO", "FAIL"


@dataclass
class CheckResult:
    name: str
    status: str  # OK | WARN | INFO | FAIL
    message: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.status == FAIL
