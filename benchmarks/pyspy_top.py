"""Summarize a py-spy `--format raw` file (collapsed stacks): the functions with the most
samples, inclusive and self.

    python -m benchmarks.pyspy_top FILE [--top 25] [--filter controlplane]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", type=Path)
    p.add_argument("--top", type=int, default=25)
    a = p.parse_args(argv)
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in a.file.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith("process ") and
                  not f.startswith("thread ")]
        total += count
        for f in set(frames):
            inclusive[f] += count
        if frames:
            own[frames[-1]] += count
    print(f"{total} samples")
    print("inclusive:")
    for f, c in inclusive.most_common(a.top):
        print(f"  {100 * c / total:5.1f}%  {f}")
    print("self:")
    for f, c in own.most_common(a.top):
        print(f"  {100 * c / total:5.1f}%  {f}")


if __name__ == "__main__":
    main()
