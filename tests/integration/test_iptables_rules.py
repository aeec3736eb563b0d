"""targets/iptables.py on the real iptables (root): a rule goes in, comes out, and deleting it
again is not an error. (The suite runs as root, as the netns runtime's tests do.)"""
from __future__ import annotations

import subprocess
import uuid

import pytest

from onceproof.targets import iptables

pytestmark = pytest.mark.integration


def test_insert_then_delete_a_commented_rule_leaves_nothing():
    tag = f"onceproof test-{uuid.uuid4().hex[:8]}"
    rule = ["OUTPUT", "-p", "tcp", "-d", "127.0.0.1", "--dport", "9", "-m", "comment", "--comment", tag,
            "-j", "REJECT", "--reject-with", "tcp-reset"]
    assert iptables.insert(rule) is None
    try:
        assert tag in subprocess.run(["iptables", "-S", "OUTPUT"], capture_output=True, text=True).stdout
    finally:
        assert iptables.delete(rule) is None
    assert tag not in subprocess.run(["iptables", "-S", "OUTPUT"], capture_output=True, text=True).stdout
    assert iptables.delete(rule) is None  # gone already: nothing to do
