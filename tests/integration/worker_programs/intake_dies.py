"""`python -m gpu_worker.process` whose intake thread is killed by an injected error after its first message:
what the watchdog does about a thread that dies anyway (tests/integration/test_worker_crashes.py)."""

from __future__ import annotations

import sys
from typing import Any

from gpu_worker import process
from gpu_worker.intake import Intake


class InjectedCrash(BaseException):
    """Not an Exception: nothing in the worker may catch it, as with a thread that dies anyway."""


_accept = Intake.accept


def accept_then_die(self: Intake, message: Any) -> None:
    _accept(self, message)
    raise InjectedCrash("the intake thread dies here")


if __name__ == "__main__":
    Intake.accept = accept_then_die  # type: ignore[method-assign]
    sys.exit(process.main())
