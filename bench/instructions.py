"""Two versions of the node compared in CPU instructions per new request received.

On this shared VM, timings of the same code move 10-50 % from one run to the next
(bench/RESULTS.md), so a change worth 5 % takes many alternating runs of
``bench/ab.py`` to show, or cannot show at all on a slow hour. Instructions
executed do not depend on the neighbours: this runs ``bench/profile_inbound.py``
(``Node.receive`` in process: parse, the machine, the batch's statements and
COMMIT; no HTTP, no outbox) under valgrind's callgrind, for ``--n`` requests and
for ``--base`` requests, and divides the difference by ``n - base``, so that the
imports and start-up drop out. Two runs at a time (one per core), about six
minutes for the defaults.

    .venv/bin/python bench/instructions.py A B [--n 1024] [--base 256] [--batch 32]
        [--db sqlite|postgresql]

A and B as for ``bench/ab.py``: git revisions, or ``.`` for the working tree.
On PostgreSQL only the node's own instructions are counted, not the server's.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ab import PY, ROOT, checkout  # noqa: E402

_TOTAL = re.compile(r"I\s+refs:\s+([\d,]+)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="a git revision, or . for the working tree")
    ap.add_argument("b", help="a git revision, or . for the working tree")
    ap.add_argument("--n", type=int, default=1024, help="requests in the measured run")
    ap.add_argument("--base", type=int, default=256, help="requests in the run subtracted")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    if args.n <= args.base:
        raise SystemExit("--n must be larger than --base")
    with tempfile.TemporaryDirectory(prefix="ill-instructions-") as tmp:
        trees = {side: checkout(rev, Path(tmp) / side)
                 for side, rev in (("A", args.a), ("B", args.b))}
        try:
            jobs = [(side, n) for n in (args.base, args.n) for side in ("A", "B")]
            with ThreadPoolExecutor(max_workers=2) as pool:
                counts = dict(zip(jobs, pool.map(
                    lambda job: instructions(trees[job[0]], job[1], args, Path(tmp)), jobs)))
        finally:
            for tree in trees.values():
                if tree != ROOT:
                    subprocess.run(["git", "worktree", "remove", "--force", str(tree)],
                                   cwd=ROOT, check=False, capture_output=True)
    per = {side: (counts[side, args.n] - counts[side, args.base]) / (args.n - args.base)
           for side in ("A", "B")}
    print(f"Node.receive, {args.batch} at a time, {args.db}: instructions per new request "
          f"(runs of {args.n} and {args.base})")
    for side, rev in (("A", args.a), ("B", args.b)):
        print(f"  {side} {rev:>12s}  {per[side] / 1e6:8.3f} M")
    print(f"  B - A: {100 * (per['B'] - per['A']) / per['A']:+.1f} %")
    return 0


def instructions(tree: Path, n: int, args, tmp: Path) -> int:
    """Instructions callgrind counted in one run of the tree's profile_inbound.py."""
    out = tmp / f"callgrind-{tree.name}-{n}.out"
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
         PY, str(tree / "bench" / "profile_inbound.py"), "--db", args.db,
         "--batch", str(args.batch), "--n", str(n)],
        cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True,
        check=False)
    found = _TOTAL.findall(done.stderr)
    if done.returncode != 0 or not found:
        raise SystemExit(f"{tree} --n {n} failed ({done.returncode}):\n"
                         f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return int(found[-1].replace(",", ""))


if __name__ == "__main__":
    sys.exit(main())
