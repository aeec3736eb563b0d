"""librdkafka's own log lines, for every Kafka client the harness makes (admin, producer,
consumer): they go to the Python logger `onceproof.kafka-clients` (the `logger` setting of
confluent-kafka), never to stderr, where they would spill onto the user's terminal (a
`Connection refused` from a client that outlived the servers). A run writes that logger to
its logs/harness-kafka.log (`logs_to`); with no run, the lines are dropped."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Iterator

LOGGER = logging.getLogger("onceproof.kafka-clients")
LOGGER.addHandler(logging.NullHandler())
LOGGER.propagate = False  # never Python's last-resort handler (stderr)
LOGGER.setLevel(logging.DEBUG)


def config(settings: dict[str, Any]) -> dict[str, Any]:
    """`settings` for a confluent-kafka client, its log lines routed to LOGGER."""
    return {**settings, "logger": LOGGER}


@contextlib.contextmanager
def logs_to(path: Path) -> Iterator[None]:
    """While the scope lasts, append the Kafka clients' log lines to the file `path`."""
    handler = logging.FileHandler(path, delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    LOGGER.addHandler(handler)
    try:
        yield
    finally:
        LOGGER.removeHandler(handler)
        handler.close()
