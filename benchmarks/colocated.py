"""solrl's disaggregated pipeline against the reference's colocated synchronous schedule, on the same
stage table (FLUX.1 by default, `--model`) (solrl/standin/timing.py: one calibration point per model, the paper's Sol-RL
iteration on 8 x B200) and the same GPUs: trained samples per GPU-hour, and the pool split that
gets them.

- Reference (the paper's code): every GPU explores its share of the iteration's 48 x 96 seeds,
  then regenerates its share of the 48 x 24 kept, then trains its share; each phase ends when the
  slowest GPU does (shares are even, as the paper's code shards them). Its time is computed from
  the stage table, per sample, with no overhead at all: every call of a phase on every GPU with no
  gap, which favours it. With `--jitter` each phase waits for its slowest GPU (the expected maximum
  of the GPUs' uniform jitter).
- solrl: rollout, regeneration and learner pools on disjoint GPUs, run by the real scheduler on
  the virtual-clock runtime at lag `--lag`. Every split of the GPUs is priced from the stage
  table; the `--candidates` best are run, and the best measured is reported as the recommendation.
  Each fleet is measured twice: with whole-GPU pools only, and with the learners lent to
  regeneration (cluster.lend_learners: a regeneration worker beside each learner rank takes
  regeneration tasks while the learners have no step to run).
- A mixed fleet (`--mixed 8 8`: B200s and H100s): Hopper has no FP4 tensor cores, so a colocated
  run explores there in FP8 (cost.price('fp8_e4m3')); solrl explores in NVFP4 on the B200s only
  and places regeneration and learners on either kind.

    python benchmarks/colocated.py [--model flux1] [--gpus 8 64] [--mixed 8 8] [--lag 1] [--iterations 8] [--jitter 0.1]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import tempfile

from common import append_results, table
from real_sizes import prompt_file
from scale import group_seconds, stage_seconds
from virtual_runs import stand_in_config, steady_period, timed_rows

from solrl.cluster.slices import explore_pieces
from solrl.cluster.virtual import VirtualRuntime
from solrl.config import load_config, shipped_config
from solrl.standin.timing import GPU_SLOWDOWN

GROUPS = 48
POOLS = ("rollout", "regen", "learner")


def base_config(args):
    return load_config(shipped_config(args.model), ["prompts=/x", "eval.prompts=/x", f"cluster.stand_in={{model: {args.model}, jitter: {args.jitter}}}"])


def reference_seconds(config, fleet: dict[str, int], jitter: float) -> float:
    """One synchronous colocated iteration on `fleet` (gpu -> count), shares even."""
    per_group = group_seconds(config)  # on a B200
    gpus = sum(fleet.values())
    explore_fp8 = config.cost.price("fp8_e4m3") / config.cost.price("nvfp4")
    straggle = 1 + jitter * (gpus - 1) / (gpus + 1)  # E[max of n uniform(-j, j)] = j (n-1)/(n+1)
    total = 0.0
    for stage, share in per_group.items():
        slowest = max(GPU_SLOWDOWN[gpu] * (explore_fp8 if stage == "explore" and gpu != "b200" else 1.0) for gpu in fleet)
        total += GROUPS * share / gpus * slowest * straggle
    return total


def estimate(config, pools: dict[str, tuple[int, str]], lag: int) -> float:
    """A split's period from the stage table (the largest stage, and at lag 1 the chain of explore,
    the regeneration tail and the step that two periods must hold)."""
    per_group, k = group_seconds(config), config.selection.k
    (w, wg), (r, rg), (n, ng) = pools["rollout"], pools["regen"], pools["learner"]
    pieces = explore_pieces(0, GROUPS, config.rollout.candidates, w)
    s = stage_seconds(GROUPS, k, pieces, (w, r, n), per_group)
    s = {"explore": s["explore"] * GPU_SLOWDOWN[wg], "regenerate": s["regenerate"] * GPU_SLOWDOWN[rg], "train": s["train"] * GPU_SLOWDOWN[ng]}
    if pools.get("lend"):  # the learners' time beyond their training regenerates too
        s["regenerate"] = min(s["regenerate"], max(s["train"], (s["regenerate"] * r + s["train"] * n) / (r + n)))
    chain = (s["explore"] + per_group["regenerate"] * GPU_SLOWDOWN[rg] + s["train"]) / (lag + 1) if lag else sum(s.values())
    return max(*s.values(), chain)


def splits(fleet: dict[str, int], lend: bool):
    """Every placement of rollout (B200 only when the fleet has B200s), regeneration and learners."""
    kinds = list(fleet)
    rollout_kinds = ["b200"] if "b200" in fleet else kinds
    for wg in rollout_kinds:
        for rg in kinds:
            for ng in kinds:
                for w in range(1, fleet[wg] + 1):
                    for r in range(1, fleet[rg] + 1):
                        left = dict(fleet)
                        left[wg] -= w
                        left[rg] -= r
                        if min(left.values()) < 0 or left[ng] < 1:
                            continue
                        yield {"rollout": (w, wg), "regen": (r, rg), "learner": (left[ng], ng), "lend": lend}


def measure(args, pools: dict[str, tuple[int, str]]) -> float:
    """The split's period on the virtual clock, over the steady iterations."""
    with tempfile.TemporaryDirectory() as tmp:
        prompts = prompt_file(pathlib.Path(tmp), "prompts.txt", GROUPS)
        gpus = {name: pools[name][1] for name in POOLS}
        config = stand_in_config(
            args.model, prompts, args.iterations, f"rollout.max_policy_lag={args.lag}", f"cluster.rollout_workers={pools['rollout'][0]}",
            f"cluster.regen_workers={pools['regen'][0]}", f"cluster.learner_ranks={pools['learner'][0]}",
            f"cluster.stand_in={{model: {args.model}, jitter: {args.jitter}, pools: {json.dumps(gpus)}}}", f"cluster.lend_learners={pools['lend']}",
        )  # fmt: skip
        return steady_period(timed_rows(config, pathlib.Path(tmp) / "run", VirtualRuntime())[1])


