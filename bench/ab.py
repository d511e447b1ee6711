"""Two versions of the node on the inbound benchmark, in alternating runs.

On a shared VM the same code gives figures 10-30 % apart from one run to the
next, and hour to hour more (bench/RESULTS.md): only runs of both versions taken
turn about, several each, tell a change of a few percent from the noise. This
runs ``bench/inbound.py`` for revision A, then B, then A... (each from a git
worktree of its own, its ``node`` first on the path; ``.`` is the working tree
as it is), and prints each run's figures, then per figure both versions'
median and in how many pairs B did better.

    .venv/bin/python bench/ab.py A B [--pairs 3] [--db sqlite|postgresql]
        [-- more arguments for inbound.py]

e.g. ``bench/ab.py main . --db postgresql``: the committed code against the
working tree.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

# (label, where in inbound.py's JSON line, whether higher is better)
FIGURES = (
    ("bare ceiling, msg/s", ("bare", "rate"), None),  # the machine's hour, not the node
    ("node max, msg/s", ("node_max", "rate"), True),
    ("ratio to bare", ("ratio",), True),
    ("node CPU at max", ("node_max", "server_cpu"), None),
    ("p50 at the fixed rate, ms", ("fixed", "p50_ms"), False),
    ("p99 at the fixed rate, ms", ("fixed", "p99_ms"), False),
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="a git revision, or . for the working tree")
    ap.add_argument("b", help="a git revision, or . for the working tree")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args, extra = ap.parse_args(argv[:cut]), argv[cut + 1:]  # the rest is inbound.py's
    with tempfile.TemporaryDirectory(prefix="ill-ab-") as tmp:
        trees = {side: checkout(rev, Path(tmp) / side)
                 for side, rev in (("A", args.a), ("B", args.b))}
        try:
            runs: dict[str, list[dict]] = {"A": [], "B": []}
            for n in range(args.pairs):
                for side in ("A", "B"):
                    result = run(trees[side], args.db, extra)
                    runs[side].append(result)
                    print(f"pair {n + 1} {side}: " + "  ".join(
                        f"{label} {fmt(pick(result, path))}" for label, path, _ in FIGURES),
                        flush=True)
        finally:
            for tree in trees.values():
                if tree != ROOT:
                    subprocess.run(["git", "worktree", "remove", "--force", str(tree)],
                                   cwd=ROOT, check=False, capture_output=True)
    print(f"\nA = {args.a}, B = {args.b}, {args.db}, {args.pairs} pairs")
    for label, path, higher in FIGURES:
        a = [pick(r, path) for r in runs["A"]]
        b = [pick(r, path) for r in runs["B"]]
        line = f"{label:28s} median A {fmt(statistics.median(a)):>8s}  B {fmt(statistics.median(b)):>8s}"
        if higher is not None:
            wins = sum((y > x) if higher else (y < x) for x, y in zip(a, b))
            line += f"   B better in {wins} of {len(a)} pairs"
        print(line)
    return 0


def checkout(rev: str, where: Path) -> Path:
    """The tree to run ``rev`` from: a worktree at it, or this one for ``.``."""
    if rev == ".":
        return ROOT
    subprocess.run(["git", "worktree", "add", "--detach", "--force", str(where), rev],
                   cwd=ROOT, check=True, capture_output=True)
    return where


def run(tree: Path, db: str, extra: list[str]) -> dict:
    """One run of the tree's inbound.py, its node imported from the tree."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([PY, str(tree / "bench" / "inbound.py"), "--db", db, *extra],
                          env=env, capture_output=True, text=True, check=False)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise SystemExit(f"{tree}: inbound.py gave no figures ({done.returncode}):\n"
                     f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def pick(result: dict, path: tuple[str, ...]) -> float:
    for key in path:
        result = result[key]
    return float(result)


def fmt(value: float) -> str:
    return (f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10
            else f"{value:.2f}" if value >= 1 else f"{value:.3f}")


if __name__ == "__main__":
    sys.exit(main())
