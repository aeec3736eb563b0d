"""The `onceproof` command: a thin front-end; each sub-command lives in its own module.

A sub-command module exposes `register(subparsers)` which adds its parser and sets
`func=<callable(args) -> int>` as the parser default.
"""
from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from typing import Any, NoReturn

from onceproof.errors import ExitCode

# name of the sub-command module in harness/commands, in the order `--help` lists them
COMMANDS = ["run", "explore", "check", "report", "plan", "up", "doctor", "setup", "cleanup"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # bad flags are bad input: exit 2 with usage
        self.print_usage(sys.stderr)
        self.exit(ExitCode.BAD_INPUT, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="onceproof", description="Chaos-test pipelines that claim exactly-once.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"onceproof.commands.{name}").register(sub)
    return parser


_NEGATIVE = re.compile(r"^-\d[\d.]*[A-Za-z]*$")  # -5, -0.5, -5m, -64MiB


def negative_values_joined(argv: list[str]) -> list[str]:
    """`--flag -5m` as `--flag=-5m`: argparse takes a value that starts with `-` and is not a
    plain number (`-5m`) for an option and fails with its own terse message, before the
    command can say what it expected (exit 2 with the flag, the value and the rule)."""
    out: list[str] = []
    for i, token in enumerate(argv):
        if out and out[-1].startswith("--") and "=" not in out[-1] and _NEGATIVE.match(token) and i > 0 \
                and argv[i - 1] == out[-1]:
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


class _ReaderMayLeave:
    """sys.stdout for a reader that may leave (`onceproof check x | head -1`): a write or flush
    that meets a closed pipe points fd 1 at devnull (Python's advice, docs "Note on SIGPIPE", so
    no "Exception ignored" at exit) and is dropped, so the command runs on and its exit code is
    its verdict's, not that of whatever the write raised (rich's console exits 1 on
    BrokenPipeError). Anything else is the wrapped stream's."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def _to_devnull(self) -> None:
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())
        except (OSError, ValueError):
            pass

    def write(self, text: str) -> int:
        try:
            return int(self._stream.write(text))
        except BrokenPipeError:
            self._to_devnull()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._to_devnull()
            try:  # what the stream still holds now goes to devnull
                self._stream.flush()
            except OSError:
                pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main(argv: list[str] | None = None) -> int:
    stdout = sys.stdout
    if not isinstance(stdout, _ReaderMayLeave) and hasattr(stdout, "fileno"):
        sys.stdout = _ReaderMayLeave(stdout)  # type: ignore[assignment]
    try:
        return _main(argv)
    finally:
        try:
            sys.stdout.flush()
        finally:
            sys.stdout = stdout


def _main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(negative_values_joined(sys.argv[1:] if argv is None else list(argv)))
    if not getattr(args, "func", None):
        parser.print_help()
        return ExitCode.BAD_INPUT
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `onceproof plan validate x.yaml | head`: the reader left; not an error of ours
        try:  # Python's own advice: point stdout at devnull so the exit's flush does not raise again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return 0


if __name__ == "__main__":
    sys.exit(main())
