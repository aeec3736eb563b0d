"""Nodes as containers. `ContainerNode` replaces the process verbs of `Node` (start, SIGKILL,
graceful stop, pause/resume, alive) by the engine's, and each kind below says only what
differs: its entrypoint and command, the ports it publishes, what it mounts.

Every container:
- is named `op-<run id>-<node>`, carries the label `io.onceproof.run=<run id>` (cleanup.py
  removes by it) and is on the run's network, where the other containers reach it by its node
  name (a network alias);
- publishes its client port at the SAME port number on 127.0.0.1 only, so the harness (and a
  pipeline run as a local process) reaches it exactly as on the `local` runtime;
- has the run's clock shim and its own clock file mounted read-only and preloaded
  (`LD_PRELOAD`), so `set_clock_offset` (which writes the host's copy of the file) moves the
  clock inside the container, as on the local runtime;
- writes its output to the node's log file, bind-mounted (the command runs under
  `sh -c 'exec "$@" >> log'`), so the ready probes that read a node's log work unchanged.

`pid` is None: the container's processes are the engine's, not the harness's; a `pause`
fault freezes the container through the engine (cgroup freezer) instead of signalling."""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from onceproof.targets.docker import kafka_cds, kafka_storage
from onceproof.targets.docker.images import PIPELINE_IMAGE, rebuild_hint
from onceproof.targets.kafka import JVM_OPTS, LOG4J2, KafkaCluster, KafkaNode, random_id
from onceproof.targets.postgres import DATABASE, USER, PostgresNode, settings
from onceproof.targets.process import CommandNode, Node, NodeError, log_tail, poll_ready
from onceproof.targets.redis import RedisNode
from onceproof.targets.toxiproxy import Toxiproxy, ToxiproxyNode

if TYPE_CHECKING:
    from docker.models.containers import Container

    from onceproof.targets.docker.runtime import DockerRuntime

SHIM_DIR, CLOCK_DIR, DATA_DIR, LOG_FILE = "/onceproof/lib", "/onceproof/clock", "/onceproof/data", "/onceproof/log"
PG_UID = 999  # the `postgres` account of the official image, and of the local one (images.py)


@dataclass
class Spec:
    """How to run one container: `argv` is wrapped so its output goes to the node's log unless
    `log_wrap` is False (an image without `sh`)."""

    image: str
    argv: list[str]
    publish: list[int]
    user: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    mounts: dict[str, tuple[str, str]] = field(default_factory=dict)  # host path -> (path inside, ro|rw)
    log_wrap: bool = True
    clock: bool = True
    network_mode: str | None = None  # e.g. container:<id> (a pipeline in Toxiproxy's network namespace)


