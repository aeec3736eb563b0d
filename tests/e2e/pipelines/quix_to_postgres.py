"""A pipeline nobody here wrote writing its own table: Quix Streams reads the user's order
messages ({"order_id", "customer", "n"}, the plan's `workload.format`) and writes them with the
library's own PostgreSQLSink, which creates the table `orders` from the message fields. Quix's
sinks are at-least-once (flushed at each checkpoint, before the offsets are committed), so a
kill between the two writes the same orders again: found through `sink: {postgres: {query:}}`.
Static membership (group.instance.id per replica, the user's own consumer setting) lets a
restarted replica take its partitions back at once instead of waiting out the dead member's
session (45 s by default); COMMIT_INTERVAL=0 checkpoints after every message."""
import os
import urllib.parse

from quixstreams import Application
from quixstreams.sinks.community.postgresql import PostgreSQLSink

dsn = urllib.parse.urlsplit(os.environ["ONCEPROOF_POSTGRES_DSN"])
app = Application(broker_address=os.environ["ONCEPROOF_KAFKA_BOOTSTRAP"], consumer_group="quix-orders",
                  processing_guarantee="at-least-once", auto_offset_reset="earliest",
                  commit_interval=float(os.environ.get("COMMIT_INTERVAL", "1")),
                  consumer_extra_config={"group.instance.id": f"quix-orders-{os.environ['ONCEPROOF_REPLICA']}",
                                         "session.timeout.ms": 10000})
orders = app.topic(os.environ["ONCEPROOF_SOURCE"].split(":", 1)[1], value_deserializer="json")
sink = PostgreSQLSink(host=dsn.hostname or "", port=dsn.port or 5432, dbname=dsn.path.lstrip("/"),
                      user=urllib.parse.unquote(dsn.username or ""),
                      password=urllib.parse.unquote(dsn.password or ""), table_name="orders",
                      schema_auto_update=True)
app.dataframe(orders).sink(sink)
app.run()
