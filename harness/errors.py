"""The errors and exit codes every part of onceproof shares: `onceproof.errors`.

A foundation module: it imports nothing, so every room may import it, `checkers/` and
`targets/` included (README, "How it is built"). Catch `OnceproofError` to catch any error
onceproof raises on purpose; each concrete error also keeps the built-in base callers
caught before (`PlanError` is still an `Exception`, `ParamError` a `ValueError`,
`NodeError` a `RuntimeError`, ...).
"""
from __future__ import annotations

from enum import IntEnum


class OnceproofError(Exception):
    """Base of every error onceproof raises on purpose (a bad plan, an unreadable history, a
    fault that could not be applied, a node that would not start, ...)."""


class ExitCode(IntEnum):
    """Exit code of every `onceproof` command and of a run (`RunResult.exit_code`, `exit_code`
    in results.json). Commands that give no verdict (setup, doctor, cleanup, plan) exit VALID
    when they did their job; `doctor` exits INVALID when a required component is missing.
    (Ctrl-C exits 130, the shell's convention, outside this table.)"""

    VALID = 0  # the checkers found no anomaly
    INVALID = 1  # anomalies found
    BAD_INPUT = 2  # a bad plan, flag or history file: fix the input
    UNKNOWN = 3  # no verdict: the harness or the infrastructure failed, or the run was vacuous

    @classmethod
    def of(cls, valid: bool | str | None) -> ExitCode:
        """The exit code of a verdict: True -> VALID, False -> INVALID, anything else
        ("unknown", None) -> UNKNOWN."""
        if valid is True:
            return cls.VALID
        if valid is False:
            return cls.INVALID
        return cls.UNKNOWN


def verdict_word(valid: bool | str | None) -> str:
    """A verdict as the one word every summary line prints: True -> "VALID", False ->
    "INVALID", anything else ("unknown", None) -> "UNKNOWN" (the names of ExitCode)."""
    return ExitCode.of(valid).name
