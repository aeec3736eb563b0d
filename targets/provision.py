"""Installs the binaries the targets need into the cache ($ONCEPROOF_HOME): Kafka's jars from
Maven Central (targets/kafka/pom.xml), the Toxiproxy server built with `go install`, and the
clock shim compiled with gcc. Debian packages are installed by targets/setup.sh. Idempotent:
what is there already is kept, so a second run takes seconds."""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from onceproof.targets import kafka, paths, postgres
from onceproof.targets.kafka import cds

HERE = Path(__file__).resolve().parent
SETUP = "bash targets/setup.sh"


def _run(cmd: list[str], what: str, env: dict[str, str] | None = None, cwd: str | None = None) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    if res.returncode != 0:
        raise RuntimeError(f"{what} failed ({' '.join(cmd)}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")


def install_kafka(log: Callable[[str], None] = print) -> None:
    libs = paths.kafka_libs()
    marker = libs / f"kafka_2.13-{paths.KAFKA_VERSION}.jar"
    if not marker.exists():
        log(f"kafka: resolving Kafka {paths.KAFKA_VERSION} jars with Maven into {libs}")
        tmp = libs.with_name("libs.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        _run(["mvn", "-q", "-B", "-f", str(HERE / "kafka" / "pom.xml"), "dependency:copy-dependencies",
              f"-Dkafka.version={paths.KAFKA_VERSION}", f"-DoutputDirectory={tmp}", "-DincludeScope=runtime"],
             "maven (Kafka jars)")
        shutil.rmtree(libs, ignore_errors=True)
        tmp.rename(libs)
    if not (paths.kafka_template() / "bootstrap.checkpoint").exists():
        log("kafka: formatting the KRaft storage template (once)")
        kafka.format_template()
    cds.build(log)


def install_toxiproxy(log: Callable[[str], None] = print) -> None:
    target = paths.toxiproxy_binary()
    if target.exists():
        return
    log(f"toxiproxy: go install {paths.TOXIPROXY_MODULE}@{paths.TOXIPROXY_VERSION}")
    with tempfile.TemporaryDirectory() as gobin:
        env = dict(os.environ, GOBIN=gobin, CGO_ENABLED="0")
        _run(["go", "install", f"{paths.TOXIPROXY_MODULE}@{paths.TOXIPROXY_VERSION}"], "go install (toxiproxy)",
             env=env, cwd=gobin)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(os.path.join(gobin, "server"), target)


