#!/usr/bin/env python3
"""BatchNorm as one autodiff operation against the composed formula, from `checks.sh batchnorm`.

    python3 scripts/gpu/bn-summary.py DIR MODEL

reads DIR/bn-MODEL-{operation,composed}-ROUND.json (`fer bench-train --json`, one per round, the
two ways alternated) and prints each way's median step over the timed steps of all its rounds,
its img/s, and the ratio operation / composed in img/s (above 1: the operation is faster).
"""
import glob
import json
import statistics
import sys


def steps(directory, model, way):
    """Timed step seconds of every round of one way, and the batch size."""
    seconds, batch = [], None
    for path in sorted(glob.glob(f"{directory}/bn-{model}-{way}-*.json")):
        try:
            bench = json.load(open(path))
        except (OSError, ValueError) as e:
            print(f"{path}: unreadable ({e})", file=sys.stderr)
            continue
        if bench.get("gpu_batch_norm", "").lower() != way:
            print(f"{path}: ran {bench.get('gpu_batch_norm')!r}, not {way}", file=sys.stderr)
            continue
        seconds += bench["step_seconds"]
        batch = bench["batch_size"]
    return seconds, batch


def main():
    directory, model = sys.argv[1:3]
    medians = {}
    for way in ("operation", "composed"):
        seconds, batch = steps(directory, model, way)
        if not seconds:
            print(f"{model}: no {way} steps")
            return
        medians[way] = (statistics.median(seconds), batch, len(seconds))
    (op, bs, n_op), (co, _, n_co) = medians["operation"], medians["composed"]
    print(
        f"{model}, batch {bs}: operation {op * 1e3:.1f} ms ({bs / op:.1f} img/s, {n_op} steps), "
        f"composed {co * 1e3:.1f} ms ({bs / co:.1f} img/s, {n_co} steps): {co / op:.2f}x"
    )


if __name__ == "__main__":
    main()
