"""two_phase_commit_no_recovery: two_phase_commit without the recovery of in-doubt transactions
(deliberately broken: a reference for `partial`).

Claim: each effect in PostgreSQL and in Redis while no coordinator dies between the phases; NOT
otherwise.

The bug: a coordinator killed after the decision (Redis: ids added, positions moved on) and
before `COMMIT PREPARED` leaves its PostgreSQL transaction prepared, in doubt, forever: the
restarted coordinator never looks for it. Those events are in the Redis set and not in the
PostgreSQL table, and are never delivered again (the positions moved on): `partial` (and `lost`
for the PostgreSQL sink).
"""
from __future__ import annotations

from onceproof.targets.pipelines.common import Config, main
from onceproof.targets.pipelines.two_phase_commit import Coordinator


def run(cfg: Config) -> None:
    Coordinator(cfg, recover=False).run()


if __name__ == "__main__":
    main("two_phase_commit_no_recovery", "postgres", run, __doc__)
