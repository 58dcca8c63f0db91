"""How well the low-precision few-step preview ranks seeds, per quantization rule: the paper's
Table 8 on our model, and the cost of each rule's explore.

For each eval prompt, N seeds are sampled twice from the same initial noise: by the explore copy
(NVFP4 under a skip rule, few steps) and by the regeneration copy (BF16, full steps), and both
images are scored by the main job's reward (shapes.yaml). Per prompt we compare the two rankings,
then average over prompts:

- Kendall tau-b and Spearman rho between proxy and BF16 rewards;
- top-k match: share of the BF16 top-k seeds that are also in the proxy's top-k;
- bottom-k false inclusion: share of the proxy's top-k that are in the BF16 bottom-k (seeds
  best_worst would train as good that are among the worst), k = a quarter of N.

Rules (each adds to the model's own skip list: embedders, norms, final layer): `all` quantizes
every other GEMM; `mlp` only the MLPs of both streams; `image_mlp` only the image stream's MLP
(the reference's SD3.5-L rule); `attention` only attention projections; `fp8` is `mlp` in FP8
(the explore controller's middle rung); `none` explores in BF16, which isolates the step-count gap.
Explore cost is seconds per preview image on this machine, and its ratio to an fp32 preview.

With --run, the policy is that trained run's (its lora/last adapter, `old` by default: what its
rollout sampled from at the end) and the reward is the run's: how well previews rank seeds on a
policy that has trained for a while (a drifted one, for instance), which is what the explore
controller's audit measures on random seeds.

    python benchmarks/fidelity.py [--n 32] [--prompts eval] [--rules all mlp image_mlp attention fp8 none]
        [--explore-steps 6] [--regen-steps 10] [--solver euler] [--run RUN [--adapter old|policy|ema]]
"""

from __future__ import annotations

import argparse
import pathlib
import time

import numpy as np
import torch

from common import append_results, table
from solrl.config import load_config
from solrl.models.shapes import ShapesModel
from solrl.quant.linear import QuantRecipe, SkipRules
from solrl.rewards.registry import build_reward
from solrl.sampling import SamplingConfig, derive_seeds, sample
from safetensors.torch import load_file

from solrl.stats import kendall, spearman, top_k_overlap
from solrl.toy.captions import load_prompts

RULES = {
    "all": [],
    "mlp": ["*.attn.*"],
    "image_mlp": ["*.attn.*", "*.ff_context.*"],
    "attention": ["*.ff.*", "*.ff_context.*"],
}


def explore_model(policy: ShapesModel, rule: str, adapter: dict | None = None):
    if rule == "none":
        model = policy.inference_copy("bf16", adapter=None)
    else:
        recipe = QuantRecipe(skip=SkipRules(name_patterns=[*policy.quant_skip_patterns, *RULES["mlp" if rule == "fp8" else rule]]))
        model = policy.inference_copy("fp8_e4m3" if rule == "fp8" else "nvfp4", adapter=None, quant=recipe)
    if adapter is not None:
        model.update_adapter(adapter)
    return model


def rewards_for(model, prompts: list[str], seeds: list[list[int]], sampling: SamplingConfig, reward) -> tuple[np.ndarray, float]:
    """(rewards per prompt x seed, seconds spent sampling)."""
    out, seconds = [], 0.0
    for prompt, s in zip(prompts, seeds):
        with torch.no_grad():
            start = time.perf_counter()
            images = model.decode(sample(model, model.encode_prompts([prompt] * len(s)), s, sampling))
            seconds += time.perf_counter() - start
        out.append(reward(images, [prompt] * len(s)).numpy())
    return np.stack(out), seconds


