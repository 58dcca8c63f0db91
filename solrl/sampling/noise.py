"""Seed -> initial noise. Drawn on the CPU in fp32 from the seed alone, so it is the same on any
device, at any batch size and any position in the batch."""

from __future__ import annotations

from collections.abc import Sequence

import torch

SEED_MAX = 2**63 - 1


def seed_noise(seed: int, shape: Sequence[int]) -> torch.Tensor:
    """Standard normal noise of `shape` (one sample, no batch dim) from `seed`, fp32 on the CPU."""
    if not 0 <= int(seed) <= SEED_MAX:
        raise ValueError(f"seed {seed} is out of range; seeds are integers in [0, 2**63 - 1]")
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32)


def batch_noise(
    seeds: Sequence[int], shape: Sequence[int], device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Stack seed_noise for each seed and move it to `device` / `dtype` afterwards."""
    noise = torch.stack([seed_noise(s, shape) for s in seeds]) if len(seeds) else torch.empty(0, *shape)
    return noise.to(device=device, dtype=dtype)


def derive_seeds(run_seed: int, iteration: int, prompt_id: int, n: int) -> list[int]:
    """The n seeds of one prompt group, a pure function of (run seed, iteration, prompt id)."""
    generator = torch.Generator().manual_seed(hash_ints(run_seed, iteration, prompt_id))
    return torch.randint(0, 2**62, (n,), generator=generator, dtype=torch.int64).tolist()


def hash_ints(*values: int) -> int:
    """A stable 63-bit hash of integers (Python's hash() is salted per process for str, not int,
    but this one is spelled out so every worker and language agrees)."""
    h = 0xCBF29CE484222325
    for v in values:
        for byte in int(v).to_bytes(8, "little", signed=True):
            h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h & SEED_MAX
