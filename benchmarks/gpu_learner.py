"""The learner's real optimizer step at the real transformer sizes of SD3.5-Large and FLUX.1-dev
(random weights): seconds per step and per trained sample-time, and peak GPU memory against
`train.micro_batch`, from which the memory of one sample's saved activations follows (the slope).
It runs solrl's own NFTTrainer (reference, old and policy forwards, the DiffusionNFT loss, the
backward through the LoRA, AdamW, the old-policy and EMA updates), plainly and wrapped in FSDP2
the way a learner rank wraps it (a one-rank NCCL group here: the code path, not the scaling).

    python benchmarks/gpu_learner.py [--models sd35l flux1] [--micro-batches 1 2 4 8]
    python benchmarks/gpu_learner.py --tiny      # the same code path on a CPU, tiny sizes, no RESULTS entry
"""

from __future__ import annotations

import argparse
import gc
import os
import socket
import time

import torch
import torch.distributed as dist
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile
from common import append_results, with_json_lines
from gpu_rollout import MODELS, RandomPolicy, common_arguments, device_of

from solrl.config import OptimConfig
from solrl.learner.nft_trainer import NFTTrainer
from solrl.learner.rank import shard_model
from solrl.objectives.nft import NFTConfig
from solrl.types import TrainBatch

GROUP = 4  # samples per prompt group in the timed batch


def batch_of(policy: RandomPolicy, rows: int) -> TrainBatch:
    """`rows` clean samples on the CPU (as batches arrive from other processes), GROUP per prompt."""
    g = torch.Generator().manual_seed(2)
    groups = torch.arange(rows) // GROUP
    cond = policy.encode_prompts(["p"] * int(groups.max() + 1)).to("cpu")
    return TrainBatch(x0=torch.randn(rows, *policy.sample_shape, generator=g), cond=cond, rewards=torch.randn(rows, generator=g),
                      groups=groups, seeds=torch.arange(rows), cond_rows=groups)


def timed_steps(trainer: NFTTrainer, batch: TrainBatch, repeats: int, fsdp: bool) -> tuple[float, float, float, dict[str, float]]:
    """Median seconds of a step after one untimed step; the seconds a further step's GPU kernels
    ran (well under the step's seconds: the host, not the GPU, sets the pace); peak GB of the
    timed steps; the first step's stats."""
    cuda = torch.cuda.is_available()

    def step() -> dict[str, float]:
        return trainer.step_shard(batch.labels(), batch, 0, 1) if fsdp else trainer.step(batch)

    first = step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 1e9 if cuda else float("nan")
    busy = float("nan")
    if cuda:  # one more step under the profiler: the seconds its GPU kernels ran
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step()
            torch.cuda.synchronize()
        busy = sum(e.self_device_time_total for e in prof.key_averages() if e.device_type == DeviceType.CUDA) / 1e6
    return sorted(times)[len(times) // 2], busy, peak, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_arguments(parser)
    parser.add_argument("--rows", type=int, default=8, help="samples per optimizer step")
    parser.add_argument("--micro-batches", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--times", type=int, default=2, help="training times per sample (the method: 6 of a 10-step grid)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--fsdp-micro-batch", type=int, default=4, help="the micro-batch of the FSDP2 rows (0: none)")
    args = parser.parse_args()
    device, dtype, resolution = device_of(args)
    grid = 10
    nft = NFTConfig(timestep_fraction=args.times / grid)
    rows, points = [], []
    for name in args.models:
        # (micro-batch, wrap): FSDP2 as a learner rank wraps it, and with gathered weights kept until the backward
        arms = [(mb, "plain") for mb in args.micro_batches]
        arms += [(args.fsdp_micro_batch, w) for w in ("fsdp2", "fsdp2_keep")] if args.fsdp_micro_batch else []
        plain_first: dict[int, float] = {}
        for mb, wrap in arms:
            fsdp = wrap != "plain"
            policy = RandomPolicy(name, MODELS[name], resolution // 8, args.tiny, device, dtype)
            resident = torch.cuda.memory_allocated() / 1e9 if device.type == "cuda" else float("nan")
            label = {"plain": "plain", "fsdp2": "fsdp2, 1 rank", "fsdp2_keep": "fsdp2, 1 rank, no reshard after forward"}[wrap]
            try:
                if fsdp:
                    if not dist.is_initialized():
                        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
                        with socket.socket() as sock:  # a free port: another group may run on this machine
                            sock.bind(("127.0.0.1", 0))
                            os.environ.setdefault("MASTER_PORT", str(sock.getsockname()[1]))
                        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)
                    shard_model(policy.transformer, reshard_after_forward=wrap == "fsdp2")
                trainer = NFTTrainer(policy, nft, OptimConfig(), train_steps=grid, seed=0, micro_batch=mb)
                if fsdp:
                    trainer.gradient_sync = policy.transformer.set_requires_gradient_sync
                batch = batch_of(policy, args.rows)
                seconds, busy, peak, first = timed_steps(trainer, batch, args.repeats, fsdp)
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                rows.append([name, label, mb, "-", "-", "-", "-", f"{resident:.1f}", f"failed: {type(exc).__name__} {str(exc)[:80]}"])
                print(rows[-1], flush=True)
                del policy
                gc.collect()
                torch.cuda.empty_cache() if device.type == "cuda" else None
                continue
            sample_times = args.rows * args.times
            note = f"first loss {first['loss']:.6g}"
            if fsdp and mb in plain_first:
                note += f" (plain: {plain_first[mb]:.6g})"
            if not fsdp:
                plain_first[mb] = first["loss"]
            rows.append([name, label, mb, f"{seconds:.2f}", f"{busy:.2f}", f"{seconds / sample_times:.4f}", f"{peak:.1f}", f"{resident:.1f}", note])
            points.append({"model": name, "wrap": wrap, "micro_batch": mb, "rows": args.rows, "times": args.times,
                           "step_seconds": seconds, "gpu_kernel_seconds": busy, "seconds_per_sample_time": seconds / sample_times, "peak_gb": peak,
                           "resident_gb": resident, "first_loss": first["loss"], "resolution": resolution})
            print(rows[-1], flush=True)
            del policy, trainer, batch
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        plain = sorted((p["micro_batch"], p["peak_gb"]) for p in points if p["model"] == name and p["wrap"] == "plain")
        if len(plain) >= 2:
            (m0, g0), (m1, g1) = plain[0], plain[-1]
            rows.append([name, "activation GB a sample (peak slope)", f"{m0}-{m1}", "-", "-", "-", f"{(g1 - g0) / (m1 - m0):.2f}", "-", ""])
            points.append({"model": name, "activation_gb_per_sample": (g1 - g0) / (m1 - m0), "resolution": resolution})
    if dist.is_initialized():
        dist.destroy_process_group()
    headers = ["model", "wrap", "micro_batch", "step s", "GPU kernel s", "s per sample-time", "peak GB", "resident GB before", "note"]
    body = with_json_lines(headers, rows, points)
    if args.tiny:
        print(body)
        return
    append_results(
        f"Learner step at real transformer sizes, {resolution} px, {args.rows} samples x {args.times} times a step (random weights)",
        body,
        "solrl's NFTTrainer (ref + old forwards without gradient, policy forward and backward through LoRA r=32, AdamW, EMA); "
        "no gradient checkpointing; peak = torch.cuda.max_memory_allocated over the timed steps; resident = allocated after building "
        "the transformer with its LoRA; s per sample-time = step s / (samples x times)",
    )


if __name__ == "__main__":
    main()
