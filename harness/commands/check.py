"""`onceproof check`: check history files (ours, Jepsen log lines, Jepsen EDN histories).

Exit code: 0 all valid, 1 any invalid, 3 any unknown (and none invalid), 2 unreadable
input (file, line and reason on stderr; never a traceback).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import stat
import sys
from pathlib import Path
from typing import Any

import orjson
from rich.text import Text

from onceproof.checkers import merge_valid
from onceproof.checkers.history import HistoryError, open_history
from onceproof.errors import ExitCode

FORMATS = ("onceproof", "jepsen-log", "jepsen-edn")
CHECKERS = ("exactly-once", "linearizable")
DEFAULT_MODEL = {"jepsen-log": "cas-register", "onceproof": "register"}  # jepsen-edn: from its ops
DEFAULT_MEANING = {"jepsen-log": "porcupine", "jepsen-edn": "jepsen", "onceproof": "porcupine"}


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "check", help="check history files and print a verdict per file",
        description="Check histories: exactly-once for onceproof runs, linearizability for "
                    "operation histories (ours or Jepsen's).")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="history files; with --engine spark also s3://bucket/key (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, "
                        "AWS_SECRET_ACCESS_KEY, AWS_REGION)")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="history format (default: guessed from the first line)")
    p.add_argument("--checker", choices=CHECKERS, default=None,
                   help="default: exactly-once for onceproof histories, linearizable for Jepsen's")
    p.add_argument("--model", default=None,
                   help="linearizability model: register, cas-register, kv, counter, set, queue, "
                        "fifo-queue, unordered-queue, mutex, multi-register, max-register (default: cas-register for "
                        "jepsen-log; for jepsen-edn, the model its ops call for: :cas/:read/:write "
                        "cas-register, :acquire mutex, :txn multi-register, :enqueue fifo-queue, "
                        ":get/:put kv, :add counter or set); Jepsen `independent` ops ([k v] values) "
                        "are checked per key under it")
    p.add_argument("--initial", default=None, metavar="VALUE",
                   help="the model's initial state as an EDN value (e.g. 0, nil, \"x\"); default nil "
                        "(counter: 0)")
    p.add_argument("--meaning", choices=("jepsen", "porcupine"), default=None,
                   help="what :fail means: jepsen (did not happen: dropped; a nil read says nothing, "
                        "as in Knossos) or porcupine (a failed cas returned false; a nil read is "
                        "'absent', as Porcupine reads its test files). Default: jepsen for EDN, "
                        "porcupine for Jepsen log lines")
    p.add_argument("--order", choices=["per-key"], default=None,
                   help="also check per-key order (default: what the run's start record says)")
    p.add_argument("--budget", type=float, default=10.0, metavar="SECONDS",
                   help="time budget of the linearizability search per file (then: unknown)")
    p.add_argument("--no-partition", action="store_true", help="do not split the history by key")
    p.add_argument("--examples", type=int, default=10, help="examples kept per anomaly")
    p.add_argument("--json", action="store_true", help="one JSON object per file, one per line")
    p.add_argument("--engine", choices=("local", "spark"), default="local",
                   help="exactly-once check: here (local) or as an Apache Spark job (spark; same result)")
    p.add_argument("--master", default=None, metavar="URL",
                   help="with --engine spark: the Spark master (default local[*]), e.g. spark://host:7077")
    p.add_argument("--memory", type=_memory, default=None, metavar="SIZE",
                   help="memory budget of the exactly-once check, e.g. 512MiB or 2GiB (default 2GiB; at least "
                        "128MiB, the smallest it keeps to): a "
                        "history that would not fit is checked by partitions spilled to disk, same result")
    p.set_defaults(func=run)


def _memory(text: str) -> int:
    from onceproof.checkers.partitioned import parse_size

    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _head(path: str) -> bytes:
    """The first 4 KiB of the history at `path` (a file, or an s3:// object: a ranged GET).
    Raises HistoryError."""
    from onceproof.checkers.source import is_remote, open_source

    if is_remote(path):
        return open_source(path).read_range(0, 4096)
    _regular(path)
    with open_history(path) as fh:
        return bytes(fh.read(4096))


def guess_format(path: str) -> str:
    """The format of the history at `path`, from its first line (raises HistoryError)."""
    head = _head(path)
    first = next((line.strip() for line in head.splitlines() if line.strip()), b"")
    if first.startswith((b"{:", b"[", b"(", b";", b"#")) or (first.startswith(b"{") and not first.startswith(b'{"')
                                                           and b":" in first[:3]):
        return "jepsen-edn"
    if b"jepsen.util" in head:
        return "jepsen-log"
    return "onceproof"


def _regular(path: str) -> None:
    """Refuse what is not a regular file before opening it: open() on a FIFO blocks forever."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise HistoryError(path, None, f"cannot open: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise HistoryError(path, None, "not a regular file (a folder, FIFO, socket or device); "
                                       "give the path of a history file")


def _unmerged_shards(path: str) -> None:
    """Refuse the history.jsonl of a run whose load processes (`workload.processes`) left their
    history shards unmerged (a run cut before its end merges them): its sends are in the shards,
    so a check of history.jsonl alone would call every event a phantom. Raises HistoryError
    naming the command that merges them."""
    p = Path(path)
    if p.name != "history.jsonl":
        return
    from onceproof.loadprocs import SHARDS

    shards = sorted((p.parent / SHARDS).glob("load-*.jsonl")) if (p.parent / SHARDS).is_dir() else []
    if shards:
        raise HistoryError(path, None, f"the run's load processes left {len(shards)} history shard(s) in "
                                       f"{p.parent / SHARDS} not merged into this history (the run was cut "
                                       "before it merged them); merge them first with: python -m "
                                       f"onceproof.loadprocs --merge {p.parent}")


_BINARY = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f]")  # control bytes no text history holds


