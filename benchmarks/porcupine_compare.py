"""Benchmark: onceproof's linearizability checker against Porcupine v1.3.1, same files, one run.

Builds benchmarks/porcupine_go (Porcupine's own etcd and kv models and parsers, from its
porcupine_test.go) with `go build`, runs it over every history of Porcupine's test_data
(jepsen/etcd_*.log with the cas-register model, kv/*.txt with the kv model partitioned by
key), then checks the same files with onceproof, and prints per file both verdicts and
check times (parsing excluded on both sides, reported separately), and the total ratio.
Goal: identical verdicts on every file; total check time <= 1.0x Porcupine.

    .venv/bin/python benchmarks/porcupine_compare.py [--data DIR] [--repeat N]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onceproof.checkers import linearizable, models  # noqa: E402
from onceproof.checkers.ops import read_jepsen_edn, read_jepsen_log  # noqa: E402


def run_porcupine(data: Path, repeat: int) -> dict[str, dict[str, float]]:
    if not shutil.which("go"):
        raise SystemExit("go is not installed: cannot build the Porcupine side")
    with tempfile.TemporaryDirectory(prefix="porcupine-go-") as tmp:
        exe = os.path.join(tmp, "porcupine_go")
        subprocess.run(["go", "build", "-o", exe, "."], cwd=ROOT / "benchmarks" / "porcupine_go", check=True)
        best: dict[str, dict[str, float]] = {}
        for _ in range(repeat):
            out = subprocess.run([exe, str(data)], capture_output=True, text=True, check=True).stdout
            for line in out.splitlines():
                r = json.loads(line)
                name = os.path.relpath(r["file"], data)
                if name not in best or r["seconds"] < best[name]["seconds"]:
                    best[name] = r
        return best


def run_onceproof(data: Path, names: list[str], repeat: int, budget: float) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for name in names:
        path = str(data / name)
        t0 = time.perf_counter()
        if name.endswith(".log"):
            ops, model = read_jepsen_log(path), models.cas_register
        else:
            ops, model = read_jepsen_edn(path), models.kv
        parse = time.perf_counter() - t0
        best = None
        for _ in range(repeat):
            t1 = time.perf_counter()
            r = linearizable.check(ops, model, budget_s=budget)
            dt = time.perf_counter() - t1
            if best is None or dt < best[1]:
                best = (r["valid"], dt)
        assert best is not None
        out[name] = {"valid": best[0], "seconds": best[1], "parse_seconds": parse, "ops": len(ops)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "benchmarks" / "porcupine" / "test_data",
                    help="Porcupine's test_data directory (holds jepsen/ and kv/)")
    ap.add_argument("--repeat", type=int, default=1, help="best of N runs per file, both sides")
    ap.add_argument("--budget", type=float, default=120.0, help="onceproof time budget per file (s)")
    args = ap.parse_args(argv)
    if not (args.data / "jepsen").is_dir():
        raise SystemExit(f"no Porcupine test data at {args.data} (use --data DIR)")
    por = run_porcupine(args.data, args.repeat)
    names = sorted(por)
    ours = run_onceproof(args.data, names, args.repeat, args.budget)
    print(f"{'file':<22} {'ops':>5} {'porcupine':>9} {'onceproof':>9} {'porc. s':>9} {'ours s':>9} {'ratio':>7}")
    mismatches = []
    tp = to = 0.0
    for name in names:
        p, o = por[name], ours[name]
        tp += float(p["seconds"])
        to += float(o["seconds"])  # type: ignore[arg-type]
        same = p["valid"] is o["valid"]
        if not same:
            mismatches.append(name)
        ratio = float(o["seconds"]) / max(float(p["seconds"]), 1e-9)  # type: ignore[arg-type]
        print(f"{name:<22} {o['ops']:>5} {str(p['valid']):>9} {str(o['valid']):>9} {p['seconds']:>9.5f} "
              f"{o['seconds']:>9.5f} {ratio:>7.1f}" + ("" if same else "  VERDICTS DIFFER"))
    pp = sum(float(p["parse_seconds"]) for p in por.values())
    op = sum(float(o["parse_seconds"]) for o in ours.values())  # type: ignore[arg-type]
    print(f"\n{len(names)} files; verdicts identical on {len(names) - len(mismatches)}"
          + (f"; DIFFER on {', '.join(mismatches)}" if mismatches else ""))
    print(f"total check time: porcupine {tp:.3f} s, onceproof {to:.3f} s, ratio {to / tp:.1f}x "
          f"(goal <= 1.0x: {'met' if to <= tp else 'NOT met'})")
    print(f"total parse time: porcupine {pp:.3f} s, onceproof {op:.3f} s")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
