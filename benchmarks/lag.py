"""Choosing max_policy_lag for the real-model configs: each shipped config (its pools, 48 x 96,
24 kept) run by the real scheduler on the virtual-clock runtime with stand-in workers of its model
(solrl/standin/timing.py, B200 times), at lag 0, 1 and 2. Prints seconds per iteration over the
steady iterations, the rollout pool's busy fraction, trained samples per GPU-hour and the largest
policy lag a trained sample had, then one JSON line per point. The recommendation is the smallest
lag within 2 % of the best throughput (fresher samples cost nothing then).

    python benchmarks/lag.py [--configs flux1 sd35 sana] [--lags 0 1 2] [--iterations 8]
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile

from common import append_results, with_json_lines
from real_sizes import prompt_file
from virtual_runs import rollout_busy, stand_in_config, steady_period, timed_rows

from solrl.cluster.virtual import VirtualRuntime


def measure(name: str, lag: int, iterations: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        prompts = prompt_file(pathlib.Path(tmp), "prompts.txt", 48)
        config = stand_in_config(name, prompts, iterations, f"rollout.max_policy_lag={lag}", f"cluster.stand_in={{model: {name}}}")
        rows, at, _, _ = timed_rows(config, pathlib.Path(tmp) / "run", VirtualRuntime())
    c = config.cluster
    period, gpus = steady_period(at), c.rollout_workers + c.regen_workers + c.learner_ranks
    return {
        "config": name, "lag": lag, "gpus": gpus, "period_s": period, "rollout_busy": rollout_busy(rows),
        "samples_per_gpu_hour": rows[0]["regenerated"] * 3600 / (period * gpus), "max_policy_lag": max(r["policy_lag"] for r in rows),
        "dropped": sum(sum(r["dropped"].values()) for r in rows),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["flux1", "sd35", "sana"])
    parser.add_argument("--lags", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=8)
    args = parser.parse_args()
    points = [measure(name, lag, args.iterations) for name in args.configs for lag in args.lags]
    for name in args.configs:
        mine = [p for p in points if p["config"] == name]
        best = max(p["samples_per_gpu_hour"] for p in mine)
        chosen = min((p for p in mine if p["samples_per_gpu_hour"] >= 0.98 * best), key=lambda p: p["lag"])
        for p in mine:
            p["recommended"] = p is chosen
    headers = ["config", "lag", "GPUs", "s / iteration", "rollout busy", "samples / GPU-h", "largest lag trained", "dropped", "recommended"]
    rows = [
        [p["config"], p["lag"], p["gpus"], f"{p['period_s']:.1f}", f"{p['rollout_busy']:.3f}", f"{p['samples_per_gpu_hour']:.0f}",
         p["max_policy_lag"], p["dropped"], "yes" if p["recommended"] else ""]
        for p in points
    ]  # fmt: skip
    body = with_json_lines(headers, rows, points)
    notes = f"the shipped configs' pools and 48 x 96, stand-in stage tables on B200, {args.iterations} iterations on the virtual clock, jitter 0.1"
    append_results("Policy lag for the real-model configs (benchmarks/lag.py)", body, notes)


if __name__ == "__main__":
    main()
