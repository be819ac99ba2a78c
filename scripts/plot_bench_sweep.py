#!/usr/bin/env python3
"""Plots a duet-bench --sweep-rates CSV: goodput and latency against rate.

    python3 scripts/plot_bench_sweep.py sweep.csv [sweep.png]

Three panels share the x axis (offered request rate, req/s): request
throughput and, when the sweep had --goodput, request goodput; TTFT
p50/p90/p99; TPOT p50/p90/p99. Rows with rate "inf" have no place on a rate
axis and are left out (they are listed on stderr). Needs matplotlib
(Debian: python3-matplotlib; scripts/setup.sh installs it). Exit status 1
with a one-line reason for an unreadable or malformed CSV.
"""
import csv
import math
import os
import sys


def number(text):
    return float(text) if text not in ("", None) else math.nan


def main(argv):
    if len(argv) not in (2, 3):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    csv_path = argv[1]
    png_path = argv[2] if len(argv) == 3 else (
        csv_path[:-4] if csv_path.endswith(".csv") else csv_path) + ".png"
    try:
        with open(csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        print(f"plot_bench_sweep: cannot read {csv_path}: {e.strerror}",
              file=sys.stderr)
        return 1
    needed = ["rate", "request_throughput", "request_goodput"] + [
        f"{m}_{p}_ms" for m in ("ttft", "tpot") for p in ("p50", "p90", "p99")]
    if not rows or any(k not in rows[0] for k in needed):
        print(f"plot_bench_sweep: {csv_path} is not a duet-bench sweep CSV "
              f"(needs a header with {', '.join(needed)} and a row)",
              file=sys.stderr)
        return 1
    try:
        points = sorted((number(r["rate"]), r) for r in rows)
    except ValueError as e:
        print(f"plot_bench_sweep: {csv_path}: bad number ({e})",
              file=sys.stderr)
        return 1
    skipped = [r for rate, r in points if not math.isfinite(rate)]
    points = [(rate, r) for rate, r in points if math.isfinite(rate)]
    if skipped:
        print(f"plot_bench_sweep: {len(skipped)} row(s) at rate inf left "
              "out of the plot", file=sys.stderr)
    if not points:
        print("plot_bench_sweep: no row with a finite rate", file=sys.stderr)
        return 1

    try:
        import matplotlib
    except ImportError:
        # Debian's python3-matplotlib belongs to /usr/bin/python3; a
        # python3 earlier on PATH (pyenv, a venv) may lack it.
        system = "/usr/bin/python3"
        if (os.path.exists(system) and
                os.path.realpath(sys.executable) != os.path.realpath(system)):
            os.execv(system, [system] + argv)
        print("plot_bench_sweep: needs matplotlib (Debian: apt-get install "
              "python3-matplotlib; scripts/setup.sh installs it)",
              file=sys.stderr)
        return 1
    matplotlib.use("Agg")  # No display needed.
    import matplotlib.pyplot as plt

    rates = [rate for rate, _ in points]
    col = lambda key: [number(r[key]) for _, r in points]
    fig, axes = plt.subplots(3, 1, figsize=(7, 10), sharex=True)
    ax = axes[0]
    ax.plot(rates, rates, ":", color="gray", label="offered rate")
    ax.plot(rates, col("request_throughput"), "o-", label="throughput")
    goodput = col("request_goodput")
    if any(math.isfinite(g) for g in goodput):
        ax.plot(rates, goodput, "s-", label="goodput (all SLOs met)")
    ax.set_ylabel("requests/s")
    ax.set_title("duet-bench sweep")
    ax.legend()
    for ax, metric, name in ((axes[1], "ttft", "TTFT"),
                             (axes[2], "tpot", "TPOT")):
        for p in ("p50", "p90", "p99"):
            ax.plot(rates, col(f"{metric}_{p}_ms"), "o-", label=p)
        ax.set_ylabel(f"{name} (ms)")
        ax.legend()
    axes[-1].set_xlabel("request rate (req/s)")
    for ax in axes:
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    try:
        fig.savefig(png_path, dpi=100)
    except OSError as e:
        print(f"plot_bench_sweep: cannot write {png_path}: {e.strerror}",
              file=sys.stderr)
        return 1
    print(png_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