def _sniff(path: str) -> None:
    """Refuse, before any reader sees it, a file that is no history of any format: an empty
    file (no operation: never a verdict) and binary data (control bytes or bytes that are not
    UTF-8 in its first line; a JSONL history cut mid-line stays the reader's "last line is
    incomplete" case). Raises HistoryError."""
    head = _head(path)
    if not head:
        raise HistoryError(path, None, "empty file: not a history")
    first, newline, _ = head.partition(b"\n")
    if not newline and len(head) == 4096:
        first = first[:-3]  # a multi-byte character the read cut is not binary data
    try:
        first.decode("utf-8")
        binary = _BINARY.search(first) is not None
    except UnicodeDecodeError:
        binary = True
    if binary:
        raise HistoryError(path, 1, "not a history (binary data at line 1)")


def check_file(path: str, args: argparse.Namespace) -> dict[str, Any]:
    """The verdict of one file as the JSON object `--json` prints (raises HistoryError). A
    history in object storage (`s3://bucket/key`) is checked by the Spark engine only (its
    executors read it by byte ranges: checkers/source.py); without it, a clear refusal."""
    from onceproof.checkers.source import is_remote

    remote = is_remote(path)
    if remote and getattr(args, "engine", "local") != "spark":
        raise HistoryError(path, None, "a history in object storage is checked by the Spark engine: add "
                                       "--engine spark (or download it and check the file)")
    if not remote:
        _regular(path)
    _sniff(path)
    fmt = args.format or guess_format(path)
    checker = args.checker or ("exactly-once" if fmt == "onceproof" else "linearizable")
    if remote and (fmt != "onceproof" or checker != "exactly-once"):
        raise HistoryError(path, None, "from object storage only onceproof histories are checked (exactly-once, "
                                       "--engine spark); download the file to check it with another checker")
    if checker == "exactly-once":
        if fmt != "onceproof":
            raise HistoryError(path, None, f"the exactly-once checker reads onceproof histories, not {fmt}; "
                                           "use --checker linearizable")
        from onceproof.checkers.partitioned import DEFAULT_MEMORY, check_path

        if not remote:
            _unmerged_shards(path)
        names: set[str] = set()  # the history's operation names, learnt by the check's own pass
        memory = getattr(args, "memory", None) or DEFAULT_MEMORY
        if getattr(args, "engine", "local") == "spark":
            from onceproof.checkers import spark

            session = spark.active()  # a caller's session (tests, a notebook) is used, never stopped
            if session is None:
                session = args._spark = spark.session(args.master)
            r = spark.check_path(path, spark=session, memory=memory, order=args.order, examples=args.examples, fs=names)
        else:
            r = check_path(path, memory=memory, order=args.order, examples=args.examples, fs=names)
        stats = r.pop("stats")
        checkers: dict[str, Any] = {"exactly-once": r}
        several = "sink-content" in names  # a run with several sinks: in all of them or in none
        reads = "read" in names  # a run with a read workload (f "read"): its reads linearizable
        if several or reads:
            from onceproof.checkers.source import open_source

            src = open_source(path)
            with src.stage(0, src.size()) if remote else contextlib.nullcontext(path) as local:
                return _whole_checks(path, local, args, checkers, stats, several, reads)  # object storage: a temp copy
        return {"file": path, "valid": r["valid"], "checkers": checkers, "stats": stats}

    from onceproof.checkers import edn, linearizable, models
    from onceproof.checkers.ops import guess_model, onceproof_ops, read_edn_history, read_jepsen_log

    meaning = args.meaning or DEFAULT_MEANING[fmt]
    lines: dict[int, int] = {}
    fs: dict[str, int | None]
    keyed = False
    own_model: str | None = None  # the model a onceproof history's ops call for
    if fmt == "jepsen-edn":
        eh = read_edn_history(path, meaning)
        ops, lines, fs, keyed = eh.ops, eh.lines, dict(eh.fs), eh.keyed
        name = args.model or guess_model(eh)
        if name is None:
            raise HistoryError(path, None, f"cannot tell the model from the ops ({_names(fs)}); choose one "
                                           f"with --model ({', '.join(models.MODELS)})")
    else:
        if fmt == "jepsen-log":
            ops = read_jepsen_log(path, meaning)
        else:
            from onceproof.checkers.history import read_history

            found = onceproof_ops(read_history(path))
            ops, lines, keyed, own_model = found.ops, found.lines, found.keyed, found.model
            if not ops:
                raise HistoryError(path, None, "no operation of any model in this onceproof history: it has no "
                                               "`read` records of a read workload (workload.reads) and no "
                                               "client process's ops (sends, landed, progress, observe, faults "
                                               "and phases are onceproof's own records, not operations)")
        fs = {}
        for op in ops:
            fs.setdefault(str(op.input[0]), lines.get(op.id))
        name = args.model or own_model or DEFAULT_MODEL[fmt]
    if not ops:  # nothing to linearize says nothing: never valid
        raise HistoryError(path, None, "no operation in the history (an invoke and its completion); "
                                       "nothing to check")
    try:
        model = models.by_name(name)
        if args.initial is not None:
            model = model.configured(initial=edn.atom(args.initial.strip()))
        if meaning == "jepsen":
            model = model.configured(nil_read_any=True)
    except ValueError as e:
        raise HistoryError(path, None, f"--initial {args.initial}: {e}" if args.initial is not None
                           and "model" not in str(e) else str(e)) from None
    for f, line in fs.items():
        if f not in model.fs:
            takers = models.accepting(f)
            raise HistoryError(path, line, f"the op :f :{f} is not one the {model.name} model knows "
                                           f"({_names(dict.fromkeys(sorted(model.fs)))}); "
                               + (f"models that accept :{f}: {', '.join(takers)} (use --model)" if takers
                                  else f"no model accepts :{f}"))
    if keyed:
        model = models.Keyed(model)
    _check_shapes(path, ops, model, lines)
    r = linearizable.check(ops, model, budget_s=args.budget, partition=not args.no_partition,
                           minimise_s=min(5.0, args.budget))
    by_id = {o["id"]: o for o in r.pop("operations")}
    if "minimal_invalid" in r:
        r["minimal_invalid"] = [{**by_id[i], **({"line": lines[i]} if i in lines else {})}
                                for i in r["minimal_invalid"]]
    r["anomalies"] = {"nonlinearizable": int(r["valid"] is False)}
    r["model"] = model.name
    if model.name.startswith(models.max_register.name):  # its -1 is a read of nothing written: nil
        for o in r.get("minimal_invalid", []):
            if o["input"][:1] == ["read"] and o["output"] == -1:
                o["output"] = None
    if r["valid"] is False and r.get("minimal_invalid"):
        first = r["minimal_invalid"]
        where = [str(o["line"]) for o in first if "line" in o]
        r["examples"] = {"nonlinearizable": [{"id": ("lines " + ", ".join(where)) if len(where) == len(first)
                                              else "ops " + ", ".join(str(o["id"]) for o in first),
                                              "why": f"these {len(first)} ops cannot be linearized"}]}
    stats = {"operations": len(ops), "partitions": r["partitions"], "elapsed_s": r["elapsed_s"]}
    return {"file": path, "valid": r["valid"], "checkers": {"linearizable": r}, "stats": stats}


