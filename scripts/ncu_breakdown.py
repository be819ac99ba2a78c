#!/usr/bin/env python3
"""Per-kernel breakdown of one decode step from an `ncu --csv` profile.

    ncu --clock-control none --csv --graph-profiling node \
        --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum \
        -c N duet-model-bench --model M --iters 1 --batches B --contexts 512 \
        --prefill 0 > profile.csv
    scripts/ncu_breakdown.py profile.csv --bandwidth-gbs 3000 [--steps K]

The profile holds every kernel launched from the start (weight upload,
warm-up steps). One decode step is the run of kernels between two launches
of the step's first kernel (the embedding lookup, found as the most common
period of the sequence of kernel names); the last complete step is taken.
For each kernel name it prints launches per step, time, DRAM bytes, the
bandwidth floor of those bytes (bytes / --bandwidth-gbs, the copy bandwidth
measured on the same card) and time over that floor. Bytes are what the
kernel moved, so a kernel that re-reads its weights shows it as bytes well
above the weights' size (compare with the model's own count).
"""
import argparse
import collections
import csv
import sys


def load(path):
    rows = collections.OrderedDict()
    with open(path, newline="") as f:
        lines = [l for l in f if l.startswith('"')]
    for r in csv.DictReader(lines):
        key = int(r["ID"])
        k = rows.setdefault(key, {"name": r["Kernel Name"], "m": {}})
        value = r["Metric Value"].replace(",", "")
        unit = r.get("Metric Unit", "")
        try:
            v = float(value)
        except ValueError:
            continue
        scale = {"nsecond": 1e-9, "usecond": 1e-6, "msecond": 1e-3, "second": 1.0,
                 "ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0,
                 "byte": 1, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9,
                 "KB": 1e3, "MB": 1e6, "GB": 1e9}.get(unit, 1.0)
        k["m"][r["Metric Name"]] = v * scale
    return [rows[i] for i in sorted(rows)]


def last_step(kernels):
    names = [k["name"] for k in kernels]
    # A kernel launched once per step (the embedding lookup, the sampler)
    # recurs at a constant distance: the step's length. The longest such
    # period wins (kernels launched once per layer recur more often).
    best = None
    for name in set(names):
        at = [i for i, n in enumerate(names) if n == name]
        gaps = {b - a for a, b in zip(at[-3:], at[-2:])}
        if len(at) < 3 or len(gaps) != 1:
            continue
        gap = gaps.pop()
        if best is None or gap > best[1]:
            best = (name, gap, at)
    if best is None:
        return kernels
    _, gap, at = best
    start = at[-2]
    return kernels[start:start + gap]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--bandwidth-gbs", type=float, required=True)
    args = ap.parse_args()
    step = last_step(load(args.csv))
    agg = collections.OrderedDict()
    for k in step:
        a = agg.setdefault(k["name"][:60], [0, 0.0, 0.0])
        a[0] += 1
        a[1] += k["m"].get("gpu__time_duration.sum", 0.0)
        a[2] += k["m"].get("dram__bytes_read.sum", 0.0) + k["m"].get("dram__bytes_write.sum", 0.0)
    total_t = sum(a[1] for a in agg.values())
    total_b = sum(a[2] for a in agg.values())
    bw = args.bandwidth_gbs * 1e9
    print(f"one step: {len(step)} kernels, {total_t * 1e3:.3f} ms, {total_b / 1e9:.3f} GB moved, "
          f"floor of those bytes {total_b / bw * 1e3:.3f} ms ({total_t / (total_b / bw):.2f}x)")
    print(f"{'kernel':60s} {'n':>4s} {'ms':>8s} {'share':>6s} {'MB':>9s} {'floor ms':>9s} {'x floor':>7s}")
    for name, (n, t, b) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
        floor = b / bw
        print(f"{name:60s} {n:4d} {t * 1e3:8.3f} {t / total_t:6.1%} {b / 1e6:9.1f} "
              f"{floor * 1e3:9.3f} {t / floor if floor > 0 else float('inf'):7.2f}")


if __name__ == "__main__":
    sys.exit(main())
