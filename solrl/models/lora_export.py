"""The trained LoRA in diffusers' own format: `pipe.load_lora_weights(dir)` loads it.

The adapter's alpha / rank scale is folded into lora_B, so the file needs no adapter metadata and
loads with diffusers' default alpha (= rank) in every diffusers version we support.
"""

from __future__ import annotations

import pathlib

import torch

from solrl.models.base import LoraSpec

# The pipeline whose LoRA loader reads each model kind's transformer adapter.
PIPELINES = {"shapes": "StableDiffusion3Pipeline", "sd3": "StableDiffusion3Pipeline", "flux": "FluxPipeline", "sana": "SanaPipeline"}
WEIGHT_NAME = "pytorch_lora_weights.safetensors"


def export_diffusers_lora(directory: str | pathlib.Path, state: dict[str, torch.Tensor], spec: LoraSpec, kind: str) -> pathlib.Path:
    """Write `state` (adapter_state keys) as a diffusers transformer LoRA; returns the file."""
    import diffusers

    if kind not in PIPELINES:
        raise ValueError(f"model kind {kind!r} has no diffusers LoRA format; choose one of {sorted(PIPELINES)}")
    layers = {k: (v * spec.scaling if ".lora_B." in k else v).contiguous() for k, v in state.items()}
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    getattr(diffusers, PIPELINES[kind]).save_lora_weights(directory, transformer_lora_layers=layers, weight_name=WEIGHT_NAME)
    return directory / WEIGHT_NAME
