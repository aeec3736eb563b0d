#!/usr/bin/env bash
# Kafka Streams jars (the broker's version) for the e2e test of a Kafka Streams topology, into
# $ONCEPROOF_HOME/kafka-streams-<version>/ (default home ~/.cache/onceproof). Idempotent: kept
# when the jar is there. Called by targets/setup.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=4.1.1
dest=${ONCEPROOF_HOME:-$HOME/.cache/onceproof}/kafka-streams-$version
if [ -f "$dest/kafka-streams-$version.jar" ]; then exit 0; fi
echo "setup: resolving Kafka Streams $version jars with Maven into $dest (tests only)"
rm -rf "$dest.tmp"
mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies -Dkafka.version=$version \
  -DoutputDirectory="$dest.tmp" -DincludeScope=runtime
rm -rf "$dest"
mv "$dest.tmp" "$dest"