def _names(fs: dict[str, Any]) -> str:
    return ", ".join(f":{f}" for f in fs)


def _output_text(output: Any) -> str:
    """An op's output as EDN (`nil`, `#{1 3}`, `true`); `unknown` when it is not known."""
    from onceproof.checkers import edn

    return "unknown" if output == "unknown" else edn.text(output)


def _op_text(op_input: tuple[Any, ...]) -> str:
    """An op's input (f, *args) as EDN: `[:enqueue 1]`."""
    from onceproof.checkers import edn

    return edn.text([f":{op_input[0]}", *op_input[1:]]) if op_input else "[]"


def _check_shapes(path: str, ops: list[Any], model: Any, lines: dict[int, int]) -> None:
    """Every op as the model takes it: one step from the initial state must not raise (a
    `:value` of the wrong shape is refused here with its line, not a traceback later)."""
    from onceproof.checkers import edn
    from onceproof.checkers.ops import is_key

    state = model.init()
    for op in ops:
        if model.name == "kv" and (len(op.input) < 2 or not is_key(op.input[1])):
            got = edn.text(op.input[1]) if len(op.input) > 1 else "no key"
            raise HistoryError(path, lines.get(op.id), f"a :{op.input[0]} of the kv model needs a key: a string, "
                                                       f"keyword or number as :key (Porcupine's kv), such as "
                                                       f"{{:f :put, :key \"x\", :value \"1\"}}; got {got}")
        try:
            model.step(state, op.input, op.output)
            hash(op.input)
        except Exception as e:  # noqa: BLE001 - any model error is a bad op
            raise HistoryError(path, lines.get(op.id), f"the op {_op_text(op.input)} -> {edn.text(op.output)} does not have "
                                                       f"the shape the {model.name} model takes ({type(e).__name__}: "
                                                       f"{e})") from None


