"""targets/iptables.py's retry rules, on a scripted `iptables` (the real one is exercised in
tests/integration/test_iptables_rules.py)."""
from __future__ import annotations

import subprocess

from onceproof.targets import iptables

RULE = ["OUTPUT", "-p", "tcp", "--dport", "1", "-j", "REJECT"]


def _script(monkeypatch, answers):
    calls = []

    def run(cmd, **kw):
        calls.append(cmd)
        rc, err = answers.pop(0)
        return subprocess.CompletedProcess(cmd, rc, "", err)

    monkeypatch.setattr(iptables.subprocess, "run", run)
    monkeypatch.setattr(iptables.time, "sleep", lambda s: None)
    return calls


def test_a_delete_that_fails_now_and_then_is_retried_until_it_succeeds(monkeypatch):
    calls = _script(monkeypatch, [(4, "iptables: Resource temporarily unavailable."), (0, "")])
    assert iptables.delete(RULE) is None
    assert len(calls) == 2 and calls[0][:4] == ["iptables", "-w", "30", "-D"]


def test_a_rule_already_gone_counts_as_deleted(monkeypatch):
    _script(monkeypatch, [(1, "iptables: Bad rule (does a matching rule exist in that chain?).")])
    assert iptables.delete(RULE) is None


def test_a_delete_that_keeps_failing_says_why(monkeypatch):
    calls = _script(monkeypatch, [(4, "Resource temporarily unavailable")] * iptables.ATTEMPTS)
    assert iptables.delete(RULE) == "Resource temporarily unavailable"
    assert len(calls) == iptables.ATTEMPTS


def test_an_insert_is_retried_and_reports_its_last_error(monkeypatch):
    _script(monkeypatch, [(4, "busy"), (0, "")])
    assert iptables.insert(RULE) is None
    _script(monkeypatch, [(2, "no owner match")] * iptables.ATTEMPTS)
    assert iptables.insert(RULE) == "no owner match"
