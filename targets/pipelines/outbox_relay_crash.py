"""outbox_relay_crash: the transactional outbox with the classic relay bug (deliberately broken:
a reference for `duplicate`).

Claim: the service part is right (business row and outbox row in one transaction, see outbox);
the relay publishes at least once, NOT exactly once.

The bug: the relay publishes a batch of unsent outbox rows (an idempotent producer, no
transaction), waits for the acknowledgements, and only then marks the rows sent, with no
recovery on start. A relay killed between the publish and the mark finds the rows unsent when it
restarts and publishes them again: `duplicate` in the topic. (Idempotence of the producer only
removes the duplicates of its own retries within one producer session.)
"""
from __future__ import annotations

from onceproof.targets.pipelines.common import Config, main
from onceproof.targets.pipelines.outbox import Relay, Service, start_relay


def run(cfg: Config) -> None:
    start_relay(Relay(cfg, transactional=False, recover=False))
    Service(cfg).run()


if __name__ == "__main__":
    main("outbox_relay_crash", "kafka", run, __doc__)
