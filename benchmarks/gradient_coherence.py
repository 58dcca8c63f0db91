"""How much of one DiffusionNFT gradient is signal: cosine similarities on the shapes run.

One iteration of the configured run is sampled (explore, select, regenerate) from the shipped
base model; then, on that batch, the learner's gradient (the one an optimizer step would take,
before clipping) is computed:
  - with independent training noise and times, several times: how much the training noise moves it;
  - on two disjoint halves of the prompt groups: how much two sets of prompts agree on a direction.
A cosine near 1 means a coherent direction; near 0 means the step is dominated by what is
specific to the noise draw or to the prompts, and Adam turns it into a random walk.

    python benchmarks/gradient_coherence.py [--draws 4] [--seeds 0,1] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import itertools
import pathlib
import statistics
import tempfile

import torch

from common import append_results, table
from solrl.config import load_config
from solrl.local_run import LocalRun
from solrl.objectives.nft import group_advantages, optimality_probability, pick_train_times
from solrl.types import TrainBatch


def gradient(run: LocalRun, batch: TrainBatch, draw: int) -> torch.Tensor:
    """The flattened DiffusionNFT gradient of `batch` with training noise and times of `draw`."""
    trainer = run.trainer
    trainer.step_count = draw  # the noise and time draws are keyed by the step count
    r = optimality_probability(group_advantages(batch.rewards, batch.groups, trainer.nft.adv_eps), trainer.nft.adv_clip)
    times = pick_train_times(trainer.grid, trainer.nft.timestep_fraction, torch.Generator().manual_seed(draw))
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer._accumulate(batch, r, times, (torch.arange(len(batch)),), {})
    return torch.cat([p.grad.flatten() for p in trainer.model.trainable_parameters()]).clone()


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=4, help="independent training-noise draws per batch")
    parser.add_argument("--seeds", default="0,1", help="run seeds: each samples its own batch")
    parser.add_argument("--set", action="append", default=[], help="config overrides")
    args = parser.parse_args()
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        config = load_config(overrides=[*args.set, f"seed={seed}"])
        with tempfile.TemporaryDirectory() as out:
            run = LocalRun(config, pathlib.Path(out), log=lambda _: None)
            selections = run.choose(run.explorer.explore(run.groups(0)))
            batch = run.regenerator.regenerate(selections)
            draws = [gradient(run, batch, d) for d in range(args.draws)]
            halves = batch.split_by_group(2)
            a, b = gradient(run, halves[0], 1000), gradient(run, halves[1], 1001)
        noise = [cosine(x, y) for x, y in itertools.combinations(draws, 2)]
        mean = torch.stack(draws).mean(0)
        rows.append([
            seed, len(selections), len(batch), f"{statistics.mean(noise):.3f}", f"{cosine(a, b):+.3f}",
            f"{float(mean.norm() / draws[0].norm()):.2f}", f"{float(batch.rewards.std()):.3f}",
        ])
        print(rows[-1], flush=True)
    append_results(
        "DiffusionNFT gradient coherence on one shapes-run batch",
        table(["seed", "prompts", "samples", "cos, noise draws (mean)", "cos, prompt halves", "|mean of draws| / |one draw|",
               "BF16 reward std"], rows),
        f"the shipped base model, config overrides {args.set or 'none'}; gradients of the LoRA before clipping; "
        f"{args.draws} training-noise draws per batch; prompt halves = the batch's prompt groups split in two",
    )


if __name__ == "__main__":
    main()
