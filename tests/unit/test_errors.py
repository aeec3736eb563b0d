"""One family of errors users can catch (`onceproof.errors.OnceproofError`), each error keeping
the built-in base callers caught before; one table of exit codes."""
from __future__ import annotations

import pytest

from onceproof.checkers.history import HistoryError
from onceproof.errors import ExitCode, OnceproofError
from onceproof.faults.base import FaultError, ParamError
from onceproof.faults.schedule import FaultSpecError
from onceproof.plan import PlanConsistencyError, PlanError
from onceproof.targets.netns import NetnsError
from onceproof.targets.pipelines.common import BadConfig
from onceproof.targets.process import NodeError
from onceproof.targets.toxiproxy import ToxiproxyError

ERRORS = [(HistoryError, Exception), (PlanError, Exception), (PlanConsistencyError, ValueError),
          (FaultError, RuntimeError), (ParamError, ValueError), (FaultSpecError, ValueError),
          (NodeError, RuntimeError), (NetnsError, RuntimeError), (ToxiproxyError, RuntimeError),
          (BadConfig, Exception)]


@pytest.mark.parametrize(("error", "builtin"), ERRORS, ids=[e.__name__ for e, _ in ERRORS])
def test_every_error_of_ours_is_a_onceproof_error_and_keeps_its_builtin_base(
        error: type[Exception], builtin: type[Exception]) -> None:
    assert issubclass(error, OnceproofError) and issubclass(error, builtin)


def test_a_verdict_has_one_exit_code() -> None:
    assert [ExitCode.of(v) for v in (True, False, "unknown", None)] == [0, 1, 3, 3]
    assert (ExitCode.VALID, ExitCode.INVALID, ExitCode.BAD_INPUT, ExitCode.UNKNOWN) == (0, 1, 2, 3)


def test_a_reader_that_leaves_early_is_no_traceback():
    """`onceproof plan schema | head -1`: the pipe closes under the writer (found by a new user)."""
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-m", "onceproof", "plan", "schema"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stdout.read(1) == b"{"
    p.stdout.close()
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0 and b"Traceback" not in err, err.decode()[-2000:]
