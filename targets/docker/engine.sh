#!/bin/bash
# Provision a Docker-API-compatible container engine on a Debian machine without one:
# Debian's podman + runc, a containers.conf that keeps rlimits within this sandbox's hard
# limits, and `podman system service` serving the Docker API at unix:///run/podman/podman.sock.
# Idempotent and quick when done already (a ping). Skipped when a Docker engine already
# answers at $DOCKER_HOST or /var/run/docker.sock (a CI runner).
# Why runc and these rlimits: see the README's "docker runtime" section (crun refuses the
# hybrid cgroup layout; podman's default rlimits exceed the hard limits of a sandbox without
# CAP_SYS_RESOURCE, and podman caps its own RLIMIT_NPROC at 32768).
set -euo pipefail
SOCK=${ONCEPROOF_PODMAN_SOCKET:-/run/podman/podman.sock}

ping() { curl -sf --max-time 3 --unix-socket "$1" http://d/_ping >/dev/null 2>&1; }

if [ -n "${DOCKER_HOST:-}" ] && [ "${DOCKER_HOST#unix://}" != "$DOCKER_HOST" ] && ping "${DOCKER_HOST#unix://}"; then
  echo "engine: a Docker engine answers at $DOCKER_HOST"; exit 0
fi
if [ -S /var/run/docker.sock ] && ping /var/run/docker.sock; then
  echo "engine: a Docker engine answers at unix:///var/run/docker.sock"; exit 0
fi
# a service of ours whose working folder was deleted answers pings, but every container start
# fails ("write child: broken pipe"; conmon: "Failed to get working directory"): replace it
pidfile="$(dirname "$SOCK")/service.pid"
if [ -f "$pidfile" ] && pid=$(cat "$pidfile") && [ -n "$pid" ] && [ -e "/proc/$pid" ] &&
   [[ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" == *" (deleted)" ]]; then
  echo "engine: the podman service (pid $pid) runs in a deleted folder; restarting it"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do [ -e "/proc/$pid" ] || break; sleep 0.1; done
fi
if ping "$SOCK"; then
  echo "engine: ready at unix://$SOCK"; exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "engine: no Docker engine answers, and provisioning podman needs root" >&2; exit 1
fi

# 1. packages
need=()
for p in podman runc netavark aardvark-dns catatonit uidmap iptables curl; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  echo "engine: installing Debian packages: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# 2. engine config: only rlimits the sandbox allows; runc instead of crun
NOFILE=$(ulimit -Hn); NPROC=$(ulimit -Hu)
[ "$NOFILE" = unlimited ] && NOFILE=1048576
[ "$NPROC" = unlimited ] && NPROC=32768
[ "$NPROC" -gt 32768 ] && NPROC=32768
mkdir -p /etc/containers
conf=/etc/containers/containers.conf
want="# written by onceproof targets/docker/engine.sh
[containers]
default_ulimits = [\"nofile=$NOFILE:$NOFILE\", \"nproc=$NPROC:$NPROC\"]

[engine]
runtime = \"runc\"
cgroup_manager = \"cgroupfs\"
events_logger = \"file\"

# netavark + aardvark-dns: user-defined networks resolve container names (CNI here has no DNS)
[network]
network_backend = \"netavark\"
"
if [ -e "$conf" ] && ! grep -q "onceproof targets/docker/engine.sh" "$conf"; then
  echo "engine: $conf exists and is not ours; leaving it alone" >&2
else
  [ "$(cat "$conf" 2>/dev/null)" = "$(printf '%s' "$want")" ] || printf '%s' "$want" > "$conf"
fi

# 3. the Docker-compatible API socket (no systemd here: started by hand, detached)
mkdir -p "$(dirname "$SOCK")"
# from / : conmon inherits the service's working folder, and the caller's may be deleted later
# (exec: the background job becomes podman itself, so nothing of this script keeps the caller's
# stdout open and $! is the service's pid)
(cd / && exec setsid nohup podman system service --time=0 "unix://$SOCK" \
   >"$(dirname "$SOCK")/service.log" 2>&1 < /dev/null) &
echo $! > "$(dirname "$SOCK")/service.pid"
for _ in $(seq 1 300); do
  ping "$SOCK" && { echo "engine: ready at unix://$SOCK"; exit 0; }
  sleep 0.1
done
echo "engine: podman system service did not answer at $SOCK; its log:" >&2
tail -20 "$(dirname "$SOCK")/service.log" >&2
exit 1
