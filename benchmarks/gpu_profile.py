"""Where the time of one explore call goes, per backend: torch.profiler's kernel table for a
one-step sample of the real-size transformer in BF16 and in each low-precision setting
gpu_rollout.py measures, to see why a backend is slower than BF16 (quantizing activations,
layout copies, unfused scales). Prints the tables; appends nothing (the figures are
gpu_rollout.py's).

    python benchmarks/gpu_profile.py [--models sd35l] [--rows 15]
    python benchmarks/gpu_profile.py --tiny
"""

from __future__ import annotations

import argparse

import torch
from gpu_rollout import MODELS, RandomPolicy, common_arguments, device_of, settings
from torch.profiler import ProfilerActivity, profile

from solrl.models.base import OLD
from solrl.quant.linear import QuantRecipe
from solrl.sampling import SamplingConfig, sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_arguments(parser, models=["sd35l"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rows", type=int, default=15, help="kernels shown per table")
    args = parser.parse_args()
    device, dtype, resolution = device_of(args)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    for name in args.models:
        policy = RandomPolicy(name, MODELS[name], resolution // 8, args.tiny, device, dtype)
        cond = policy.encode_prompts(["p"] * args.batch)
        seeds = list(range(args.batch))
        for precision, backend in settings(device):
            recipe = QuantRecipe(format=precision if precision != "bf16" else "nvfp4", backend=backend if backend != "-" else "emulated")
            try:
                sampler = policy.inference_copy(precision, adapter=OLD, quant=recipe)
                sample(sampler, cond, seeds, SamplingConfig(steps=1))  # warm up
                with profile(activities=activities) as prof:
                    sample(sampler, cond, seeds, SamplingConfig(steps=1))
                    if device.type == "cuda":
                        torch.cuda.synchronize()
            except Exception as exc:  # report and go on to the next backend
                print(f"== {name} {precision} {backend}: failed: {type(exc).__name__} {str(exc)[:200]}", flush=True)
                continue
            # the table ends with the call's self CPU and CUDA totals: CPU above CUDA means launch-bound
            print(f"\n== {name} {precision} {backend}, one sampler call of {args.batch}", flush=True)
            print(prof.key_averages().table(sort_by=key, row_limit=args.rows, max_name_column_width=70), flush=True)
            del sampler
            if device.type == "cuda":
                torch.cuda.empty_cache()
        del policy


if __name__ == "__main__":
    main()