def compare(args, fleet: dict[str, int], lend: bool) -> dict:
    config = base_config(args)
    gpus = sum(fleet.values())
    per_hour = lambda period: GROUPS * config.selection.k * 3600 / (period * gpus)  # noqa: E731
    ref = reference_seconds(config, fleet, args.jitter)
    ranked = sorted(splits(fleet, lend), key=lambda p: estimate(config, p, args.lag))[: args.candidates]
    if lend:  # the estimate of lending ignores that a step waits for lent tasks: also try the best whole-GPU splits lent
        plain = sorted(splits(fleet, False), key=lambda p: estimate(config, p, args.lag))[: max(1, args.candidates // 2)]
        ranked += [p | {"lend": True} for p in plain if p | {"lend": True} not in ranked]
    measured = [(measure(args, p), p) for p in ranked]
    period, best = min(measured, key=lambda m: m[0])
    return {
        "fleet": fleet, "gpus": gpus, "lag": args.lag, "jitter": args.jitter, "learners_lent": lend,
        "reference_s": ref, "reference_samples_per_gpu_hour": per_hour(ref),
        "solrl_s": period, "solrl_samples_per_gpu_hour": per_hour(period), "ratio": ref / period,
        "split": {k: f"{best[k][0]} x {best[k][1]}" for k in POOLS},
        "tried": [{k: f"{p[k][0]} x {p[k][1]}" for k in POOLS} | {"period_s": round(s, 2)} for s, p in measured],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["flux1", "sd35", "sana"], default="flux1", help="whose shipped config and stage table")
    parser.add_argument("--gpus", nargs="*", type=int, default=[8, 64], help="homogeneous B200 fleets")
    parser.add_argument("--mixed", nargs=2, type=int, default=[8, 8], metavar=("B200", "H100"), help="a mixed fleet; 0 0 for none")
    parser.add_argument("--lag", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--jitter", type=float, default=0.1)
    parser.add_argument("--candidates", type=int, default=4, help="splits run on the virtual clock per fleet, best estimated first")
    args = parser.parse_args()
    fleets = [{"b200": n} for n in args.gpus] + ([{"b200": args.mixed[0], "h100": args.mixed[1]}] if sum(args.mixed) else [])
    points = [compare(args, fleet, lend) for fleet in fleets for lend in (False, True)]
    headers = ["fleet", "learners lent", "reference s/iter", "reference samples/GPU-h", "solrl s/iter", "solrl samples/GPU-h", "solrl / reference", "recommended split"]
    rows = [
        [" + ".join(f"{n} {g.upper()}" for g, n in p["fleet"].items()), "yes" if p["learners_lent"] else "no", f"{p['reference_s']:.1f}", f"{p['reference_samples_per_gpu_hour']:.0f}",
         f"{p['solrl_s']:.1f}", f"{p['solrl_samples_per_gpu_hour']:.0f}", f"{p['ratio']:.3f}", ", ".join(f"{k} {v}" for k, v in p["split"].items())]
        for p in points
    ]  # fmt: skip
    body = table(headers, rows) + "\n\n" + "\n".join(json.dumps(p) for p in points)
    notes = (
        f"{args.model} stage table and shipped config (solrl/standin/timing.py), {GROUPS} x 96 explored, 24 kept; solrl at lag {args.lag} on the virtual clock "
        f"({args.iterations} iterations, jitter {args.jitter}); the reference computed with no overhead (see the script's docstring)"
    )
    append_results("Disaggregated vs the reference's colocated schedule (benchmarks/colocated.py)", body, notes)


if __name__ == "__main__":
    main()
