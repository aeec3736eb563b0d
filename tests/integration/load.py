"""Load for the integration tests of sources, sinks and progress readers: a short Workload run
through one source into a history file."""
from __future__ import annotations

import threading
from pathlib import Path

from onceproof.recorder import HistoryWriter
from onceproof.sources import Source
from onceproof.workload import Workload


def send_load(source: Source, history_path: Path, seconds: float, rate: int = 1000, keys: int = 5,
              seed: int = 1) -> Workload:
    """`seconds` of load at `rate` events/s over `keys` keys through `source` (set up here),
    recorded in the history file `history_path`; returns the Workload (its `stats`) once every
    send was answered (or 20 s passed) and the history is closed."""
    source.setup()
    history = HistoryWriter(history_path)
    w = Workload(source, history, rate=rate, keys=keys, seed=seed)
    w.run(seconds, threading.Event())
    w.finish(20)
    history.close()
    return w