def _whole_checks(path: str, local: str, args: argparse.Namespace, checkers: dict[str, Any], stats: Any,
                  several: bool, reads: bool) -> dict[str, Any]:
    """The checkers that read the whole history (`local`: its file on this machine) after the
    exactly-once check: `partial` (several sinks), `reads` (a read workload)."""
    from onceproof.checkers.compose import merge_valid
    from onceproof.checkers.history import read_history

    whole = read_history(local)
    if several:
        from onceproof.checkers import partial

        checkers["partial"] = partial.check(whole, examples=args.examples)
    if reads:
        from onceproof.checkers import reads as reads_check

        checked = reads_check.check(whole, examples=args.examples)
        if sum(checked["reads"].values()):  # the word was not an f of reads: no such checker
            checkers["reads"] = checked
    return {"file": path, "valid": merge_valid(c["valid"] for c in checkers.values()),
            "checkers": checkers, "stats": stats}


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    finally:
        if getattr(args, "_spark", None) is not None:
            from onceproof.checkers import spark

            spark.shutdown(args._spark)


def _run(args: argparse.Namespace) -> int:
    verdicts: list[Any] = []
    unreadable = False
    for path in args.files:
        try:
            out = check_file(path, args)
        except HistoryError as e:
            unreadable = True
            print(f"onceproof check: {plain(e)}", file=sys.stderr)
            if args.json:
                print(orjson.dumps({"file": path, "valid": None, "error": {
                    "file": e.path, "line": e.line, "reason": e.reason}}).decode(), flush=True)
            continue
        verdicts.append(out["valid"])
        if args.json:
            print(orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY, default=str).decode(), flush=True)
        else:
            _print(out)
    if unreadable:
        return ExitCode.BAD_INPUT
    return ExitCode.of(merge_valid(verdicts))


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def plain(value: Any) -> Text:
    """`value` (anything read from a history) as plain terminal text: never rich markup (an id
    `[/]` or `[link=...]` stays literal) and control characters escaped (`\\x1b`), so that no
    history can clear, colour or relabel the user's terminal."""
    return Text(_CONTROL.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), str(value)))


