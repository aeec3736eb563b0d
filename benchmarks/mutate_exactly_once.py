"""Mutation run over checkers/exactly_once.py: each mutant changes one comparison, boolean
operator, constant or `not` in the rules (one at a time, by AST), runs the checker's unit tests
against it, and is killed if a test fails. Prints every mutant and lists the survivors.

    .venv/bin/python benchmarks/mutate_exactly_once.py [--limit N] [--lines 58,60-62]

Why not mutmut/cosmic-ray: the package is installed from this tree under another name
(onceproof.checkers), and a mutant must be imported as that module; swapping the module
source in place (restored after each mutant) keeps it to one small file and no new dependency.
Do not edit the tree while it runs."""
from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "checkers" / "exactly_once.py"
TESTS = ["tests/unit/checkers/test_exactly_once.py", "tests/unit/checkers/test_checker_rules.py",
         "tests/unit/checkers/test_history_and_cli.py", "tests/unit/checkers/test_progress_rule.py"]
SWAP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
        ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd, ast.And: ast.Or, ast.Or: ast.And}


def mutants(tree: ast.Module) -> list[tuple[int, str, ast.AST, object]]:
    """(line, description, node, replacement) for each single change inside `check` and helpers."""
    out: list[tuple[int, str, ast.AST, object]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                if type(op) in SWAP:
                    out.append((node.lineno, f"{type(op).__name__} -> {SWAP[type(op)].__name__}", node, ("ops", i)))
        elif isinstance(node, (ast.BinOp, ast.BoolOp)) and type(node.op) in SWAP:
            out.append((node.lineno, f"{type(node.op).__name__} -> {SWAP[type(node.op)].__name__}", node, "op"))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.Invert)):
            out.append((node.lineno, "drop not/~", node, "unary"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
            out.append((node.lineno, f"{node.value} -> {not node.value}", node, "bool"))
        elif isinstance(node, ast.Constant) and type(node.value) is int and node.value in (0, 1):
            out.append((node.lineno, f"{node.value} -> {1 - node.value}", node, "int"))
    return sorted(out, key=lambda m: m[0])


def apply(source: str, k: int) -> str:
    tree = ast.parse(source)
    line, _, node, how = mutants(tree)[k]
    if isinstance(how, tuple):
        node.ops[how[1]] = SWAP[type(node.ops[how[1]])]()  # type: ignore[attr-defined]
    elif how == "op":
        node.op = SWAP[type(node.op)]()  # type: ignore[attr-defined]
    elif how == "unary":
        return ast.unparse(_Unwrap(node).visit(tree))
    elif how == "bool":
        node.value = not node.value  # type: ignore[attr-defined]
    elif how == "int":
        node.value = 1 - node.value  # type: ignore[attr-defined]
    return ast.unparse(tree)


class _Unwrap(ast.NodeTransformer):
    def __init__(self, target: ast.AST) -> None:
        self.target = target

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        return node.operand if node is self.target else self.generic_visit(node)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--limit", type=int, default=0, help="only the first N mutants")
    ap.add_argument("--lines", default="", help="only mutants on these source lines, e.g. 58,60-62 "
                    "(to run again the survivors of a previous run)")
    args = ap.parse_args()
    source = TARGET.read_text()
    found = mutants(ast.parse(source))
    todo: list[int] | range = range(len(found) if not args.limit else min(args.limit, len(found)))
    if args.lines:
        wanted = set()
        for part in args.lines.split(","):
            lo, _, hi = part.partition("-")
            wanted.update(range(int(lo), int(hi or lo) + 1))
        todo = [k for k in todo if found[k][0] in wanted]
    survivors = []
    t0 = time.monotonic()
    for k in todo:
        line, what, _, _ = found[k]
        # the installed `onceproof.checkers` is this tree's checkers/: the mutant is swapped in
        # place and the original restored whatever happens
        TARGET.write_text(apply(source, k))
        try:
            rc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *TESTS],
                                cwd=ROOT, capture_output=True, timeout=300).returncode
        except subprocess.TimeoutExpired:
            rc = -1
        finally:
            TARGET.write_text(source)
        state = "killed" if rc != 0 else "SURVIVED"
        print(f"{k:3d}  line {line:4d}  {what:24s} {state}", flush=True)
        if rc == 0:
            survivors.append(f"line {line}: {what}")
    print(f"\n{len(todo)} mutants of {TARGET.relative_to(ROOT)}, {len(todo) - len(survivors)} killed, "
          f"{len(survivors)} survived, {time.monotonic() - t0:.0f} s")
    for s in survivors:
        print("  survivor:", s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
