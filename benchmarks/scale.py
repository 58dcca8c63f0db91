"""Scale: the real scheduler at FLUX.1's stage times with many workers, on real Ray actors (stand-in
workers carrying FLUX.1 payloads) and on the virtual-clock runtime (the same scheduler, in one
process, nothing sleeping).

Each point runs `--iterations` iterations at `--lag` with W rollout workers and the regeneration
pool and learner group sized from the stage table (solrl/standin/timing.py) so every stage takes
about as long: W : R : L = explore : regenerate : train GPU-seconds per group. Weak scaling gives
each rollout worker `--groups-per-worker` prompt groups an iteration; `--strong` keeps the shipped
48 x 96. Measured over the steady iterations (the first and last are left out):
- rollout_busy: the rollout workers' busy fraction;
- iteration_over_largest_stage: seconds between rows over the largest stage's modeled time;
- weak_scaling_efficiency: the period at the smallest W over the period at W;
- driver_ms_per_task: the driver's CPU per task started (virtual: without the workers' own CPU);
- publish_s: seconds to send a weight update to every sampler.

    python benchmarks/scale.py [--mode ray virtual] [--workers 4 8] [--virtual-workers 4 8 64 256 1024]
        [--lag 1] [--iterations 8] [--groups-per-worker 4] [--speedup 20] [--strong]
"""

from __future__ import annotations

import argparse
import math
import pathlib
import statistics
import tempfile
import time

from common import append_results, with_json_lines
from real_sizes import prompt_file
from virtual_runs import rollout_busy, stand_in_config, steady_period, timed_rows

from solrl.cluster import runtime as ray_runtime
from solrl.cluster.slices import explore_pieces
from solrl.cluster.virtual import VirtualRuntime
from solrl.config import load_config, shipped_config
from solrl.standin.timing import Clock


def group_seconds(config) -> dict[str, float]:
    """Modeled seconds of one prompt group in each stage, on one worker (no jitter, no speedup)."""
    flat = config.model_copy(update={"cluster": config.cluster.model_copy(update={"stand_in": config.cluster.stand_in.model_copy(update={"jitter": 0.0, "speedup": 1.0})})})
    clock, ro = Clock(flat, "table", virtual=True), flat.rollout
    k = flat.selection.k
    return {
        "explore": clock.sample(ro.candidates, ro.explore, ro.explore_precision) + clock.reward(ro.candidates),
        "regenerate": clock.sample(k, ro.regenerate, ro.regenerate_precision) + clock.reward(k),
        "train": clock.train(k),
    }


def stage_seconds(groups: int, k: int, pieces: int, pools: tuple[int, int, int], per_group: dict[str, float]) -> dict[str, float]:
    """Each stage's modeled seconds an iteration: its tasks shared out over its pool, whole tasks
    to a worker (explore tasks are group slices, regeneration tasks whole groups, learner ranks
    train their rows)."""
    rollout, regen, learners = pools
    return {
        "explore": math.ceil(groups * pieces / rollout) * per_group["explore"] / pieces,
        "regenerate": math.ceil(groups / regen) * per_group["regenerate"],
        "train": math.ceil(groups * k / learners) / k * per_group["train"],
    }


def split(workers: int, groups: int, k: int, pieces: int, per_group: dict[str, float], lag: int, jitter: float) -> tuple[int, int]:
    """Regeneration workers and learner ranks for `workers` rollout workers: the fewest with which
    no stage takes longer than explore (rollout is the pool the pipeline keeps busy). At lag L
    explore of iteration j + L + 1 waits for step j, which waits for iteration j's last group to
    be regenerated: L + 1 periods hold explore, that tail and the step, so at lag 1 the step gets
    explore's time less the tail (one group regenerated, and the last explore wave's lateness,
    both under `jitter`), unless that leaves it under half of explore's."""
    explore = stage_seconds(groups, k, pieces, (workers, 1, 1), per_group)["explore"]
    tail = per_group["regenerate"] * (1 + jitter) + explore * jitter
    train_budget = min(explore, lag * explore - tail) if lag > 0 else explore
    if train_budget < explore / 2:  # the tail is most of a stage (few groups a worker): headroom cannot hide it
        train_budget = explore
    regen = next((r for r in range(1, groups + 1) if stage_seconds(groups, k, pieces, (workers, r, 1), per_group)["regenerate"] <= explore + 1e-9), groups)
    fits = (n for n in range(1, groups * k + 1) if stage_seconds(groups, k, pieces, (workers, 1, n), per_group)["train"] <= train_budget + 1e-9)
    return regen, next(fits, groups * k)


