"""Summarise a py-spy ``--format raw`` (collapsed stacks) profile.

    .venv/bin/python bench/_profile_summary.py FILE [--top 40] [--match node/]

Prints, per thread, the total samples, then the functions with the largest
inclusive share (a function counted once per stack) and the largest self share.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::(?P<line>\d+))?\)$")


def short(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    f = m.group("file")
    for cut in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if cut in f:
            f = f.split(cut, 1)[1]
    return f"{m.group('func')} ({f})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--match", default="")
    ap.add_argument("--thread", default="")
    ap.add_argument("--by-package", action="store_true")
    args = ap.parse_args()
    if args.by_package:
        by_package(args.file, args.thread or "MainThread")
        return
    per_thread: dict[str, Counter] = defaultdict(Counter)
    self_t: dict[str, Counter] = defaultdict(Counter)
    totals: Counter = Counter()
    for line in open(args.file):
        line = line.rstrip("\n")
        if not line:
            continue
        stack, _, n = line.rpartition(" ")
        n = int(n)
        frames = stack.split(";")
        thread = frames[0] if frames and frames[0].startswith(("thread", "process")) else "-"
        if frames and frames[0].startswith("process"):
            frames = frames[1:]
            thread = frames[0] if frames and frames[0].startswith("thread") else thread
        if args.thread and args.thread not in thread:
            continue
        totals[thread] += n
        seen = set()
        for fr in frames:
            s = short(fr)
            if s not in seen:
                seen.add(s)
                per_thread[thread][s] += n
        if frames:
            self_t[thread][short(frames[-1])] += n
    for thread, total in totals.most_common():
        print(f"=== {thread}: {total} samples")
        print("  inclusive:")
        shown = 0
        for func, n in per_thread[thread].most_common():
            if args.match and args.match not in func:
                continue
            print(f"    {100 * n / total:5.1f}%  {func}")
            shown += 1
            if shown >= args.top:
                break
        print("  self:")
        for func, n in self_t[thread].most_common(15):
            print(f"    {100 * n / total:5.1f}%  {func}")



def by_package(path: str, thread: str = "MainThread") -> None:
    """Self samples grouped by top-level package (sqlalchemy, aiosqlite, node, ...)."""
    groups: Counter = Counter()
    total = 0
    for line in open(path):
        stack, _, n = line.rstrip("\n").rpartition(" ")
        if not stack or thread not in stack.split(";", 1)[0]:
            continue
        n = int(n)
        total += n
        leaf = short(stack.split(";")[-1])
        f = leaf[leaf.rfind("(") + 1:-1]
        top = f.split("/")[0].split(".")[0] if "/" in f else f
        groups[top] += n
    print(f"=== self samples by package ({thread}, {total} samples)")
    for name, n in groups.most_common(15):
        print(f"    {100 * n / total:5.1f}%  {name}")


if __name__ == "__main__":
    main()
