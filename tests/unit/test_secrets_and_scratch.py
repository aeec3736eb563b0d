"""What a run writes carries no secret of `pipeline.env`, and the scratch root is a private
folder of ours: a symlink or a folder of another user in its place is refused, never used."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml

from onceproof.plan import REDACTED, Plan, is_secret
from onceproof.targets import paths

PLAN = """name: s
targets: {kafka: {nodes: 1}, postgres: {}}
pipeline:
  command: [python, -m, onceproof.targets.pipelines.kafka_to_postgres]
  env: {DB_PASSWORD: hunter2-pw, API_TOKEN: tok-123, aws_secret_access_key: aws-456, SIGNING_KEY: k-789,
        LOGIN: listed-000, MODE: fast}
  secret-env: [LOGIN]
workload: {source: kafka:onceproof.events, sink: postgres:onceproof_effects, duration: 5s}
"""


def test_resolved_plan_redacts_every_secret_variable_and_keeps_the_others() -> None:
    plan = Plan.model_validate(yaml.safe_load(PLAN))
    env = plan.resolved()["pipeline"]["env"]
    assert env == {"DB_PASSWORD": REDACTED, "API_TOKEN": REDACTED, "aws_secret_access_key": REDACTED,
                   "SIGNING_KEY": REDACTED, "LOGIN": REDACTED, "MODE": "fast"}
    assert plan.pipeline.env["DB_PASSWORD"] == "hunter2-pw"  # the pipeline still gets the real value
    text = yaml.safe_dump(plan.resolved())
    for secret in ("hunter2-pw", "tok-123", "aws-456", "k-789", "listed-000"):
        assert secret not in text
    assert Plan.model_validate(yaml.safe_load(text)).pipeline.secret_env == ["LOGIN"]  # reads back


def test_secret_names() -> None:
    assert is_secret("PGPASSWORD") and is_secret("github_token") and is_secret("X", ["X"])
    assert not is_secret("MODE") and not is_secret("ONCEPROOF_RUN_ID")


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "scratch"
    monkeypatch.setenv("ONCEPROOF_SCRATCH", str(root))
    return root


def test_scratch_root_is_made_private(scratch: Path) -> None:
    assert paths.private_scratch_root() == scratch
    mode = stat.S_IMODE(scratch.stat().st_mode)
    assert mode == (0o711 if os.geteuid() == 0 else 0o700)


def test_scratch_root_that_is_a_symlink_is_refused_and_its_target_left_alone(scratch: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    os.chmod(elsewhere, 0o755)
    scratch.symlink_to(elsewhere)
    with pytest.raises(paths.ScratchError, match="symlink"):
        paths.private_scratch_root()
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o755  # no chmod through the link


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_scratch_root_owned_by_another_user_is_refused(scratch: Path) -> None:
    scratch.mkdir()
    os.chown(scratch, 65534, 65534)
    with pytest.raises(paths.ScratchError, match="belongs to uid 65534"):
        paths.private_scratch_root()


def test_run_scratch_folder_is_new_and_closed_to_other_users(scratch: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from onceproof.targets.local import LocalRuntime

    monkeypatch.setenv("ONCEPROOF_HOME", str(tmp_path / "home"))
    (scratch / "taken").mkdir(parents=True)
    with pytest.raises(FileExistsError):
        LocalRuntime(run_id="taken")  # never a folder someone made first
    with LocalRuntime() as rt:
        mode = stat.S_IMODE(rt.scratch.stat().st_mode)
        assert mode & 0o066 == 0 and (mode & 0o001 == 0 or os.geteuid() == 0)  # no read/write for others
        assert stat.S_IMODE(rt.node_dir("kafka-0").stat().st_mode) == 0o700
        assert stat.S_IMODE(rt.log_dir.stat().st_mode) == 0o700
