#!/usr/bin/env python3
"""Where a training step's device time goes, from CubeCL's kernel profile.

With profiling on (scripts/gpu/gpu-env.sh: fer_cubecl_toml FILE CACHE LOG), CubeCL writes a line per
kernel launch and, at each device synchronisation, a table of the launches since the previous one.
`fer bench-train` synchronises after every step, so the last complete table is the last timed
step. This prints it with shortened kernel names, largest share first:

    python3 scripts/gpu/profile-summary.py profile-vgg19.log [--top 25]

Times are CubeCL's per-kernel timings with profiling on (each launch timed on its own), so read the
shares, not the total, against an unprofiled step.
"""
import argparse
import re
import sys

UNITS = {"s": 1.0, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9}


def seconds(text):
    """Rust's Debug form of a Duration ("91.25ms", "231.2µs", "1.5s") in seconds."""
    m = re.fullmatch(r"([0-9.]+)\s*(s|ms|µs|us|ns)", text.strip())
    if not m:
        raise ValueError(f"not a duration: {text!r}")
    return float(m.group(1)) * UNITS[m.group(2)]


def tables(lines):
    """Every complete summary table: a list of (name, seconds, launches) rows."""
    found, rows = [], None
    for line in lines:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0] == "Name" and cells[-1] == "Ratio":
            rows = []
        elif rows is not None and len(cells) >= 4 and cells[0] == "Total":
            found.append(rows)
            rows = None
        elif rows is not None and len(cells) >= 4 and cells[-1].endswith("%"):
            try:
                rows.append((" | ".join(cells[:-3]), seconds(cells[-3]), int(cells[-2])))
            except ValueError:
                pass
    return found


def short(name):
    """The kernel's own name and the parts that say which variant ran (families, strategies)."""
    parts = name.split(" | ")
    keep = [parts[0]] + [
        p for p in parts[1:]
        if re.search(r"(Family|Strategy|Op|Loader|Matmul|Conv)$", p) and not p.startswith("__")
    ]
    text = " | ".join(keep)
    return text if len(text) <= 110 else text[:107] + "..."


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    with open(args.log, encoding="utf-8", errors="replace") as f:
        found = tables(f)
    if not found:
        sys.exit(f"{args.log}: no complete profile table (was profiling on, and did a step finish?)")
    rows = sorted(found[-1], key=lambda r: -r[1])
    total = sum(r[1] for r in rows)
    launches = sum(r[2] for r in rows)
    print(f"{args.log}: the last of {len(found)} tables: {total * 1e3:.2f} ms of kernel time over {launches} launches")
    print(f"{'share':>6} {'ms':>9} {'launches':>8}  kernel")
    for name, secs, count in rows[: args.top]:
        print(f"{100 * secs / total:5.1f}% {secs * 1e3:9.3f} {count:8d}  {short(name)}")
    rest = rows[args.top:]
    if rest:
        secs = sum(r[1] for r in rest)
        print(f"{100 * secs / total:5.1f}% {secs * 1e3:9.3f} {sum(r[2] for r in rest):8d}  ({len(rest)} other kernels)")


if __name__ == "__main__":
    main()
