"""The wheel installs one import name, `onceproof`, and nothing else: a user's project with its
own `harness/`, `targets/`, `faults/` and `checkers/` packages keeps working beside it, runs
its pytest with the onceproof plugin loaded (the `onceproof` fixture used against real
targets), and runs the reference pipelines by their module path from its own folder."""
from __future__ import annotations

import shutil
import site
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ROOMS = {"harness": "onceproof", "checkers": "onceproof.checkers", "faults": "onceproof.faults",
         "targets": "onceproof.targets"}


def _modules_in_repo() -> set[str]:
    """Every module of the rooms, by the name it has once installed (`onceproof....`)."""
    out = set()
    for room, package in ROOMS.items():
        for path in (ROOT / room).rglob("*.py"):
            rel = path.relative_to(ROOT / room).with_suffix("")
            out.add("/".join([package.replace(".", "/"), *rel.parts]) + ".py")
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # built from a copy: setuptools writes build/ and *.egg-info beside the sources
    src = tmp_path_factory.mktemp("src") / "onceproof"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", "runs", "test-artifacts", ".*_cache"))
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(dist), str(src)], check=True, capture_output=True, timeout=300, cwd=src)
    (found,) = dist.glob("onceproof-*.whl")
    return found


def test_wheel_has_one_top_level_name_and_every_module(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        top_level = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
        assert z.read(top_level).decode().split() == ["onceproof"]
        entry_points = z.read(top_level.replace("top_level.txt", "entry_points.txt")).decode()
    assert {n.split("/")[0] for n in names if not n.startswith("onceproof-")} == {"onceproof"}
    missing = _modules_in_repo() - names
    assert not missing, f"modules not in the wheel (add their package to pyproject.toml): {sorted(missing)}"
    assert "onceproof = onceproof.cli:main" in entry_points
    assert "onceproof = onceproof.pytest_plugin" in entry_points
    assert "onceproof/targets/clock/onceproof_clock.c" in names  # built by `onceproof setup`


USER_TEST = '''
import harness, targets, faults, checkers


def test_own_packages_are_the_users():
    assert harness.MINE and targets.MINE and faults.MINE and checkers.MINE


def test_pipeline_under_onceproof(onceproof):
    run = onceproof({
        "name": "user-project",
        "targets": {"kafka": {"nodes": 1}, "postgres": {}},
        "pipeline": {"command": ["python", "-m", "onceproof.targets.pipelines.kafka_to_postgres"],
                     "replicas": 1,
                     "progress": "SELECT partition, max(next_offset) FROM onceproof_offsets GROUP BY partition"},
        "workload": {"source": "kafka:onceproof.events", "sink": "postgres:onceproof_effects",
                     "rate": 200, "keys": 5},
        "quiesce": {"idle": "2s", "max": "30s"},
    }, duration="3s")
    assert run.valid is True, run.summary()
    assert run.results["workload"]["ok"] > 0
'''


def test_wheel_in_a_fresh_virtualenv_beside_a_project_with_rooms_of_the_same_names(
        wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True,
                   capture_output=True, timeout=300)
    # the dependencies (pinned in pyproject.toml) come from this virtualenv's site-packages, as a
    # plain path: its .pth files (our editable install's finder among them) are not processed
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "onceproof-test-deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    project = tmp_path / "project"
    for room in ROOMS:
        (project / room).mkdir(parents=True)
        (project / room / "__init__.py").write_text("MINE = True\n")
    (project / "tests").mkdir()
    (project / "tests" / "test_user.py").write_text(textwrap.dedent(USER_TEST))

    where = subprocess.run([str(py), "-c", "import onceproof, onceproof.targets; "
                            "print(onceproof.__file__); print(onceproof.targets.__file__)"],
                           cwd=project, capture_output=True, text=True, check=True).stdout.split()
    assert all(w.startswith(purelib) for w in where), where  # the wheel's copy, not the repository's

    res = subprocess.run([str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=project,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "2 passed" in res.stdout

    res = subprocess.run([str(py), "-m", "onceproof.targets.pipelines.kafka_to_postgres", "--help"],
                         cwd=project, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "usage" in res.stdout.lower()

    res = subprocess.run([str(venv / "bin" / "onceproof"), "--help"], cwd=project, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0 and "run" in res.stdout, res.stderr


def test_the_pytest_plugin_imports_nothing_heavy_at_load() -> None:
    """pytest loads every plugin entry point in every session, the user's included."""
    code = ("import sys, onceproof.pytest_plugin; "
            "print(sorted(m for m in sys.modules if m.startswith('onceproof') or m.split('.')[0] in "
            "('numpy', 'pydantic', 'confluent_kafka', 'psycopg', 'yaml', 'rich', 'plotly', 'jinja2')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd="/").stdout
    assert out.strip() == "['onceproof', 'onceproof.pytest_plugin']", out
