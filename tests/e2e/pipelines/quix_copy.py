"""A pipeline nobody here wrote: Quix Streams with its defaults untouched, copying the events
to an output topic with the library's exactly-once guarantee (GUARANTEE=at-least-once for the
other one). Its consumer group "quix-copy" uses Kafka's default session timeout (45 s) and no
static membership, and each start takes a new random transactional.id, so a kill leaves a
transaction open on the sink until the transaction timeout: both are slow to recover, neither
loses anything (issue 11). STATIC_MEMBERS=1 gives each replica a group.instance.id (static
membership, the user's own consumer setting, as quix_to_postgres.py does) and a 10 s session: a
restarted replica takes its partitions back at once and reprocesses what it produced since its
last commit (the at-least-once test's duplicates), instead of the group stalling 45 s per kill
(during which a kill hits no processing); unset, Quix's defaults stay.
"""
import os

from quixstreams import Application

app = Application(broker_address=os.environ["ONCEPROOF_KAFKA_BOOTSTRAP"], consumer_group="quix-copy",
                  processing_guarantee=os.environ.get("GUARANTEE", "exactly-once"),  # type: ignore[arg-type]
                  auto_offset_reset="earliest", commit_interval=2.0,
                  consumer_extra_config=({"group.instance.id": f"quix-copy-{os.environ['ONCEPROOF_REPLICA']}",
                                          "session.timeout.ms": 10000} if os.environ.get("STATIC_MEMBERS") else None))
src = app.topic(os.environ["ONCEPROOF_SOURCE"].split(":", 1)[1], value_deserializer="json")
out = app.topic(os.environ["ONCEPROOF_SINK"].split(":", 1)[1], value_serializer="json")
replica = int(os.environ["ONCEPROOF_REPLICA"])
app.dataframe(src).apply(lambda v: {"id": v["id"], "key": v["key"], "seq": v["seq"], "replica": replica}).to_topic(out)
app.run()
