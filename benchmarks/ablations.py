"""The paper's ablations on the shapes run, at equal training wall time.

Variants (K kept per prompt, N explored):
  (a) plain DiffusionNFT  BF16 K-in-K: sample K seeds at full steps and train on all of them
  (b) naive BF16 scaling  BF16 K-in-N: sample N at full steps, keep the K most contrastive
  (c) naive quant         NVFP4 K-in-N at full steps, trained on the NVFP4 samples directly
  (d) Sol-RL              NVFP4 N-seed explore in few steps, regenerate K in BF16
and Sol-RL's pool size N in {K, 2K, 4K} at fixed K. With N = 4K, (d) and the largest pool are the
same configuration, run twice: the two rows show the run-to-run spread (the iterations that fit
in the budget vary with the machine's load). Each variant starts from the shipped base
model with the shapes config and trains for --budget seconds; the table reports eval accuracy.

    python benchmarks/ablations.py [--budget 300] [--k 8] [--n 32] [--only a,b,c,d,pool] [--set key=value ...]

The single-object variant (the one task the shipped model learns within minutes):
    --set prompts=benchmarks/prompts/single_object.txt --set eval.prompts=benchmarks/prompts/single_object.txt
    --set eval.n=32 --set rollout.prompts_per_iteration=3
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile

import torch

from common import append_results, table
from solrl.config import load_config
from solrl.local_run import LocalRun


def variants(k: int, n: int, regen_steps: int) -> dict[str, list[str]]:
    full = f"rollout.explore.steps={regen_steps}"
    return {
        "a": ["rollout.mode=direct", "rollout.explore_precision=bf16", full, f"rollout.candidates={k}"],
        "b": ["rollout.mode=direct", "rollout.explore_precision=bf16", full, f"rollout.candidates={n}"],
        "c": ["rollout.mode=direct", "rollout.explore_precision=nvfp4", full, f"rollout.candidates={n}"],
        "d": [f"rollout.candidates={n}"],
        **{f"pool{m}": [f"rollout.candidates={m * k}"] for m in (1, 2, 4)},
    }


NAMES = {
    "a": "(a) plain DiffusionNFT, BF16 {k}-in-{k}",
    "b": "(b) naive BF16 scaling, {k}-in-{n}",
    "c": "(c) train on NVFP4 samples, {k}-in-{n}",
    "d": "(d) Sol-RL {k}-in-{n}",
    "pool1": "Sol-RL pool N={k}",
    "pool2": "Sol-RL pool N={k2}",
    "pool4": "Sol-RL pool N={k4}",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=300, help="training seconds per variant")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--only", default="a,b,c,d,pool")
    parser.add_argument("--set", action="append", default=[], help="extra config overrides for every variant")
    args = parser.parse_args()
    wanted = args.only.split(",")
    base = load_config(overrides=args.set)
    chosen = {key: ov for key, ov in variants(args.k, args.n, base.rollout.regenerate.steps).items()
              if key in wanted or (key.startswith("pool") and "pool" in wanted)}
    rows = []
    for key, overrides in chosen.items():
        config = load_config(
            overrides=args.set + overrides + [f"selection.k={args.k}", "train.iterations=100000", f"train.max_seconds={args.budget}"]
        )
        with tempfile.TemporaryDirectory() as out:
            report = LocalRun(config, pathlib.Path(out), log=lambda _: None).run()
        name = NAMES[key].format(k=args.k, n=args.n, k2=2 * args.k, k4=4 * args.k)
        rows.append([name, report["iterations"], f"{report['base_eval']['accuracy']:.3f}", f"{report['final_eval']['accuracy']:.3f}",
                     f"{report['final_eval']['score']:.3f}", f"{report['improvement']:+.3f}"])
        print(rows[-1], flush=True)
    append_results(
        f"Ablations on the shapes run at equal wall time ({args.budget:.0f} s of training each; train prompts: {base.prompts})",
        table(["variant", "iterations", "base accuracy", "eval accuracy (EMA)", "eval score", "gain"], rows),
        f"eval = strict accuracy on the prompts '{base.eval.prompts}', {base.eval.n} images each, "
        f"{base.eval.sampling.solver} {base.eval.sampling.steps} steps; one training seed per variant; "
        f"{torch.get_num_threads()} torch thread(s); the binomial standard error of an accuracy p over m images "
        f"is sqrt(p(1-p)/m), e.g. 0.05 at p=0.4, m=96; on a CPU NVFP4 is emulated and slower than BF16, so equal "
        f"wall time does not favour the NVFP4 variants as it does on Blackwell",
    )


if __name__ == "__main__":
    main()