def install_seaweedfs(log: Callable[[str], None] = print) -> Path:
    """SeaweedFS's `weed` server (Apache-2.0; its S3 API serves the tests of `check --engine
    spark s3://...`: tests/integration/s3/conftest.py provisions it, not `onceproof setup`) into
    the cache, once: its path. `go install module/weed@version` refuses the module (its go.mod
    has a replace directive), so the module's source is fetched with `go mod download` and
    built inside it (its own go.mod and go.sum: the same dependencies). Several minutes on 2
    cores the first time; cached after. Raises RuntimeError (no Go, a failed build)."""
    import json

    target = paths.seaweedfs_binary()
    if target.exists():
        return target
    if shutil.which("go") is None:
        raise RuntimeError("building SeaweedFS needs Go (`go` is not on PATH)")
    mod = f"{paths.SEAWEEDFS_MODULE}@{paths.SEAWEEDFS_VERSION}"
    log(f"seaweedfs: go mod download {mod} and go build ./weed (several minutes the first time)")
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-buildvcs=false")
    res = subprocess.run(["go", "mod", "download", "-json", mod], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"go mod download {mod} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    src = json.loads(res.stdout)["Dir"]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    try:
        _run(["go", "build", "-o", str(tmp), "./weed"], "go build (seaweedfs weed)", env=env, cwd=src)
        tmp.rename(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _compile(source: Path, target: Path, what: str, log: Callable[[str], None], *flags: str) -> None:
    """gcc a C file into a shared library in the cache, unless it is there and newer."""
    if not source.exists() or (target.exists() and target.stat().st_mtime >= source.stat().st_mtime):
        return
    log(f"{what}: compiling {source.name}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    _run(["gcc", "-O2", "-shared", "-fPIC", "-Wall", *flags, "-o", str(tmp), str(source)], f"gcc ({what})")
    os.chmod(tmp, 0o755)
    tmp.rename(target)


def build_clock_shim(log: Callable[[str], None] = print) -> None:
    """The LD_PRELOAD clock shim every node runs with (targets/clock/)."""
    _compile(HERE / "clock" / "onceproof_clock.c", paths.clock_shim(), "clock", log, "-Wno-nonnull-compare")


def build_wgl_core(log: Callable[[str], None] = print) -> None:
    """The compiled linearizability search (checkers/wgl_core.c; checkers finds it by this path)."""
    _compile(HERE.parent / "checkers" / "wgl_core.c", paths.home() / "lib" / "libonceproof_wgl.so",
             "linearizability core", log)


def build_history_scan(log: Callable[[str], None] = print) -> None:
    """The compiled history line scanner (checkers/history_scan.c; checkers finds it by this path)."""
    _compile(HERE.parent / "checkers" / "history_scan.c", paths.home() / "lib" / "libonceproof_scan.so",
             "history scanner", log)


def build_pgoutput_scan(log: Callable[[str], None] = print) -> None:
    """The compiled pgoutput INSERT scanner (harness/pgoutput_scan.c; harness/pgoutput.py finds
    it by this path): the observer follows a PostgreSQL sink with it."""
    import importlib.util

    spec = importlib.util.find_spec("onceproof")  # harness/ in a checkout, onceproof/ in a wheel
    assert spec is not None and spec.origin is not None
    _compile(Path(spec.origin).parent / "pgoutput_scan.c", paths.home() / "lib" / "libonceproof_pgoutput.so",
             "pgoutput scanner", log)


def install_all(log: Callable[[str], None] = print, docker_only: bool = False) -> None:
    """Everything the local runtimes need. `docker_only`: only what a docker run needs on the
    harness machine (the clock shim mounted into the containers, the compiled cores of the
    checker and of the observer's pgoutput scanner: gcc); no Toxiproxy (Go), Kafka jars (Maven)
    nor Java, which the images bring. Raises RuntimeError naming the step that failed."""
    paths.home().mkdir(parents=True, exist_ok=True)
    build_clock_shim(log)
    build_wgl_core(log)
    build_history_scan(log)
    build_pgoutput_scan(log)  # the observer runs on the harness machine, whatever the runtime
    if docker_only:
        return
    install_toxiproxy(log)
    install_kafka(log)


# --- doctor ---------------------------------------------------------------------
@dataclass
class Component:
    name: str
    ok: bool
    detail: str  # version, or what is missing
    fix: str = ""
    required: bool = True
    runtimes: frozenset[str] = frozenset({"local", "netns"})  # the runtimes that need it


def _version(cmd: list[str]) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"error: {e}"
    out = (res.stdout or res.stderr).strip().splitlines()
    return out[0] if out else ""


def _python_deps() -> Component:
    import importlib.metadata as md

    missing, versions = [], []
    for dist in ("confluent-kafka", "redis", "psycopg", "pydantic", "PyYAML", "jinja2", "rich", "orjson",
                 "numpy", "plotly", "requests"):
        try:
            versions.append(f"{dist} {md.version(dist)}")
        except md.PackageNotFoundError:
            missing.append(dist)
    if missing:
        return Component("python deps", False, "missing: " + ", ".join(missing), SETUP, runtimes=ALL_RUNTIMES)
    return Component("python deps", True, f"{len(versions)} packages ({versions[0]}, ...)", runtimes=ALL_RUNTIMES)


ALL_RUNTIMES = frozenset({"local", "netns", "docker"})


def components(runtime: str | None = None) -> list[Component]:
    """Every component, one entry each, as `onceproof doctor` lists them. With `runtime` ("local",
    "netns" or "docker"), a component that runtime does not use is never `required` (a docker run
    formats Kafka's storage with the image and needs no host Java, Kafka jars, Redis, PostgreSQL or
    Toxiproxy; the clock shim and the checker's C libraries are built on the host for every
    runtime); without it, the local runtimes' needs are required, as before."""
    out = [_python_deps()]
    redis_bin = shutil.which("redis-server")
    out.append(Component("redis-server", bool(redis_bin), _version(["redis-server", "--version"]) if redis_bin
                         else "not found", "apt-get install -y redis-server"))
    pg = postgres.bin_dir()
    out.append(Component("postgres", bool(pg), _version([str(pg / "postgres"), "--version"]) if pg else "not found",
                         "apt-get install -y postgresql"))
    java = shutil.which("java")
    jar = paths.kafka_libs() / f"kafka_2.13-{paths.KAFKA_VERSION}.jar"
    jv = _version(["java", "-version"]) if java else "java not found"
    out.append(Component("kafka", bool(java) and jar.exists() and (paths.kafka_template() / "bootstrap.checkpoint").exists(),
                         f"Kafka {paths.KAFKA_VERSION} jars in {paths.kafka_libs()}; {jv}" if jar.exists()
                         else f"jars missing in {paths.kafka_libs()}; {jv}", SETUP))
    arch = cds.archive_path()
    built = arch is not None and arch.is_file()
    out.append(Component("kafka cds", built, f"{arch} (faster broker starts)" if built else
                         "no class-data-sharing archive: brokers start slower", SETUP, required=False))
    tp = paths.toxiproxy_binary()
    out.append(Component("toxiproxy", tp.exists(), f"{paths.TOXIPROXY_VERSION} ({tp})" if tp.exists() else f"missing: {tp}",
                         SETUP))
    shim = paths.clock_shim()
    out.append(Component("clock shim", shim.exists(), str(shim) if shim.exists() else f"missing: {shim}", SETUP,
                         runtimes=ALL_RUNTIMES))
    ft = next((p for p in ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
                           "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1") if os.path.exists(p)), None)
    out.append(Component("libfaketime", bool(ft), ft or "not found", "apt-get install -y libfaketime faketime",
                         required=False))
    ipt = shutil.which("iptables")
    out.append(Component("iptables", bool(ipt), _version(["iptables", "--version"]) if ipt else "not found",
                         "apt-get install -y iptables iproute2", required=False))
    lib = paths.home() / "lib"
    cores = ["libonceproof_wgl.so", "libonceproof_scan.so", "libonceproof_pgoutput.so"]
    absent = [c for c in cores if not (lib / c).exists()]
    out.append(Component("compiled cores", not absent, f"{len(cores)} in {lib} (checker, history scanner, "
                         "observer's pgoutput scanner)" if not absent else
                         f"missing: {', '.join(absent)} (the pure-Python paths run instead, slower)", SETUP,
                         required=False, runtimes=ALL_RUNTIMES))
    out += _engine(required=runtime == "docker")
    root = os.geteuid() == 0
    out.append(Component("root", root, "yes (netns runtime available)" if root else
                         "no (local runtime only; netns needs root)", "sudo", required=runtime == "netns"))
    if runtime is None:
        return out
    # a docker-only machine is set up by `onceproof setup --docker-only` (gcc only), not the installer
    fix = (lambda c: "onceproof setup --docker-only" if c.fix == SETUP else c.fix) if runtime == "docker" else \
        (lambda c: c.fix)
    return [dataclasses.replace(c, required=c.required and runtime in c.runtimes, fix=fix(c)) for c in out]


def _engine(required: bool = False) -> list[Component]:
    """The docker runtime's engine and images (optional unless `required`: the local runtimes need
    neither). The images are built by `onceproof setup --images` here, or pulled by the engine on
    a machine with a registry, so they are never required."""
    from onceproof.targets.docker import engine

    st = engine.status()
    out = [Component("docker engine", st.reachable, st.detail, "onceproof setup --images", required=required,
                     runtimes=frozenset({"docker"}))]
    if st.reachable:
        from onceproof.targets.docker import images

        have = images.present()
        missing = [images.DEFAULT_IMAGES[k] for k, ok in have.items() if not ok]
        out.append(Component("docker images", not missing, "missing: " + ", ".join(missing) if missing else
                             ", ".join(images.DEFAULT_IMAGES.values()), "onceproof setup --images", required=False,
                             runtimes=frozenset({"docker"})))
    return out