class ContainerNode(Node):
    """A Node whose process is a container (see the module docstring). Subclasses give spec()."""

    runtime: "DockerRuntime"
    stop_timeout = 10
    _prepared: bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.container: "Container | None" = None
        self.entrypoint = ("", "")  # (image, what its container runs first), for the engine's refusal

    def spec(self) -> Spec:
        raise NotImplementedError

    def command(self) -> list[str]:
        return self.spec().argv

    # --- process verbs through the engine ----------------------------------------------
    @property
    def container_name(self) -> str:
        return f"op-{self.runtime.run_id}-{self.name}"

    @property
    def pid(self) -> int | None:
        return None

    def host_pid(self) -> int | None:
        """The container's main process as this machine sees it (the engine's State.Pid)."""
        pid = self._state().get("Pid") if self.container is not None else None
        return int(pid) if pid else None

    def _state(self) -> dict[str, Any]:
        if self.container is None:
            return {}
        try:
            self.container.reload()
        except Exception:  # noqa: BLE001 - removed or engine gone: not running
            return {}
        return dict(self.container.attrs.get("State") or {})

    @property
    def alive(self) -> bool:
        return bool(self._state().get("Running"))

    @property
    def exit_code(self) -> int | None:
        state = self._state()
        if not state or state.get("Running"):
            return None
        return int(state.get("ExitCode", 0))

    def _create(self) -> None:
        from testcontainers.core.container import DockerContainer

        spec = self.spec()
        env = dict(spec.env)
        env["ONCEPROOF_RUN_ID"] = self.runtime.run_id
        argv = spec.argv
        c = DockerContainer(spec.image).with_name(self.container_name)
        if spec.log_wrap:
            self.log_path.touch()
            if spec.user == "postgres":
                os.chown(self.log_path, PG_UID, PG_UID)
            c.with_volume_mapping(os.path.abspath(self.log_path), LOG_FILE, "rw")  # relative: a volume's name
            argv = ["sh", "-c", f'exec "$@" >> {LOG_FILE} 2>&1', "sh", *argv]
        shim = self.runtime.clock_shim
        if spec.clock and shim is not None:
            c.with_volume_mapping(os.path.abspath(shim), f"{SHIM_DIR}/{shim.name}", "ro")
            c.with_volume_mapping(os.path.abspath(self.clock_file.parent), CLOCK_DIR, "ro")
            env["LD_PRELOAD"] = f"{SHIM_DIR}/{shim.name}"
            env["ONCEPROOF_CLOCK_FILE"] = f"{CLOCK_DIR}/{self.clock_file.name}"
        for host, (inside, mode) in spec.mounts.items():
            c.with_volume_mapping(os.path.abspath(host), inside, mode)
        for key, value in env.items():
            c.with_env(key, value)
        kwargs: dict[str, Any] = {"labels": self.runtime.labels(self.name),
                                  "stop_signal": signal.Signals(self.stop_signal).name, "detach": True}
        if argv:  # else the image's own entrypoint and command (a pipeline image given without one)
            kwargs["entrypoint"] = argv[:1]
            c.with_command(argv[1:])
        if spec.user:
            kwargs["user"] = spec.user
        if spec.network_mode:
            kwargs["network_mode"] = spec.network_mode
        else:
            c.with_network(self.runtime.network).with_network_aliases(self.name)
            for port in spec.publish:  # on 127.0.0.1 only (with_bind_ports takes no address)
                c.ports[f"{port}/tcp"] = ("127.0.0.1", port)  # type: ignore[assignment]
        c.with_kwargs(**kwargs)
        self.entrypoint = (spec.image, argv[0] if argv else "")
        c.start()
        self.container = c.get_wrapped_container()

    def start(self, wait: bool = True) -> None:
        if self.alive:
            return
        if not self._prepared:
            self.make_clock_file()
            os.chmod(self.clock_file.parent, 0o755)
            self.prepare()
            self._prepared = True
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n--- onceproof: starting {self.name} (container {self.container_name})\n".encode())
        try:
            if self.container is None:
                self._create()
            else:
                self.container.start()
        except Exception as e:  # noqa: BLE001 - the engine's errors are many kinds
            image, runs = self.entrypoint
            # a user's pipeline image is theirs to fix (one made FROM ours carries our label too)
            ours = not isinstance(self, ContainerCommand) or image == PIPELINE_IMAGE
            hint = rebuild_hint(self.runtime.client, image, runs, str(e)) if runs and ours else ""
            raise NodeError(f"{self.name}: the engine refused to start its container: {e}{hint}") from None
        self.paused = False
        self.starts += 1
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float | None = None) -> None:
        poll_ready(self, timeout or self.start_timeout,
                   died=lambda: f"{self.name}'s container exited with code {self.exit_code}", tail=self._tail)

    def _tail(self) -> str:
        text = log_tail(self.log_path)
        if self.container is not None and len(text.splitlines()) < 3:
            try:
                text += "\n" + self.container.logs(tail=25).decode(errors="replace")
            except Exception:  # noqa: BLE001
                pass
        return text

    def _wait_exited(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.alive and time.monotonic() < deadline:
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the container (every process in it); its file system stays, for a start."""
        if self.container is None:
            return
        if self.paused:
            self.resume()
        try:
            self.container.kill(signal="SIGKILL")
        except Exception:  # noqa: BLE001 - already stopped
            pass
        self._wait_exited()
        self.paused = False

    def stop(self, timeout: float = 15.0) -> None:
        """The image's stop signal (the node's `stop_signal`), SIGKILL after `timeout` s."""
        if self.container is None:
            return
        if self.paused:
            self.resume()
        try:
            self.container.stop(timeout=max(1, int(timeout)))
        except Exception:  # noqa: BLE001
            pass
        self._wait_exited()
        self.paused = False

    def pause(self) -> None:
        """Freeze every process of the container (the engine's cgroup freezer)."""
        if self.container is not None:
            self.container.pause()
            self.paused = True

    def resume(self) -> None:
        if self.container is not None:
            try:
                self.container.unpause()
            except Exception:  # noqa: BLE001 - not paused
                pass
            self.paused = False

    def remove(self) -> None:
        """Remove the container and its anonymous volumes (a no-op if there is none)."""
        if self.container is None:
            return
        try:
            self.container.remove(force=True, v=True)
        except Exception:  # noqa: BLE001 - gone already
            pass

    def teardown(self) -> None:
        try:
            self.kill()
        finally:
            self.remove()

    def listener(self, group: str) -> str:
        """Where the run's Toxiproxy container reaches this node: its alias on the network."""
        return f"{self.name}:{self.port}"


# --- the kinds ------------------------------------------------------------------------------
class DockerRedis(ContainerNode, RedisNode):
    def spec(self) -> Spec:
        argv = RedisNode.command(self)
        argv[0] = "redis-server"
        argv[argv.index("--bind") + 1] = "0.0.0.0"
        argv[argv.index("--dir") + 1] = DATA_DIR
        argv[1] = f"{DATA_DIR}/{self.config.name}"
        return Spec(self.runtime.image("redis"), argv, [self.port],
                    mounts={str(self.data_dir): (DATA_DIR, "rw")})

    def spawn_kwargs(self) -> dict[str, Any]:
        return {}


PG_SCRIPT = """set -e
export PGDATA=/tmp/onceproof-pgdata
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  initdb -D "$PGDATA" -U {user} --pwfile {data}/pwfile -A scram-sha-256 -E UTF8 --locale=C --no-sync >/dev/null
  : > {data}/pwfile
  printf '%s\\n' {settings} >> "$PGDATA/postgresql.conf"
  printf '%s\\n' "host all all 0.0.0.0/0 scram-sha-256" "host replication all 0.0.0.0/0 scram-sha-256" \\
    >> "$PGDATA/pg_hba.conf"
fi
exec postgres -D "$PGDATA" -c port={port} -c listen_addresses='*' -c unix_socket_directories=/tmp
"""


class DockerPostgres(PostgresNode, ContainerNode):  # PostgresNode.start's super() is ContainerNode's
    """PostgreSQL in a container: its cluster is made by the container's entrypoint (initdb with
    the run's password, from a 0600 file in the mounted data folder, emptied once read; the
    image may have no `rm`)."""

    def prepare(self) -> None:
        pwfile = self.data_dir / "pwfile"
        with os.fdopen(os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(self.password + "\n")
        if os.geteuid() == 0:
            for p in (self.data_dir, pwfile):
                os.chown(p, PG_UID, PG_UID)
        self._created_db = False

    def start(self, wait: bool = True) -> None:
        PostgresNode.start(self, wait)
        (self.data_dir / "pwfile").unlink(missing_ok=True)  # emptied by the entrypoint once read

    def command(self) -> list[str]:
        return self.spec().argv

    def spec(self) -> Spec:
        script = PG_SCRIPT.format(user=USER, data=DATA_DIR, port=self.port,
                                  settings=" ".join(shlex.quote(line) for line in settings(self.fsync)))
        return Spec(self.runtime.image("postgres"), ["sh", "-c", script], [self.port], user="postgres",
                    mounts={str(self.data_dir): (DATA_DIR, "rw")})

    def spawn_kwargs(self) -> dict[str, Any]:
        return {}


assert DATABASE  # the database PostgresNode.start creates, as on the local runtime


class DockerKafka(ContainerNode, KafkaNode):
    """A KRaft node in a container. Besides the listeners of the local runtime it has INTERNAL,
    advertised at its alias on the run's network, for broker-to-broker traffic; the controller
    quorum is reached at the aliases too. DIRECT stays advertised at 127.0.0.1 (the harness's).
    Its storage is formatted by the Kafka image itself (kafka_storage.py): a docker run needs
    neither Java nor Kafka's jars on the harness machine. It runs as the harness's uid:gid, so
    what it writes in its bind-mounted data folder stays ours to read and remove."""

    def __init__(self, runtime: "DockerRuntime", name: str, node_id: int, cluster_id: str,
                 groups: tuple[str, ...] = ()) -> None:
        super().__init__(runtime, name, node_id, cluster_id, groups)
        self.internal_port = runtime.free_port()
        self.voters = f"{node_id}@{name}:{self.controller_port}"
        self.cds_dir: Path | None = None  # the class-data-sharing archive's folder (prepare; kafka_cds.py)

    def listener(self, group: str) -> str:
        return f"{self.name}:{self.group_ports[group]}"

    def properties(self) -> str:
        out = []
        for line in KafkaNode.properties(self).splitlines():
            key, _, value = line.partition("=")
            if key == "listeners":
                value = value.replace(f"//{self.host}:", "//0.0.0.0:") + f",INTERNAL://0.0.0.0:{self.internal_port}"
            elif key == "advertised.listeners":
                value += f",INTERNAL://{self.name}:{self.internal_port}"
            elif key == "listener.security.protocol.map":
                value += ",INTERNAL:PLAINTEXT"
            elif key == "inter.broker.listener.name":
                value = "INTERNAL"
            elif key == "log.dirs":
                value = f"{DATA_DIR}/log"
            out.append(f"{key}={value}" if line else line)
        return "\n".join(out)

    def prepare(self) -> None:
        """The node's log dir: the image-formatted template's bootstrap.checkpoint and a
        meta.properties of its own (as KafkaNode.prepare, without the host's Java and jars).
        Raises NodeError when the image cannot format."""
        logdir = self.data_dir / "log"
        logdir.mkdir(parents=True, exist_ok=True)
        shutil.copy(kafka_storage.storage_template(self.runtime) / "bootstrap.checkpoint", logdir)
        (logdir / "meta.properties").write_text(
            f"node.id={self.node_id}\ndirectory.id={random_id()}\nversion=1\ncluster.id={self.cluster_id}\n")
        (self.data_dir / "log4j2.yaml").write_text(LOG4J2)
        self.cds_dir = kafka_cds.archive(self.runtime)

    def spec(self) -> Spec:
        (self.data_dir / "server.properties").write_text(self.properties())  # advertised ports may change
        archive = self.cds_dir
        argv = ["java", *JVM_OPTS, *kafka_cds.jvm_options(archive), f"-Dlog4j2.configurationFile={DATA_DIR}/log4j2.yaml",
                f"-Dkafka.logs.dir={DATA_DIR}", "-cp", "/opt/kafka/libs/*", "kafka.Kafka",
                f"{DATA_DIR}/server.properties"]
        mounts = {str(self.data_dir): (DATA_DIR, "rw")}
        if archive is not None:
            mounts[str(archive)] = (kafka_cds.MOUNT, "ro")
        return Spec(self.runtime.image("kafka"), argv, [self.port], user=kafka_storage.container_user(),
                    mounts=mounts)

    def start(self, wait: bool = True) -> None:
        try:
            self._log_mark = self.log_path.stat().st_size
        except OSError:
            self._log_mark = 0
        ContainerNode.start(self, wait)

    def teardown(self) -> None:
        ContainerNode.teardown(self)


class DockerKafkaCluster(KafkaCluster):
    node_class = DockerKafka


class PublishedToxiproxy(Toxiproxy):
    """The API of a Toxiproxy server in a container: a proxy the harness asks for at
    127.0.0.1:P listens at 0.0.0.0:P INSIDE the container (its own network namespace, reached
    from the machine only through the port published on 127.0.0.1)."""

    def create(self, name: str, listen: str, upstream: str) -> dict:
        host, port = listen.rsplit(":", 1)
        if host != "127.0.0.1":
            return super().create(name, listen, upstream)  # refused there
        return self._call("POST", "/proxies", {"name": name, "listen": f"0.0.0.0:{port}", "upstream": upstream,
                                               "enabled": True})

    def check(self, ours: set[str]) -> list[str]:
        removed = []
        for name, proxy in self.proxies().items():
            listen = str(proxy.get("listen", "")) if isinstance(proxy, dict) else ""
            if name in ours and listen.startswith(("0.0.0.0:", "[::]:", "127.0.0.1:")):
                continue
            self._call("DELETE", f"/proxies/{name}")
            removed.append(f"toxiproxy proxy {name} listening on {listen or '?'} (not one of the run's)")
        return removed


class DockerToxiproxy(ContainerNode, ToxiproxyNode):
    """Toxiproxy in a container: its API and every proxy's port published on 127.0.0.1.
    Its output is read from the engine at teardown (its official image has no `sh`)."""

    def __init__(self, runtime: "DockerRuntime", name: str = "toxiproxy") -> None:
        super().__init__(runtime, name)
        self.api = PublishedToxiproxy(f"http://{self.host}:{self.port}")

    def prepare(self) -> None:
        pass  # no owner rule: the API's published port is DNATed past an OUTPUT rule on 127.0.0.1

    def spec(self) -> Spec:
        return Spec(self.runtime.image("toxiproxy"), ["/toxiproxy", "-host", "0.0.0.0", "-port", str(self.port)],
                    [self.port, *self.proxy_ports], env={"LOG_LEVEL": "warn", "GOMAXPROCS": "2"},
                    log_wrap=False, clock=False)

    def teardown(self) -> None:
        if self.container is not None:
            try:
                with open(self.log_path, "ab") as log:
                    log.write(self.container.logs())
            except Exception:  # noqa: BLE001 - the log is a courtesy
                pass
        ContainerNode.teardown(self)


class ContainerCommand(ContainerNode, CommandNode):
    """A pipeline replica given as an image (`pipeline: {image: ..., command: [...]}`): it joins
    the network namespace of the run's Toxiproxy container, so the same ONCEPROOF_* endpoints
    (127.0.0.1:<proxy port>) reach the same proxies as a local replica's do.

    Its output is the engine's log of the container (the image need not have a shell to wrap
    it as the targets' are): what each incarnation printed is appended to the node's log file
    when it ends (a kill, a stop, the teardown), after that incarnation's `--- onceproof:
    starting` line and before the next one's. The engine keeps a container's log across a
    start after a kill, so only the part not saved yet is appended."""

    def __init__(self, runtime: "DockerRuntime", name: str, image: str, argv: list[str], env: dict[str, str],
                 toxiproxy: ToxiproxyNode | None) -> None:
        super().__init__(runtime, name, argv, env)
        self.image = image
        self.toxiproxy = toxiproxy
        self._saved = 0  # bytes of the current container's log already in the log file

    def spec(self) -> Spec:
        """Raises NodeError unless the run's Toxiproxy is a running container (runtime docker)."""
        proxy = self.toxiproxy
        if not isinstance(proxy, DockerToxiproxy) or proxy.container is None:
            raise NodeError(f"{self.name}: a pipeline given as an image needs the docker runtime's Toxiproxy container")
        # the clock shim is mounted and preloaded as in the targets' containers; an image whose C
        # library cannot preload it runs without it, and a clock fault on it then fails
        # (faults/clock.py checks the process's maps) rather than count as applied
        return Spec(self.image, list(self.argv), [], env=dict(self._env), log_wrap=False,
                    network_mode=f"container:{proxy.container.id}")

    def kill(self) -> None:
        ContainerNode.kill(self)
        self._save_logs()

    def stop(self, timeout: float = 15.0) -> None:
        ContainerNode.stop(self, timeout)
        self._save_logs()  # after the stop: what the pipeline printed on its way out too
        self.remove()
        self.container, self._saved = None, 0

    def teardown(self) -> None:
        try:
            ContainerNode.kill(self)
            self._save_logs()
        finally:
            self.remove()

    def _save_logs(self) -> None:
        """Append what the container printed since the last save to the log file. Never raises
        (the log is a courtesy)."""
        if self.container is None:
            return
        try:
            out = self.container.logs()
            with open(self.log_path, "ab") as log:
                log.write(out[self._saved:])
            self._saved = len(out)
        except Exception:  # noqa: BLE001
            pass
