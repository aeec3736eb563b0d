"""Kafka cluster ids made by the harness: a command line must never take one for an option."""
from __future__ import annotations

import base64

from onceproof.targets import kafka


def test_a_cluster_id_never_starts_with_a_dash_and_is_a_kafka_uuid(monkeypatch) -> None:
    draws = iter([b"\xf8" + bytes(15), b"\x01" * 16])  # the first encodes to '-...' (0xf8 >> 2 = 62)
    monkeypatch.setattr(kafka.uuid, "uuid4", lambda: type("U", (), {"bytes": next(draws)})())
    text = kafka.random_id()
    assert text == base64.urlsafe_b64encode(b"\x01" * 16).decode().rstrip("=")
    assert not text.startswith("-") and len(text) == 22


def test_many_ids_none_starts_with_a_dash() -> None:
    ids = [kafka.random_id() for _ in range(5000)]  # about 78 of them would start with '-' otherwise
    assert all(not i.startswith("-") and len(i) == 22 for i in ids) and len(set(ids)) == 5000
