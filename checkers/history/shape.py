"""The byte shape of the writer's `send` lines, which the fast readers parse in bulk.

The rule is written once, in checkers/HISTORY.md ("The byte shape of send lines"): the
recorder (`onceproof.recorder.HistoryWriter.record_sends`) emits every send of the workload as

    {"index":I,"time":T,"process":"load","type":"TYPE","f":"send","value":{"id":"ID","key":"KEY","seq":S}}

with no spaces, those keys in that order, T and S decimal integers without leading zeros
(at most 18 digits; I may also be negative), TYPE one of invoke/ok/fail/info, and ID and KEY printable ASCII without
`"` or `\\`. Lines of that shape are split by one compiled regex over a whole chunk (captures
of ~10 bytes, no dict per line), numpy makes the columns, and event ids "<prefix><digits>"
become integers (a table, not a dict). Any other line (observations, faults, phases, a send
in another shape) is parsed by orjson one by one with the checks of `lines.py`, so a change
of the writer's shape costs speed, never correctness; the effects of an observation are
split by a second regex when they have the writer's shape. tests/unit/checkers/
test_send_shape.py holds both sides to the documented shape. The C scanner
(checkers/history_scan.c) reads the same shape.
"""
from __future__ import annotations

import re

import numpy as np

_STR = rb'[ !#-\[\]-~]*'  # printable ASCII without " and \: a JSON string read as is
_INT = rb'(?:0|[1-9]\d{0,17})'


def id_prefix(sample: bytes) -> bytes | None:
    """The text before the digits of the first send's event id in `sample` (the first MiB of a
    history): b"e-" for ids e-000017; b"" for ids of digits only; None if no send line of
    the writer's shape is in the sample (then every id is kept as text)."""
    m = re.search(rb'"f":"send","value":\{"id":"([ !#-/:-\[\]-~]*)\d{1,18}"', sample)
    return m.group(1) if m else None


class SendShape:
    """The writer's shape of a send line and of a sink effect, for ids `prefix` + digits.

    `send_re` (multi-line mode) matches one whole send line with groups (time, last letter of
    type, id digits | id text, key, seq); `eff_re` matches one effect `["<prefix><digits>",
    key, seq, replica]` with the group (id digits). Ids are turned into numbers: `prefix` +
    digits (one width, or without leading zeros)."""

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        p = re.escape(prefix)
        self.send_re = re.compile(
            rb'^\{"index":-?' + _INT + rb',"time":(' + _INT + rb'),"process":"load","type":"'
            rb'(?:invok(?=e)|o(?=k)|fai(?=l)|inf(?=o))(.)","f":"send","value":\{"id":"(?:' + p
            + rb'(\d{1,18})|(' + _STR + rb'))","key":"(' + _STR + rb')","seq":(' + _INT + rb')\}\}$', re.M)
        self.eff_re = re.compile(rb'\["' + p + rb'(\d{1,18})","' + _STR + rb'",-?' + _INT + rb',-?' + _INT
                                 + rb'\]')


def digits(values: list[bytes], width: int = 19) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative decimal numbers (at most 18 digits) -> (int64 values, digit counts)."""
    n = len(values)
    if not n:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    m = np.array(values, dtype=f"S{width}").view(np.uint8).reshape(n, width)
    v = np.zeros(n, np.int64)
    lens = np.zeros(n, np.int64)
    for c in range(width):
        col = m[:, c]
        nz = col != 0
        if not nz.any():
            break
        d = col.astype(np.int64) - 48
        v = np.where(nz, v * 10 + d, v)
        lens += nz
    return v, lens
