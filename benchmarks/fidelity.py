"""How well the NVFP4 few-step preview ranks seeds: the paper's Table 8 on our model.

For each eval prompt, N seeds are sampled twice from the same initial noise: by an NVFP4 copy in
few steps (explore) and by a BF16 copy in full steps (regenerate), and both images are scored by
the shapes reward. Per prompt we compare the two rankings, then average over prompts:

- Kendall tau-b and Spearman rho between proxy and BF16 rewards;
- top-k match: share of the BF16 top-k seeds that are also in the proxy's top-k;
- bottom-12 false inclusion: share of the proxy's top-12 that are in the BF16 bottom-12
  (seeds best_worst would train as good that are among the worst).

    python benchmarks/fidelity.py [--n 96] [--prompts eval] [--explore-steps 6] [--regen-steps 10]
        [--explore-precision nvfp4] [--regen-precision bf16]
"""

from __future__ import annotations

import argparse

import numpy as np

from common import append_results, table
from solrl.models.shapes import ShapesModel
from solrl.rewards.shapes import ShapesReward
from solrl.sampling import SamplingConfig, derive_seeds, sample
from solrl.stats import kendall, spearman, top_k_overlap
from solrl.toy.captions import load_prompts, parse_caption


def rewards_for(model, prompt: str, seeds: list[int], sampling: SamplingConfig, reward) -> np.ndarray:
    cond = model.encode_prompts([prompt] * len(seeds))
    images = model.decode(sample(model, cond, seeds, sampling))
    return reward(images, [prompt] * len(seeds)).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=96)
    parser.add_argument("--prompts", default="eval")
    parser.add_argument("--explore-steps", type=int, default=6)
    parser.add_argument("--regen-steps", type=int, default=10)
    parser.add_argument("--solver", default="euler", choices=["euler", "dpm2"])
    parser.add_argument("--explore-precision", default="nvfp4", choices=["fp32", "bf16", "nvfp4", "fp8_e4m3"])
    parser.add_argument("--regen-precision", default="bf16", choices=["fp32", "bf16", "nvfp4", "fp8_e4m3"])
    parser.add_argument("--model", help="ShapesModel folder (default: shipped weights)")
    args = parser.parse_args()
    policy = ShapesModel.from_pretrained(args.model)
    proxy_model = policy.inference_copy(args.explore_precision, adapter=None)
    bf16_model = policy.inference_copy(args.regen_precision, adapter=None)
    reward = ShapesReward()
    explore = SamplingConfig(steps=args.explore_steps, solver=args.solver)
    regen = SamplingConfig(steps=args.regen_steps, solver=args.solver)
    prompts = load_prompts(args.prompts)
    per_prompt = []
    for i, prompt in enumerate(prompts):
        seeds = derive_seeds(0, 0, i, args.n)
        proxy = rewards_for(proxy_model, prompt, seeds, explore, reward)
        truth = rewards_for(bf16_model, prompt, seeds, regen, reward)
        per_prompt.append(
            {
                "task": parse_caption(prompt).task,
                "kendall": kendall(proxy, truth),
                "spearman": spearman(proxy, truth),
                "top4": top_k_overlap(proxy, truth, 4),
                "top12": top_k_overlap(proxy, truth, 12),
                "false_incl": len(set(np.argsort(-proxy, kind="stable")[:12]) & set(np.argsort(truth, kind="stable")[:12])) / 12,
                "exact": float(np.mean(proxy == truth)),
            }
        )
    keys = ["kendall", "spearman", "top4", "top12", "false_incl", "exact"]

    def summary(rows):
        return [f"{np.nanmean([r[k] for r in rows]):.3f}" for k in keys]

    rows = [["all", len(per_prompt), *summary(per_prompt)]]
    for task in sorted({r["task"] for r in per_prompt}):
        sub = [r for r in per_prompt if r["task"] == task]
        rows.append([task, len(sub), *summary(sub)])
    rows.append(["paper (SD3.5/FLUX, Table 8)", "-", "0.798", "0.927", "0.969", "-", "-", "-"])
    headers = ["prompts", "count", "Kendall tau", "Spearman rho", "top-4 match", "top-12 match", "bottom-12 false incl.", "same reward"]
    append_results(
        f"Proxy fidelity: {args.explore_precision} {args.explore_steps}-step vs {args.regen_precision} "
        f"{args.regen_steps}-step rewards, N={args.n}",
        table(headers, rows),
        "per-prompt statistics averaged over prompts (NaN where a prompt's rewards are all equal is skipped); "
        "the shapes reward takes few distinct values, so ties are common",
    )


if __name__ == "__main__":
    main()
