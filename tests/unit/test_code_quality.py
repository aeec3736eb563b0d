"""The whole package is ruff and mypy clean. mypy is given the package as it is installed:
a tree named `onceproof` made of links to the rooms (pyproject.toml's package-dir mapping),
because an editable install's import hook is invisible to it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROOMS = {"checkers": "checkers", "faults": "faults", "targets": "targets"}


def installed_tree(where: Path) -> Path:
    """`where/onceproof/`: links to harness/'s entries, plus checkers/, faults/, targets/."""
    pkg = where / "onceproof"
    pkg.mkdir(parents=True)
    for entry in (ROOT / "harness").iterdir():
        if entry.name != "__pycache__":
            (pkg / entry.name).symlink_to(entry)
    for name, room in ROOMS.items():
        (pkg / name).symlink_to(ROOT / room)
    return where


def test_ruff_finds_nothing() -> None:
    res = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-2000:]


def test_mypy_finds_nothing_in_the_package(tmp_path: Path) -> None:
    tree = installed_tree(tmp_path)
    res = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                          "--cache-dir", str(ROOT / ".mypy_cache"), "-p", "onceproof"], cwd=tree,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-2000:]
