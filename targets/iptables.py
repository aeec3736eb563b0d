"""Adding and deleting the iptables rules a run owns, with retries: a machine running several
runs at once changes its rule set concurrently, and iptables (nf_tables backend) then fails a
change now and then ("Resource temporarily unavailable", a held xtables lock). A failed
delete that went unnoticed once left a run's rule behind with its ledger entry gone; so a
delete reports whether the rule is gone, and its caller keeps the rule in the ledger if not."""
from __future__ import annotations

import subprocess
import time

ATTEMPTS = 5
# what iptables says when the rule to delete is not there (nothing left to do)
_ABSENT = ("does a matching rule exist", "No chain/target/match by that name", "Bad rule")


def _iptables(op: str, rule: list[str]) -> subprocess.CompletedProcess[str]:
    cmd = ["iptables", "-w", "30", op, *rule]
    try:  # its own session: a Ctrl-C to our group must not cut a change short
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, start_new_session=True)
    except (OSError, subprocess.TimeoutExpired) as e:
        return subprocess.CompletedProcess(cmd, 1, "", str(e))


def insert(rule: list[str], attempts: int = ATTEMPTS) -> str | None:
    """`iptables -I <rule>` (rule = chain and match, no -I/-D), retried; None when it is in,
    else iptables' last error message."""
    err = ""
    for i in range(attempts):
        res = _iptables("-I", rule)
        if res.returncode == 0:
            return None
        err = res.stderr.strip() or f"exit {res.returncode}"
        time.sleep(0.2 * (i + 1))
    return err


def delete(rule: list[str], attempts: int = ATTEMPTS) -> str | None:
    """`iptables -D <rule>`, retried; None when the rule is gone (deleted now, or absent
    already), else iptables' last error message (the rule may still be there)."""
    err = ""
    for i in range(attempts):
        res = _iptables("-D", rule)
        if res.returncode == 0 or any(s in res.stderr for s in _ABSENT):
            return None
        err = res.stderr.strip() or f"exit {res.returncode}"
        time.sleep(0.2 * (i + 1))
    return err
