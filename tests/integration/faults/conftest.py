"""Fixtures for fault tests on the session's shared targets: each test gets a nemesis whose
history is a real file, and the targets are checked (and put back) after it: no proxy left
disabled, no toxic left, every clock back at true time."""
from __future__ import annotations

import struct

import pytest

from onceproof.faults.base import Context
from onceproof.faults.nemesis import Nemesis
from onceproof.recorder import HistoryWriter


@pytest.fixture
def shared_nemesis(shared_targets, tmp_path):
    history = HistoryWriter(tmp_path / "history.jsonl")
    nemesis = Nemesis(Context.from_deployment(shared_targets, [], seed=7), history)
    yield nemesis
    errors = nemesis.heal_all()
    history.close()
    api = shared_targets.toxiproxy.api
    left = {name: p for name, p in api.proxies().items() if not p["enabled"] or p["toxics"]}
    clocks = {n.name: struct.unpack("<q", n.clock_file.read_bytes()[:8])[0] for n in shared_targets.servers()}
    skewed = {k: v for k, v in clocks.items() if v}
    if left or skewed:
        api.reset()
        for n in shared_targets.servers():
            n.set_clock_offset(0)
    assert not errors, errors
    assert not left, f"faults left on proxies: {left}"
    assert not skewed, f"clocks left skewed: {skewed}"
