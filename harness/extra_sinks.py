"""The run's other sinks (`workload.also-sinks`): where a multi-store pipeline (a two-phase
commit across PostgreSQL and Redis) applies every effect besides the workload's sink.

Each is created before the pipeline starts, like the workload's sink, and read once after
quiescence into a `sink-content` record (process observer: invoke, then ok with
`{"sink": "<kind>:<name>", "events": [[id, key, seq, replica], ...]}` or fail with the error).
checkers/partial.py compares those contents with the workload sink's final read."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from onceproof.sinks import Sink, make_sink
from onceproof.targets.deployment import Deployment


class ExtraSinks:
    """The sinks named by `endpoints` (KIND:NAME each) on `deployment`."""

    def __init__(self, endpoints: list[str], deployment: Deployment) -> None:
        self.sinks: list[tuple[str, Sink]] = [(e, make_sink(e, deployment)) for e in endpoints]

    def setup(self) -> None:
        """Create each sink (empty) before the pipeline starts."""
        for _, sink in self.sinks:
            sink.setup()

    def record_contents(self, history: Any) -> None:
        """One `sink-content` record per sink: its complete content now (after quiescence)."""
        for endpoint, sink in self.sinks:
            history.record("observer", "invoke", "sink-content", {"sink": endpoint})
            try:
                events = sink.final_read()
            except Exception as e:  # noqa: BLE001 - recorded: the partial checker then has no verdict
                history.record("observer", "fail", "sink-content", {"sink": endpoint, "error": str(e)[:300]})
                continue
            history.record("observer", "ok", "sink-content", {"sink": endpoint, "events": events})

    def close(self) -> None:
        for _, sink in self.sinks:
            with contextlib.suppress(Exception):
                sink.close()


@contextlib.contextmanager
def extra_sinks(endpoints: list[str], deployment: Deployment) -> Iterator[ExtraSinks]:
    """The run's other sinks, their clients closed on exit (entered while the targets run)."""
    sinks = ExtraSinks(endpoints, deployment)
    try:
        yield sinks
    finally:
        sinks.close()
