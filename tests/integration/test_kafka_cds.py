"""The Kafka broker's class-data-sharing archive (targets/kafka/cds.py): the set-up built it,
the shared broker maps it, and a JVM given an unusable archive still starts."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from onceproof.targets.kafka import cds

pytestmark = pytest.mark.integration


def test_the_setup_built_the_archive_and_the_broker_maps_it(shared_targets):
    options = cds.jvm_options()
    assert options, f"no archive at {cds.archive_path()}: `onceproof setup` should have built it"
    archive = cds.archive_path()
    broker = shared_targets.servers()[0]
    assert broker.kind == "kafka"
    assert any(o.startswith("-XX:SharedArchiveFile=") for o in broker.command())
    maps = Path(f"/proc/{broker._popen.pid}/maps").read_text()
    assert str(archive) in maps, "the broker's JVM did not map the archive (it was found unusable)"
    classes = cds.class_list()  # kept for the docker runtime's archive (targets/docker/kafka_cds.py)
    assert classes is not None and classes.read_bytes().endswith(b"\n")  # whole lines only


def test_an_unusable_archive_never_stops_a_jvm(tmp_path, monkeypatch):
    bad = tmp_path / "broker-cds-bad.jsa"
    bad.write_bytes(b"not an archive" * 1000)
    monkeypatch.setattr(cds, "archive_path", lambda: bad)
    res = subprocess.run(["java", *cds.jvm_options(), "-version"], capture_output=True, text=True, timeout=60)
    assert cds.jvm_options()[0] == f"-XX:SharedArchiveFile={bad}"
    assert res.returncode == 0, res.stderr
