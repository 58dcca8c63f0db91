"""Real sizes: the real driver, pools, dispatcher, ledger, store, selector, learner-group wiring and
weight publication, with stand-in workers that carry FLUX.1 / SD3.5-L / SANA payloads and take
their modeled GPU time (cluster.stand_in), counting every byte that crosses between processes.

For each config it prints bytes per iteration by kind against the minimum an iteration must move
(solrl/standin/minimum.py, docs/architecture.md), the peak object-store use, each stand-in's
resident memory, and ends with one JSON line per config.

    python benchmarks/real_sizes.py [--config configs/flux1.yaml ...] [--iterations 3] [--prompts 48]
        [--speedup 20] [--rollout 4] [--regen 2] [--learners 2] [--object-store-gb 8] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import tempfile
import threading

import psutil
import ray
from common import append_results, table

from solrl.cluster import runtime
from solrl.cluster.driver import Driver
from solrl.config import load_config
from solrl.nbytes import KINDS
from solrl.standin.minimum import iteration_minimum

CONFIGS = ["configs/flux1.yaml", "configs/sd35.yaml", "configs/sana.yaml"]
STAND_IN = {"flux1.yaml": "flux1", "sd35.yaml": "sd35", "sana.yaml": "sana"}
SUBJECTS = ["a red fox", "an old lighthouse", "a bowl of ramen", "a glass teapot", "a violin", "a snowy owl", "a vintage car", "a cactus"]
PLACES = ["at dawn", "in the rain", "on a wooden table", "under neon lights", "in a meadow", "on the moon", "in watercolor", "in pencil"]


def prompt_file(folder: pathlib.Path, name: str, n: int) -> pathlib.Path:
    """n distinct prompts of a typical length (the stand-ins read only their count)."""
    path = folder / name
    path.write_text("".join(f"{SUBJECTS[i % 8]} {PLACES[(i // 8) % 8]}, detailed, photo {i}\n" for i in range(n)))
    return path


class Watch:
    """Peak object-store use (polled every 0.25 s) and the stand-ins' resident memory (per row)."""

    def __init__(self):
        from ray._private.internal_api import get_memory_info_reply, get_state_from_address

        self.state = get_state_from_address(ray.get_runtime_context().gcs_address)
        self.reply = get_memory_info_reply
        self.peak, self.spilled, self.rss = 0, 0, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        while not self.stop.wait(0.25):
            stats = self.reply(self.state).store_stats
            self.peak = max(self.peak, stats.object_store_bytes_used)
            self.spilled = stats.spilled_bytes_total

    def row(self, *_) -> None:
        rss = {}
        for proc in psutil.process_iter(["cmdline"]):
            name = (proc.info["cmdline"] or [""])[0]
            if name.startswith("ray::StandIn"):
                try:
                    rss[proc.pid] = (name.split(".")[0].removeprefix("ray::"), proc.memory_full_info())
                except psutil.Error:
                    continue
        self.rss.append(rss)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def run(path: str, args: argparse.Namespace, folder: pathlib.Path) -> dict:
    model = STAND_IN[pathlib.Path(path).name]
    base = load_config(path)
    prompts = args.prompts or base.rollout.prompts_per_iteration
    overrides = [
        f"prompts={prompt_file(folder, 'train.txt', max(prompts, 64))}",
        f"eval.prompts={prompt_file(folder, 'eval.txt', 8)}",
        "eval.n=2",
        "eval.grid_rows=2",
        f"train.iterations={args.iterations}",
        f"rollout.prompts_per_iteration={prompts}",
        f"cluster.rollout_workers={args.rollout}",
        f"cluster.regen_workers={args.regen}",
        f"cluster.learner_ranks={args.learners}",
        "cluster.gpus_per_worker=0",
        "cluster.cpus_per_worker=0.25",
        f"cluster.stand_in={{model: {model}, speedup: {args.speedup}}}",
        *args.set,
    ]
    config = load_config(path, overrides)
    out = folder / model
    started = runtime.start(config, object_store_bytes=int(args.object_store_gb * 1024**3))
    try:
        watch = Watch()
        try:
            report = Driver(config, out, log=print, on_iteration=watch.row).run()
        finally:
            watch.close()
    finally:
        runtime.stop(started)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    actual = {k: statistics.fmean(r["bytes"][k] for r in rows) for k in KINDS}
    minimum = {k: statistics.fmean(iteration_minimum(config, r)[k] for r in rows) for k in KINDS}
    per_iteration = []  # the largest unique memory of a stand-in of each role, after each iteration
    for sample in watch.rss:
        roles: dict[str, int] = {}
        for role, info in sample.values():
            roles[role] = max(roles.get(role, 0), info.uss)
        per_iteration.append(dict(sorted(roles.items())))
    return {
        "config": model,
        "prompts_per_iteration": prompts,
        "candidates": config.rollout.candidates,
        "iterations": len(rows),
        "speedup": args.speedup,
        "bytes_per_iteration": round(sum(actual.values())),
        "minimum_bytes": round(sum(minimum.values())),
        "ratio": round(sum(actual.values()) / sum(minimum.values()), 3),
        "by_kind": {k: round(v) for k, v in actual.items()},
        "minimum_by_kind": {k: round(v) for k, v in minimum.items()},
        "peak_object_store_bytes": watch.peak,
        "spilled_bytes": watch.spilled,
        "stand_in_uss_bytes": {role: max(it.get(role, 0) for it in per_iteration) for role in sorted({r for it in per_iteration for r in it})},
        "stand_in_uss_per_iteration": per_iteration,
        "iteration_seconds": round(statistics.fmean(r["iteration_seconds"] for r in rows), 1),
        "run_seconds": report["seconds"],
        "bytes_moved_total": report["bytes_moved"],
    }


def mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:,.1f}"


def entry(r: dict) -> str:
    """One config's table: bytes per iteration by kind against the minimum, memory, time."""
    by, least = r["by_kind"], r["minimum_by_kind"]
    rows = [[k, mb(by[k]), mb(least[k]), f"{by[k] / least[k]:.2f}" if least[k] else "-"] for k in KINDS if by[k] or least[k]]
    rows.append(["**all**", f"**{mb(r['bytes_per_iteration'])}**", f"**{mb(r['minimum_bytes'])}**", f"**{r['ratio']:.2f}**"])
    memory = ", ".join(f"{role} {v / 1e6:,.0f} MB" for role, v in r["stand_in_uss_bytes"].items())
    return (
        f"### {r['config']}: {r['prompts_per_iteration']} prompts x {r['candidates']} seeds, {r['iterations']} iterations\n\n"
        + table(["kind", "MB per iteration", "minimum MB", "ratio"], rows)
        + f"\n\nPeak object store {mb(r['peak_object_store_bytes'])} MB (spilled {mb(r['spilled_bytes'])} MB); largest stand-in "
        f"unique memory by role: {memory}; mean iteration {r['iteration_seconds']} s at speedup {r['speedup']:g}."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", help="a shipped real-model config (default: all three)")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--prompts", type=int, help="prompts per iteration (default: the config's)")
    parser.add_argument("--speedup", type=float, default=20.0, help="modeled durations are divided by this")
    parser.add_argument("--rollout", type=int, default=4)
    parser.add_argument("--regen", type=int, default=2)
    parser.add_argument("--learners", type=int, default=2)
    parser.add_argument("--object-store-gb", type=float, default=8.0)
    parser.add_argument("--title", default="", help="what the measured code is (e.g. 'before the cuts'), for RESULTS.md")
    parser.add_argument("--set", action="append", default=[], help="config overrides")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in args.config or CONFIGS:
            folder = pathlib.Path(tmp) / pathlib.Path(path).stem
            folder.mkdir()
            results.append(run(path, args, folder))
    body = "\n\n".join(map(entry, results)) + "\n\n```json\n" + "\n".join(json.dumps(r) for r in results) + "\n```"
    notes = (
        f"{args.rollout} rollout, {args.regen} regeneration and {args.learners} learner stand-ins (solrl/standin), the real driver; "
        f"modeled GPU time divided by {args.speedup:g} (B200 table, solrl/standin/timing.py); "
        "a payload counts once per process receiving it"
    )
    append_results(f"Real sizes: bytes moved per iteration against the minimum{' (' + args.title + ')' if args.title else ''}", body, notes)
    keys = ("config", "bytes_per_iteration", "minimum_bytes", "ratio", "by_kind", "peak_object_store_bytes")
    for r in results:
        print(json.dumps({k: r[k] for k in keys}))


if __name__ == "__main__":
    main()