def agreement(proxy: np.ndarray, truth: np.ndarray) -> dict[str, tuple[float, float]]:
    """Each statistic's mean over prompts and its standard error."""
    k = max(1, proxy.shape[1] // 4)
    rows = []
    for p, t in zip(proxy, truth):
        rows.append([
            kendall(p, t), spearman(p, t), top_k_overlap(p, t, 4), top_k_overlap(p, t, k),
            len(set(np.argsort(-p, kind="stable")[:k]) & set(np.argsort(t, kind="stable")[:k])) / k,
        ])
    values = np.asarray(rows, dtype=float)
    counts = np.sum(~np.isnan(values), axis=0)
    se = np.nanstd(values, axis=0, ddof=1) / np.sqrt(counts)
    return dict(zip(["kendall", "spearman", "top4", "topk", "false_incl"], zip(np.nanmean(values, axis=0), se)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--prompts", default="eval")
    parser.add_argument("--rules", nargs="+", default=["all", "mlp", "image_mlp", "attention", "none"], choices=[*RULES, "fp8", "none"])
    parser.add_argument("--explore-steps", type=int, default=6)
    parser.add_argument("--regen-steps", type=int, default=10)
    parser.add_argument("--solver", default="euler", choices=["euler", "dpm2"])
    parser.add_argument("--model", help="ShapesModel folder (default: shipped weights)")
    parser.add_argument("--run", type=pathlib.Path, help="a trained shapes run (solrl train --out): its last adapter and its reward")
    parser.add_argument("--adapter", default="old", choices=["old", "policy", "ema"], help="which of --run's last adapters")
    args = parser.parse_args()
    config = load_config(args.run / "config.yaml" if args.run else None)
    reward = build_reward(config.reward)
    policy = ShapesModel.from_pretrained(args.model, lora=config.model.lora if args.run else None)
    adapter = load_file(args.run / "lora" / "last" / f"{args.adapter}.safetensors") if args.run else None
    prompts = load_prompts(args.prompts)
    seeds = [derive_seeds(0, 0, i, args.n) for i in range(len(prompts))]
    explore = SamplingConfig(steps=args.explore_steps, solver=args.solver)
    regen = SamplingConfig(steps=args.regen_steps, solver=args.solver)
    regen_model = explore_model(policy, "none", adapter)
    rewards_for(regen_model, prompts[:1], [seeds[0][:2]], regen, reward)
    truth, _ = rewards_for(regen_model, prompts, seeds, regen, reward)
    fp32_model = policy.inference_copy("fp32", adapter=None)
    if adapter is not None:
        fp32_model.update_adapter(adapter)
    _, fp32_seconds = rewards_for(fp32_model, prompts, seeds, explore, reward)
    images = len(prompts) * args.n
    rows = []
    for rule in args.rules:
        model = explore_model(policy, rule, adapter)
        rewards_for(model, prompts[:1], [seeds[0][:2]], explore, reward)  # compile the fused fake-quant before timing
        proxy, seconds = rewards_for(model, prompts, seeds, explore, reward)
        quantized = len(model.quant_report.quantized) if rule != "none" else 0
        a = agreement(proxy, truth)
        rows.append([
            rule, quantized, *(f"{a[k][0]:.3f} ± {a[k][1]:.3f}" for k in ("kendall", "spearman", "top4", "topk", "false_incl")),
            f"{1e3 * seconds / images:.1f}", f"{seconds / fp32_seconds:.2f}",
        ])
    rows.append(["paper (SD3.5/FLUX, Table 8)", "-", "0.798", "0.927", "0.969", "-", "-", "-", "-"])
    k = max(1, args.n // 4)
    headers = ["rule", "GEMMs in NVFP4", "Kendall tau", "Spearman rho", "top-4 match", f"top-{k} match", f"bottom-{k} false incl.",
               "explore ms/image", "x fp32 explore"]
    append_results(
        f"Proxy fidelity per quantization rule: {args.explore_steps}-step explore vs BF16 {args.regen_steps}-step, {args.solver}, "
        f"N={args.n}, {len(prompts)} {args.prompts} prompts, reward {getattr(reward, 'name', '?')}"
        + (f", policy: {args.run}'s last {args.adapter} adapter" if args.run else ""),
        table(headers, rows),
        f"per-prompt statistics averaged over prompts (± their standard error over prompts); explore cost is sampling time only (fp32 preview: {1e3 * fp32_seconds / images:.1f} ms/image)",
    )


if __name__ == "__main__":
    main()
