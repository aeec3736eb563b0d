#!/bin/sh
# /opt/kafka/bin/kafka-storage.sh of the locally built apache/kafka image (targets/docker/images.py):
# the official image's tool of that name, minus its launcher script (which needs bash).
exec java -Xmx256m -XX:TieredStopAtLevel=1 -Xshare:auto -cp "/opt/kafka/libs/*" kafka.tools.StorageTool "$@"
