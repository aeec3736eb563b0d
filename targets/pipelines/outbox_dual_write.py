"""outbox_dual_write: the transactional outbox with the service's classic bug (deliberately
broken: a reference for `lost`).

Claim: the relay is right (see outbox); the service is NOT: events can be lost.

The bug: the service commits its business rows and its source positions in one transaction,
and writes the batch's outbox rows AFTERWARDS in a second transaction (a "dual write": the
outbox outside the business transaction). A service killed between the two has moved its
positions past events whose outbox rows never exist: the relay never publishes them, and the
restarted service never reads them again: `lost` (proven by the service's own positions).
ONCEPROOF_OUTBOX_DELAY_MS (default 200) waits between the two transactions, the window a kill
must land in (in production: a slow database, a GC pause).
"""
from __future__ import annotations

import os
import time
from typing import Any

import psycopg

from onceproof.targets.pipelines.common import Config, log, main, one_line
from onceproof.targets.pipelines.outbox import Relay, Service, start_relay


class DualWriteService(Service):
    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.pending: list[dict[str, Any]] = []
        self.delay = int(os.environ.get("ONCEPROOF_OUTBOX_DELAY_MS") or 200) / 1000

    def write(self, conn: psycopg.Connection, events: list[dict[str, Any]]) -> None:
        conn.execute("INSERT INTO onceproof_orders (event_id, key, seq, replica) "
                     "SELECT e, k, s, %s FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS u(e, k, s)",
                     (self.cfg.replica, [e["id"] for e in events], [e["key"] for e in events],
                      [e["seq"] for e in events]))
        self.pending = list(events)  # BUG: the outbox rows wait for a transaction of their own

    def idle(self) -> None:
        if not self.pending:
            return
        time.sleep(self.delay)
        events, self.pending = self.pending, []
        try:
            self.pg.transaction(lambda c: self.write_outbox(c, events))
        except psycopg.Error as e:  # the business rows stay; their events never leave
            log(f"outbox write of {len(events)} failed (they are lost): {one_line(e)}")


def run(cfg: Config) -> None:
    start_relay(Relay(cfg))
    DualWriteService(cfg).run()


if __name__ == "__main__":
    main("outbox_dual_write", "kafka", run, __doc__)
