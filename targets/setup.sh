#!/usr/bin/env bash
# Sets up everything onceproof needs on a fresh Debian machine, idempotently:
#   1. Debian packages (servers, libfaketime, iptables, chromium for the report's browser test)
#   2. a virtualenv at .venv with the pinned Python dependencies
#   3. `onceproof setup`: Kafka jars (Maven), Toxiproxy (go install), the clock shim (gcc)
# A second run takes seconds. The cache lives in $ONCEPROOF_HOME (default ~/.cache/onceproof).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(redis-server redis-tools postgresql faketime libfaketime iptables iproute2 procps chromium)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # the packages may have started their default servers; onceproof runs its own on free ports
  if command -v pg_lsclusters >/dev/null; then
    pg_lsclusters -h 2>/dev/null | awk '$4=="online"{print $1, $2}' |
      while read -r v c; do $SUDO pg_ctlcluster "$v" "$c" stop || true; done
  fi
  $SUDO service redis-server stop >/dev/null 2>&1 || true
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating virtualenv .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.onceproof-deps
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python dependencies"
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip==25.2
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
  echo "$want" > "$stamp"
fi
.venv/bin/onceproof setup
bash tests/e2e/kstreams/fetch.sh  # Kafka Streams jars for the e2e tests (Maven, cached)
.venv/bin/onceproof doctor