def point_config(folder: pathlib.Path, workers: int, args) -> tuple:
    base = load_config(shipped_config("flux1"), ["prompts=/x", "eval.prompts=/x", "cluster.stand_in={model: flux1}", *args.set])
    per_group, k = group_seconds(base), base.selection.k
    groups = 48 if args.strong else args.groups_per_worker * workers
    pieces = explore_pieces(base.cluster.explore_split, groups, base.rollout.candidates, workers)
    regen, learners = split(workers, groups, k, pieces, per_group, args.lag, base.cluster.stand_in.jitter)
    prompts = prompt_file(folder, f"prompts-{groups}.txt", groups)
    speedup = args.speedup if args.mode_now == "ray" else 1
    config = stand_in_config(
        "flux1", prompts, args.iterations, f"rollout.prompts_per_iteration={groups}", f"rollout.max_policy_lag={args.lag}",
        f"cluster.rollout_workers={workers}", f"cluster.regen_workers={regen}", f"cluster.learner_ranks={learners}", "cluster.gpus_per_worker=0",
        "cluster.cpus_per_worker=0.05", f"cluster.stand_in={{model: flux1, speedup: {speedup}}}", *args.set,
    )  # fmt: skip
    scale = args.speedup if args.mode_now == "ray" else 1.0
    largest = max(stage_seconds(groups, k, pieces, (workers, regen, learners), per_group).values()) / scale
    return config, {"regen": regen, "learners": learners, "groups": groups, "largest_stage_s": largest}


def measure(mode: str, workers: int, args) -> dict:
    args.mode_now = mode
    with tempfile.TemporaryDirectory() as tmp:
        config, shape = point_config(pathlib.Path(tmp), workers, args)
        started = ray_runtime.start(config, object_store_bytes=4 * 1024**3) if mode == "ray" else False
        try:
            wall = time.perf_counter()
            rows, at, cpu, calls = timed_rows(config, pathlib.Path(tmp) / "run", VirtualRuntime() if mode == "virtual" else ray_runtime.RayRuntime())
            wall = time.perf_counter() - wall
        finally:
            ray_runtime.stop(started)
    period = steady_period(at)
    return shape | {
        "mode": mode, "workers": workers, "lag": args.lag, "period_s": period, "rollout_busy": rollout_busy(rows),
        "iteration_over_largest_stage": period / shape["largest_stage_s"], "driver_ms_per_task": 1000 * cpu / calls,
        "publish_s": statistics.fmean(r["seconds"]["sync"] for r in rows[1:-1]), "tasks": calls, "wall_s": wall,
        "dropped": sum(sum(r["dropped"].values()) for r in rows), "max_policy_lag": max(r["policy_lag"] for r in rows),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", nargs="+", choices=["ray", "virtual"], default=["ray", "virtual"])
    parser.add_argument("--workers", nargs="+", type=int, default=[4, 8], help="rollout workers of the Ray points")
    parser.add_argument("--virtual-workers", nargs="+", type=int, default=[4, 8, 16, 32, 64, 256, 1024])
    parser.add_argument("--lag", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--groups-per-worker", type=int, default=4)
    parser.add_argument("--speedup", type=float, default=20.0, help="Ray points' modeled times are divided by this")
    parser.add_argument("--strong", action="store_true", help="the shipped 48 x 96 at every W, not groups in proportion")
    parser.add_argument("--set", action="append", default=[], help="a config override for every point, e.g. cluster.explore_split=2")
    args = parser.parse_args()
    points = [measure(m, w, args) for m in args.mode for w in (args.workers if m == "ray" else args.virtual_workers)]
    for mode in args.mode:
        mine = [p for p in points if p["mode"] == mode]
        for p in mine:
            p["weak_scaling_efficiency"] = None if args.strong else min(mine, key=lambda q: q["workers"])["period_s"] / p["period_s"]
    headers = ["mode", "W rollout", "R regen", "L learners", "groups", "period (s)", "largest stage (s)", "period / largest", "rollout busy",
               "weak eff.", "driver ms/task", "publish (s)", "dropped", "max lag"]  # fmt: skip
    rows = [
        [p["mode"], p["workers"], p["regen"], p["learners"], p["groups"], f"{p['period_s']:.1f}", f"{p['largest_stage_s']:.1f}",
         f"{p['iteration_over_largest_stage']:.3f}", f"{p['rollout_busy']:.3f}",
         "-" if p["weak_scaling_efficiency"] is None else f"{p['weak_scaling_efficiency']:.3f}",
         f"{p['driver_ms_per_task']:.2f}", f"{p['publish_s']:.3f}", p["dropped"], p["max_policy_lag"]]
        for p in points
    ]  # fmt: skip
    body = with_json_lines(headers, rows, points)
    notes = (
        f"FLUX.1 stand-ins (stage table: solrl/standin/timing.py, 8 x B200 calibration), lag {args.lag}, {args.iterations} iterations, "
        f"{'the shipped 48 x 96' if args.strong else f'{args.groups_per_worker} groups of 96 seeds per rollout worker'}; "
        f"Ray points at speedup {args.speedup:g} (their seconds are wall seconds), virtual points at speedup 1 (modeled seconds)"
    )
    append_results("Scale: the scheduler with many workers (benchmarks/scale.py)", body, notes)


if __name__ == "__main__":
    main()
