"""Shared by the benchmarks that run the scheduler on a runtime and measure its steady state:
a config from a shipped one with stand-in workers, the run's rows and when each arrived, and the
seconds between rows over the steady iterations (the first and the last left out)."""

from __future__ import annotations

import pathlib
import statistics
import time

from solrl.cluster.driver import Driver
from solrl.config import load_config, shipped_config


def stand_in_config(model: str, prompts: pathlib.Path, iterations: int, *overrides: str):
    """A shipped config run by stand-ins of its model, with no eval beyond one image, no control
    service and no checkpoints (snapshots rarely), for `iterations` iterations."""
    return load_config(
        shipped_config(model),
        [
            f"prompts={prompts}", f"eval.prompts={prompts}", "eval.n=1", "eval.grid_rows=0", f"train.iterations={iterations}",
            "cluster.control_port=null", "cluster.checkpoint_every=0", "cluster.snapshot_every=1000", *overrides,
        ],
    )  # fmt: skip


def timed_rows(config, out: pathlib.Path, runtime) -> tuple[list[dict], list[float], float, int]:
    """Every metrics row of a run on `runtime`, the runtime's clock at each, and the driver's CPU
    seconds and tasks started while it iterated (a virtual runtime's workers' own CPU left out)."""
    rows, at = [], []
    with Driver(config, out, log=lambda _: None, runtime=runtime) as driver:
        cpu, workers, calls = time.process_time(), getattr(runtime, "worker_cpu", 0.0), runtime.calls
        for row in driver.iterate(lambda: False):
            rows.append(row)
            at.append(runtime.now())
        cpu = time.process_time() - cpu - (getattr(runtime, "worker_cpu", 0.0) - workers)
    return rows, at, cpu, runtime.calls - calls


def steady_period(at: list[float]) -> float:
    """Seconds between rows over the steady iterations."""
    return (at[-2] - at[0]) / (len(at) - 2)


def rollout_busy(rows: list[dict]) -> float:
    """The rollout workers' mean busy fraction over the steady iterations."""
    return statistics.fmean(v for r in rows[1:-1] for k, v in r["busy"].items() if k.startswith("rollout"))
