"""Spawn to ready per worker role: the shipped shapes config's real actors (rollout sampler,
regeneration sampler, reward worker, learner rank) started one at a time on an embedded Ray
cluster, each timed from the spawn call to its first answer (`info`: the process started,
imported its role's modules and built its worker), with the process's resident memory then.
Prints a table and one JSON line per role.

    python benchmarks/worker_spawn.py [--repeats 3] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import time

import psutil
from common import append_results, with_json_lines

from solrl.cluster import runtime
from solrl.cluster.worker_classes import worker_classes
from solrl.config import load_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_args(config, role: str) -> tuple[type, tuple]:
    classes = worker_classes(config)
    if role == "reward":
        return classes.reward, (config, "reward-0", 1)
    if role == "learner":
        return classes.learner, (config, 0, 1, "127.0.0.1", free_port(), 1)
    return classes.sampler, (config, role, f"{role}-0", 1)


def time_role(rt: runtime.RayRuntime, config, role: str) -> tuple[float, int, dict]:
    cls, args = spawn_args(config, role)
    start = time.perf_counter()
    handle = rt.spawn(cls, {"num_cpus": 1, "max_restarts": 0}, *args)
    info = rt.get(rt.call(handle, "info"))
    seconds = time.perf_counter() - start
    rss = psutil.Process(info["pid"]).memory_info().rss
    rt.kill(handle)
    return seconds, rss, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], help="a config override, e.g. cluster.reward_workers=1")
    args = parser.parse_args()
    config = load_config(overrides=["cluster.control_port=null", *args.set])
    started = runtime.start(config)
    points = []
    try:
        rt = runtime.RayRuntime()
        for role in ("explore", "regenerate", "reward", "learner"):
            runs = [time_role(rt, config, role) for _ in range(args.repeats)]
            info = runs[-1][2]
            points.append({
                "role": role, "spawn_to_ready_s": statistics.median(r[0] for r in runs), "min_s": min(r[0] for r in runs),
                "rss_mb": statistics.median(r[1] for r in runs) / 2**20, "heavy_modules": info.get("heavy_modules"),
            })  # fmt: skip
    finally:
        runtime.stop(started)
    headers = ["role", "spawn to ready (s, median)", "fastest (s)", "resident MB", "heavy modules loaded"]
    rows = [
        [p["role"], f"{p['spawn_to_ready_s']:.2f}", f"{p['min_s']:.2f}", f"{p['rss_mb']:.0f}", "n/a" if p["heavy_modules"] is None else ", ".join(p["heavy_modules"]) or "-"]
        for p in points
    ]  # fmt: skip
    body = with_json_lines(headers, rows, points, 3)
    notes = f"configs/shapes.yaml's actors, one at a time on an embedded Ray cluster, {args.repeats} spawns a role; the spawn includes Ray starting the process"
    append_results("Worker spawn to ready by role (benchmarks/worker_spawn.py)", body, notes)


if __name__ == "__main__":
    main()
