"""Real-size tensors for stand-in workers: latents, conditioning, images, the LoRA weight update and
the learner state of a run config, in the real workers' shapes and dtypes (solrl/model_dims.py).

Contents are cheap fills (Ray copies bytes, whatever they hold); rewards are deterministic
functions of (prompt, seed), with the explore preview a noisy copy of the BF16 reward, so
selection, rank correlations and the candidate log behave as in a real run.
"""

from __future__ import annotations

import random

import torch

from solrl.model_dims import COMPUTE, MODELS, ModelDims
from solrl.models.base import Conditioning
from solrl.precision_control import rung_parts

PROXY_NOISE = 0.05  # spread of the NVFP4 explore preview's reward around the BF16 one
# a preview at a safer precision ranks better (rollout.precision_control's ladder)
NOISE_BY_PRECISION = {"nvfp4": PROXY_NOISE, "fp8_e4m3": PROXY_NOISE / 2, "bf16": PROXY_NOISE / 4, "fp32": 0.0}


def compute_dtype(config) -> torch.dtype:
    """The samplers' compute dtype on the modeled GPU: rollout.compute_dtype, 'auto' being bf16."""
    return torch.float32 if config.rollout.compute_dtype == "fp32" else torch.bfloat16


class Payloads:
    """Builds the tensors one run config's real workers would produce."""

    def __init__(self, config):
        self.dims: ModelDims = MODELS[config.cluster.stand_in.model]
        m = config.model
        self.latent = self.dims.latent_shape(m.resolution)
        self.image = self.dims.image_shape(m.resolution)
        compute = compute_dtype(config)
        self.cond = {k: (shape, compute if dtype == COMPUTE else getattr(torch, dtype)) for k, (shape, dtype) in self.dims.conditioning_shapes(m.max_sequence_length).items()}
        self.adapted = self.dims.adapted(m.lora.target_modules)
        self.rank = m.lora.rank
        self.adapter_bytes = 4 * self.rank * sum(a.fan_in + a.fan_out for a in self.adapted)  # fp32

    def latents(self, n: int) -> torch.Tensor:
        """Clean samples x0 as the samplers return them: fp32 (the solver's state)."""
        return torch.zeros((n, *self.latent), dtype=torch.float32)

    def images(self, n: int) -> torch.Tensor:
        """Decoded images: fp32 RGB in [0, 1]."""
        return torch.zeros((n, *self.image), dtype=torch.float32)

    def conditioning(self, n: int, dtype: torch.dtype | None = None) -> Conditioning:
        """n prompts' conditioning in the compute dtype (`dtype` overrides its floating tensors)."""
        return Conditioning({k: torch.zeros((n, *shape), dtype=dtype if dtype is not None and d.is_floating_point else d) for k, (shape, d) in self.cond.items()})

    def adapter(self, fill: float) -> dict[str, torch.Tensor]:
        """One LoRA adapter's fp32 state, keyed as DiffusersPolicy.adapter_state keys it."""
        out = {}
        for m in self.adapted:
            out[f"{m.path}.lora_A.weight"] = torch.full((self.rank, m.fan_in), fill)
            out[f"{m.path}.lora_B.weight"] = torch.full((m.fan_out, self.rank), fill)
        return out

    def learner_state(self, fill: float) -> dict[str, torch.Tensor]:
        """What LearnerRank.state returns: policy, old and EMA adapters and AdamW's moments and steps."""
        adapter = self.adapter(fill)
        out = {f"{prefix}.{k}": v.clone() for prefix in ("policy", "old", "ema") for k, v in adapter.items()}
        for k, v in adapter.items():
            out |= {f"optim.{k}.exp_avg": v.clone(), f"optim.{k}.exp_avg_sq": v.clone(), f"optim.{k}.step": torch.tensor(fill)}
        return out


class SmallPayloads(Payloads):
    """A virtual stand-in's tensors: one row per sample and one element each, for a scheduler run
    on the virtual clock that holds thousands of them in one process. Sizes that decide modeled
    times (`adapter_bytes`) stay the real ones."""

    def __init__(self, config):
        super().__init__(config)
        self.latent, self.image = (1,), (1,)
        self.cond = {k: ((1,), dtype) for k, (_, dtype) in self.cond.items()}
        self.adapted = self.adapted[:1]
        self.rank = 1


def reward(prompt: str, seed: int, proxy: bool = False, precision: str = "nvfp4") -> float:
    """A stand-in reward in [0, 1] of (prompt, seed); the preview's (at `precision`) is the BF16
    one plus noise."""
    rng = random.Random(f"{prompt}\0{seed}")
    value = rng.random()
    return value + NOISE_BY_PRECISION[rung_parts(precision)[0]] * rng.gauss(0.0, 1.0) if proxy else value