def _register_output(op: dict[str, Any]) -> str:
    """What a max-register op of the reads checker returned, as a user reads it: a read of
    nothing is `null` (the model's -1, checkers/models.py max_register), a write `ok`."""
    out = op.get("output")
    if list(op.get("input") or [])[:1] == ["read"]:
        return "null" if out is None or isinstance(out, (int, float)) and out < 0 else str(out)
    return "ok" if out is None else str(out)


def _print(out: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)

    def say(*parts: Any, style: str | None = None) -> None:
        # every piece is Text: rich reads no markup in it and emits no escape sequence of ours
        console.print(Text.assemble(*(p if isinstance(p, Text) else plain(p) for p in parts)), style=style)

    valid = out["valid"]
    style = {True: "bold green", False: "bold red"}.get(valid, "bold yellow")
    word = {True: "valid", False: "INVALID"}.get(valid, "unknown")
    say(Text(word, style=style), "  ", out["file"])
    for name, r in out["checkers"].items():
        table = Table(title=plain(name), show_header=True, title_justify="left")
        table.add_column("anomaly")
        table.add_column("count", justify="right")
        table.add_column("first example")
        for kind, count in r.get("anomalies", {}).items():
            first = (r.get("examples", {}).get(kind) or [{}])[0]
            table.add_row(plain(kind), plain(count), plain(f"{first.get('id') or first.get('key')}: "
                                                           f"{first.get('why')}" if count and first else ""),
                          style="red" if count else None)
        console.print(table)
        if name == "linearizable":
            say(f"  {out['stats']['operations']} operations ({r.get('model', '?')} model) in {r['partitions']} partition(s), "
                f"{r['elapsed_s']:.3f} s" + (f"; {len(r['unplaced'])} could not be placed" if valid is False else ""))
            if r.get("minimal_invalid"):
                say("  the smallest set of ops that cannot be linearized"
                    + ("" if r.get("minimal_complete") else " found in the time given") + ":")
                for o in r["minimal_invalid"]:
                    say(f"    {'line ' + str(o['line']) + ': ' if 'line' in o else ''}process "
                        f"{o['process']} {_op_text(tuple(o['input']))} -> {_output_text(o['output'])}")
        if name == "reads" and r.get("operations"):  # the first accused read's smallest set
            say(f"  {r['reads']['ok']} reads answered of {sum(r['reads'].values())}, {r['keys']} key(s); the smallest "
                "set of ops that cannot be linearized (max register, ns since the run started):")
            for o in r["operations"]:
                say(f"    op {o['id']} process {o['process']} [{o['call']}, {o['return']}] {o['input']} -> "
                    f"{_register_output(o)}")
        for note in r.get("notes", []):
            say(f"  note: {note}")
    stats = out.get("stats", {})
    if "sends" in stats:
        lat = stats["latency_ms"]
        say(f"  sends ok/fail/info: {stats['sends']['ok']}/{stats['sends']['fail']}/"
            f"{stats['sends']['info']}, applied: {stats['applied']}, latency ms p50/p99/max: "
            f"{lat['p50']}/{lat['p99']}/{lat['max']}")
