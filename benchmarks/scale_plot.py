"""Draws benchmarks/scale.png from the JSON lines benchmarks/scale.py appended to RESULTS.md: for
each measured point (weak scaling, the newest measurement of each mode and worker count), the
iteration time over the largest stage's and the rollout pool's busy fraction against the number
of rollout workers, Ray stand-ins and the virtual clock side by side.

    python benchmarks/scale_plot.py [--out benchmarks/scale.png]
"""

from __future__ import annotations

import argparse
import json
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from common import RESULTS  # noqa: E402


def points() -> dict[tuple[str, int], dict]:
    """The newest weak-scaling point of each (mode, workers) in RESULTS.md."""
    found = {}
    for line in RESULTS.read_text().splitlines():
        if line.startswith("{") and '"iteration_over_largest_stage"' in line:
            p = json.loads(line)
            if p.get("weak_scaling_efficiency") is not None:
                found[(p["mode"], p["workers"])] = p
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS.with_name("scale.png"))
    args = parser.parse_args()
    found = points()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for mode, marker in (("virtual", "o"), ("ray", "s")):
        mine = sorted((w, p) for (m, w), p in found.items() if m == mode)
        if not mine:
            continue
        xs = [w for w, _ in mine]
        axes[0].plot(xs, [p["iteration_over_largest_stage"] for _, p in mine], marker=marker, label=mode)
        axes[1].plot(xs, [p["rollout_busy"] for _, p in mine], marker=marker, label=mode)
    for ax, title, bar in ((axes[0], "iteration time / largest stage", 1.1), (axes[1], "rollout busy", 0.95)):
        ax.axhline(bar, color="grey", linestyle="--", linewidth=1, label=f"bar {bar}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("rollout workers (FLUX.1 stand-ins, lag 1, weak scaling)")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out} from {len(found)} points")


if __name__ == "__main__":
    main()
