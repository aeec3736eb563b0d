"""A pipeline that works until it is restarted, then hangs forever: Kafka source -> Kafka sink,
effects produced and flushed before the group's offsets are committed (nothing is ever
skipped). Its second start finds a marker left by the first (in $HANG_MARKER_DIR) and sleeps
without ever consuming: a stuck pipeline, which must show as `unknown` with the stall, never as
`lost` and never as `valid`."""
import json
import os
import sys
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer

replica = os.environ["ONCEPROOF_REPLICA"]
marker = Path(os.environ["HANG_MARKER_DIR"]) / f"{os.environ['ONCEPROOF_RUN_ID']}-{replica}"
if marker.exists():
    sys.stderr.write("restarted: hanging forever\n")
    while True:
        time.sleep(3600)
marker.write_text(str(os.getpid()))
bootstrap = os.environ["ONCEPROOF_KAFKA_BOOTSTRAP"]
source = os.environ["ONCEPROOF_SOURCE"].split(":", 1)[1]
sink = os.environ["ONCEPROOF_SINK"].split(":", 1)[1]
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "hang-copy", "enable.auto.commit": False,
                     "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
consumer.subscribe([source])
while True:
    msgs = [m for m in consumer.consume(500, 0.1) if m.error() is None]
    if not msgs:
        continue
    for m in msgs:
        v = json.loads(m.value())
        producer.produce(sink, json.dumps({"id": v["id"], "key": v["key"], "seq": v["seq"],
                                           "replica": int(replica)}).encode(), m.key())
    if producer.flush(30) == 0:
        consumer.commit(asynchronous=False)
