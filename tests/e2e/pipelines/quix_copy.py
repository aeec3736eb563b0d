"""A pipeline nobody here wrote: Quix Streams with its defaults untouched, copying the events
to an output topic with the library's exactly-once guarantee (GUARANTEE=at-least-once for the
other one). Its consumer group "quix-copy" uses Kafka's default session timeout (45 s) and no
static membership, and each start takes a new random transactional.id, so a kill leaves a
transaction open on the sink until the transaction timeout: both are slow to recover, neither
loses anything (issue 11). SESSION_TIMEOUT_MS, when set, is the group's session timeout (the
at-least-once test's duplicates come from kills between a checkpoint's produce and its commit,
not from the wait, so it does not wait out 45 s per kill); unset, Quix's default stays.
"""
import os

from quixstreams import Application

app = Application(broker_address=os.environ["ONCEPROOF_KAFKA_BOOTSTRAP"], consumer_group="quix-copy",
                  processing_guarantee=os.environ.get("GUARANTEE", "exactly-once"),  # type: ignore[arg-type]
                  auto_offset_reset="earliest", commit_interval=2.0,
                  consumer_extra_config=({"session.timeout.ms": int(os.environ["SESSION_TIMEOUT_MS"])}
                                         if os.environ.get("SESSION_TIMEOUT_MS") else None))
src = app.topic(os.environ["ONCEPROOF_SOURCE"].split(":", 1)[1], value_deserializer="json")
out = app.topic(os.environ["ONCEPROOF_SINK"].split(":", 1)[1], value_serializer="json")
replica = int(os.environ["ONCEPROOF_REPLICA"])
app.dataframe(src).apply(lambda v: {"id": v["id"], "key": v["key"], "seq": v["seq"], "replica": replica}).to_topic(out)
app.run()
