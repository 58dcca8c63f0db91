"""Soak: a long distributed shapes run with workers SIGKILLed while it goes, then audited.

Every `--kill-every` seconds a random sampler or reward worker process of the run is SIGKILLed,
and once, halfway through, a learner rank: the way an out-of-memory kill or a lost machine ends
a process, at whatever point of its work it happens to be (the fault tests cover each point
deterministically; this covers the points between). The run's own candidate log then says
whether any prompt group was lost or trained twice, and a run of the same config without kills
gives the iteration time the kills cost.

    python benchmarks/soak.py [--minutes 30] [--baseline-minutes 5] [--kill-every 60] [--set k=v ...]

Run it alone on the machine: it finds the run's workers among this process's descendants.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import signal
import statistics
import tempfile
import threading

from common import append_results, table

from solrl.cluster import runtime
from solrl.cluster.driver import Driver
from solrl.config import load_config
from solrl.workers.store import audit_log

SMALL = [  # fewer candidates than the main job, so a kill every minute spans several iterations
    "rollout.prompts_per_iteration=4",
    "rollout.candidates=8",
    "selection.k=4",
    "cluster.reward_workers=1",
    "cluster.max_restarts=1000",
    "eval.every=0",
    "eval.n=1",
    "eval.grid_rows=0",
]
SAMPLERS, LEARNERS = ("ray::SamplerActor", "ray::RewardActor"), ("ray::LearnerActor",)


def _descendants(root: int) -> dict[int, str]:
    """pid -> command line of every live process below `root`."""
    parent, cmd = {}, {}
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            parent[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            cmd[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = {}, [root]
    while frontier:
        pid = frontier.pop()
        for child, p in parent.items():
            if p == pid and child not in found:
                found[child] = cmd[child]
                frontier.append(child)
    return found


class Killer(threading.Thread):
    """SIGKILLs a random worker process every `every` seconds, and one learner rank at `learner_at`."""

    def __init__(self, every: float, learner_at: float, seed: int):
        super().__init__(daemon=True)
        self.every, self.learner_at, self.rng = every, learner_at, random.Random(seed)
        self.kills: list[tuple[float, str]] = []
        self.done = threading.Event()

    def _kill_one(self, prefixes: tuple[str, ...], elapsed: float) -> None:
        procs = [(pid, c) for pid, c in _descendants(os.getpid()).items() if c.startswith(prefixes)]
        if procs:
            pid, c = self.rng.choice(sorted(procs))
            os.kill(pid, signal.SIGKILL)
            self.kills.append((elapsed, c.split()[0]))

    def run(self) -> None:
        elapsed, learner_done = 0.0, False
        while not self.done.wait(self.every):
            elapsed += self.every
            if not learner_done and elapsed >= self.learner_at:
                self._kill_one(LEARNERS, elapsed)
                learner_done = True
            else:
                self._kill_one(SAMPLERS, elapsed)


def soak(overrides: list[str], minutes: float, killer: Killer | None) -> dict:
    config = load_config(overrides=[*SMALL, *overrides, "train.iterations=100000", f"train.max_seconds={minutes * 60}"])
    started = runtime.start(config)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = pathlib.Path(tmp) / "run"
            if killer is not None:
                killer.start()
            try:
                report = Driver(config, out, log=print).run()
            finally:
                if killer is not None:
                    killer.done.set()
            rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            audit = audit_log(out / "candidates", len(rows), config.rollout.prompts_per_iteration, config.rollout.candidates)
    finally:
        runtime.stop(started)
    steady = [r["iteration_seconds"] for r in rows[1:]] or [float("nan")]
    return {"iterations": len(rows), "iteration_s": statistics.median(steady), "restarts": report["restarts"], **audit}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--baseline-minutes", type=float, default=5)
    parser.add_argument("--kill-every", type=float, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="config overrides for both runs")
    args = parser.parse_args()
    base = soak(args.set, args.baseline_minutes, None)
    killer = Killer(args.kill_every, args.minutes * 30, args.seed)
    run = soak(args.set, args.minutes, killer)
    kinds = {}
    for _, what in killer.kills:
        kinds[what] = kinds.get(what, 0) + 1
    rows = [
        [name, r["iterations"], f"{r['iteration_s']:.1f}", r["trained"], r["dropped"], r["lost"], r["duplicated"], json.dumps(r["restarts"])]
        for name, r in (("no kills", base), (f"kill every {args.kill_every:g} s", run))
    ]
    body = table(["run", "iterations", "median iteration s", "groups trained", "dropped (stale)", "lost", "duplicated", "restarts"], rows)
    body += f"\n\nKills: {len(killer.kills)} ({', '.join(f'{k} x{v}' for k, v in sorted(kinds.items()))}). "
    body += f"Iteration-time overhead of the kills: {run['iteration_s'] / base['iteration_s'] - 1:+.0%} (median)."
    lines = [{"run": name, "kills": len(killer.kills) if r is run else 0, **r} for name, r in (("no kills", base), ("kills", run))]
    body += "\n\n```json\n" + "\n".join(json.dumps(line) for line in lines) + "\n```"
    append_results(f"Soak: {args.minutes:g} min with a worker SIGKILLed every {args.kill_every:g} s", body)
    if run["lost"] or run["duplicated"]:
        raise SystemExit(f"FAILED: {run['lost']} groups lost, {run['duplicated']} rows duplicated")


if __name__ == "__main__":
    main()
