"""`onceproof setup`: install Kafka's jars, the Toxiproxy server and the clock shim into the
cache. (Debian packages and the virtualenv come from targets/setup.sh, which calls this.)"""
from __future__ import annotations

import argparse
import sys

from onceproof.errors import ExitCode


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("setup", help="install Kafka jars, Toxiproxy and the clock shim into $ONCEPROOF_HOME")
    p.add_argument("--images", action="store_true",
                   help="also the docker runtime: provision a container engine if none answers (root, Debian: podman), "
                        "and build its images from this machine's binaries when they are missing or changed")
    p.add_argument("--docker-only", action="store_true",
                   help="only what a docker run needs on this machine (the clock shim and the checker's compiled "
                        "cores; needs gcc): no Kafka jars, Java, Maven, Go nor Toxiproxy, which the images bring "
                        "(a CI runner with Docker)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from onceproof.targets.provision import install_all

    try:
        install_all(log=lambda m: print(f"setup: {m}", flush=True), docker_only=getattr(args, "docker_only", False))
        if getattr(args, "images", False):
            from onceproof.targets.docker import engine, images

            engine.provision(log=lambda m: print(f"setup: {m}", flush=True))
            done = images.build_local_images(log=lambda m: print(f"setup: {m}", flush=True))
            done["pipelines"] = images.build_pipeline_image(log=lambda m: print(f"setup: {m}", flush=True))
            print("setup: images: " + ", ".join(f"{k} {v}" for k, v in done.items()), flush=True)
    except RuntimeError as e:
        print(f"setup failed: {e}", file=sys.stderr)
        return ExitCode.UNKNOWN
    print("setup: done")
    return ExitCode.VALID
