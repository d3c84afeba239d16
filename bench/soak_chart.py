#!/usr/bin/env python3
"""Chart of a soak run (bench/soak.sh): RSS, open descriptors, upstream connections,
authgate_sessions_live and p99 latency over time, one panel each.

    python3 bench/soak_chart.py bench/soak.jsonl bench/soak.png
"""
import json
import sys


def main(src, dst):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(l) for l in open(src) if l.startswith("{")]
    samples = [r for r in rows if r.get("phase") == "sample"]
    summary = next((r for r in rows if r.get("phase") == "summary"), {})
    if not samples:
        print("no samples in", src)
        return 1
    t = [s["t_s"] / 60 for s in samples]
    panels = [
        ("RSS (MiB)", [s["rss_kib"] / 1024 for s in samples]),
        ("open descriptors", [s["fds"] for s in samples]),
        ("upstream connections", [s["upstream_conns"] for s in samples]),
        ("authgate_sessions_live", [s["sessions_live"] or 0 for s in samples]),
        ("p99 / p50 (ms)", None),
        ("requests/s", [s["rps"] for s in samples]),
    ]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 12), sharex=True)
    for ax, (label, ys) in zip(axes, panels):
        if ys is None:
            ax.plot(t, [s["p99_us"] / 1000 for s in samples], marker=".", label="p99")
            ax.plot(t, [s["p50_us"] / 1000 for s in samples], marker=".", label="p50")
            ax.legend(loc="upper right", fontsize=8)
        else:
            ax.plot(t, ys, marker=".")
            lo, hi = min(ys), max(ys)
            pad = max((hi - lo) * 0.5, abs(hi) * 0.05, 1)
            ax.set_ylim(max(0, lo - pad), hi + pad)
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("minutes into the soak")
    title = "authgate soak"
    if summary:
        title += " at {:.0f} req/s (80 % of {:.0f}); RSS slope {} KiB/min, fd slope {}/min".format(
            summary.get("rate", 0), summary.get("saturation_rps", 0),
            summary.get("rss_slope_kib_per_min"), summary.get("fd_slope_per_min"))
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(dst, dpi=90)
    print("wrote", dst)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
