"""The smallest distributed shapes run the cluster tests use: 3 prompts of 4 seeds, 2 explore
and 3 regeneration steps, rank-2 LoRA, workers reserving a quarter CPU each; and the rows a run
folder's metrics.jsonl holds."""

import json
import pathlib

TINY_RUN = [
    "model.lora={rank: 2, alpha: 4}",
    "rollout.prompts_per_iteration=3",
    "rollout.candidates=4",
    "rollout.explore.steps=2",
    "rollout.regenerate.steps=3",
    "selection.k=2",
    "eval.n=1",
    "eval.sampling.steps=2",
    "cluster.cpus_per_worker=0.25",
    "rollout.quant.fused=false",  # eager fake-quant: the same numbers, without compiling it in every worker
]


def rows_of(run: pathlib.Path) -> list[dict]:
    """A run folder's metrics rows, one per iteration."""
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
