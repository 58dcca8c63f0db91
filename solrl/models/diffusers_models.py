"""PolicyModels over real diffusers text-to-image pipelines: SD3.5 (medium, large), FLUX.1-dev and
SANA, loaded offline from a local diffusers folder (model_index.json + component folders).

Each policy trains LoRA on the pipeline's transformer and samples in its latent space. Prompt
conditioning comes from the pipeline's own `encode_prompt` (its text encoders, tokenizers and
sequence lengths), computed once per prompt and cached: a run revisits the same prompts every
epoch, and the text encoders (T5-XXL, Gemma-2) cost more than a transformer step. Rewards see the
VAE-decoded images in [0, 1].

Sample space: the unpacked latent (C, H / f, W / f), noise drawn per seed in that shape as the
pipelines draw it. Flow convention as everywhere in solrl: x_t = (1 - t) x0 + t eps, v = eps - x0,
which is what these flow-matching transformers predict.
"""

from __future__ import annotations

import inspect
import pathlib
import warnings
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from solrl.models.base import Conditioning, LoraSpec
from solrl.models.lora_policy import DiffusersPolicy
from solrl.models.sd3_pixel import sd3_forward


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA (what these checkpoints ship in), fp32 on CPU (no fast bf16 units there)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def flux_forward(transformer: nn.Module, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning, guidance: float) -> torch.Tensor:
    """Velocity of a FluxTransformer2DModel on unpacked latents (B, C, H, W): pack into 2x2
    patches with their position ids, run at flow time t in [0, 1], unpack."""
    from diffusers import FluxPipeline

    b, c, h, w = x_t.shape
    packed = FluxPipeline._pack_latents(x_t, b, c, h, w)
    img_ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, x_t.device, x_t.dtype)
    txt_ids = torch.zeros(cond["encoder_hidden_states"].shape[1], 3, device=x_t.device, dtype=x_t.dtype)
    g = torch.full((b,), guidance, device=x_t.device, dtype=torch.float32) if transformer.config.guidance_embeds else None
    out = transformer(
        hidden_states=packed,
        timestep=t.to(x_t.dtype),  # the pipeline passes sigma * 1000 / 1000
        guidance=g,
        pooled_projections=cond["pooled_projections"],
        encoder_hidden_states=cond["encoder_hidden_states"],
        txt_ids=txt_ids,
        img_ids=img_ids,
    ).sample
    # _unpack_latents takes pixel sizes and a VAE factor; factor 1 with latent sizes is the same
    return FluxPipeline._unpack_latents(out, h, w, 1)


class PipelinePolicy(DiffusersPolicy):
    """A DiffusersPolicy over a diffusers pipeline; subclasses name the pipeline class and implement
    `_encode` and `_forward`."""

    pipeline_class: ClassVar[str]
    kind: ClassVar[str]

    def __init__(self, pipe, lora: LoraSpec | None = None, resolution: int | None = None, max_sequence_length: int | None = None):
        super().__init__()
        self.transformer = pipe.transformer
        self.vae = pipe.vae
        # Text encoders are frozen submodules (so .to() moves them); the pipeline object itself is
        # borrowed for encode_prompt, not registered.
        self.text_encoders = nn.ModuleList([m for name, m in pipe.components.items() if name.startswith("text_encoder") and m is not None])
        object.__setattr__(self, "pipe", pipe)
        for module in (self.vae, *self.text_encoders, self.transformer):
            module.requires_grad_(False).eval()
        self.scale = pipe.vae_scale_factor
        self.resolution = resolution or self.default_resolution(pipe)
        multiple = self.scale * self.latent_multiple
        if self.resolution % multiple:
            raise ValueError(f"model.resolution={self.resolution} must be a multiple of {multiple} for {self.kind}; e.g. {self.resolution // multiple * multiple or multiple}")
        side = self.resolution // self.scale
        self.sample_shape = (self.latent_channels(), side, side)
        self.max_sequence_length = max_sequence_length or self.default_sequence_length()
        self._cache: dict[str, Conditioning] = {}
        if lora is not None:
            self.attach_lora(lora)

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path: str | pathlib.Path,
        lora: LoraSpec | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        **options,
    ) -> PipelinePolicy:
        """Load a local diffusers folder offline; `options` are the subclass's (resolution, ...)."""
        import diffusers

        path = pathlib.Path(path)
        if not (path / "model_index.json").is_file():
            raise FileNotFoundError(
                f"model.path={str(path)!r} is not a diffusers pipeline folder (no model_index.json); "
                f"point it at a local copy of the {cls.kind} checkpoint"
            )
        device = torch.device(device)
        with warnings.catch_warnings():
            # Newer diffusers renamed torch_dtype to dtype; the old name works everywhere we support.
            warnings.filterwarnings("ignore", message=".*use `dtype` instead")
            pipe = getattr(diffusers, cls.pipeline_class).from_pretrained(path, torch_dtype=dtype or default_dtype(device), local_files_only=True)
        policy = cls(pipe, lora=lora, **options)
        return policy.to(device)

    def default_resolution(self, pipe) -> int:
        size = getattr(pipe, "default_sample_size", None) or pipe.transformer.config.sample_size
        return int(size) * pipe.vae_scale_factor

    latent_multiple: ClassVar[int] = 1  # latent sides must be a multiple of this (FLUX packs 2x2)

    def latent_channels(self) -> int:
        return self.transformer.config.in_channels

    def default_sequence_length(self) -> int:
        return inspect.signature(self.pipe.encode_prompt).parameters["max_sequence_length"].default

    # -- conditioning --------------------------------------------------------------------------
    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        """Conditioning per prompt, from the cache when the prompt was seen before."""
        missing = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        if missing:
            with torch.no_grad():
                cond = self._encode(missing)
            for i, prompt in enumerate(missing):
                self._cache[prompt] = cond.select([i]).to("cpu")
        return Conditioning.cat([self._cache[p] for p in prompts]).to(self.device)

    def _encode(self, prompts: list[str]) -> Conditioning:
        raise NotImplementedError

    # -- decoding ------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Latents -> RGB in [0, 1] through the pipeline's VAE and its scaling / shift."""
        cfg = self.vae.config
        latents = x0.to(self.device, self.vae.dtype) / cfg.scaling_factor + (getattr(cfg, "shift_factor", None) or 0.0)
        images = self.vae.decode(latents).sample
        return ((images.float() + 1.0) / 2.0).clamp(0.0, 1.0).cpu()


class SD3Policy(PipelinePolicy):
    """Stable Diffusion 3 / 3.5 (medium, large): CLIP-L + CLIP-G + T5-XXL, 16-channel VAE."""

    pipeline_class = "StableDiffusion3Pipeline"
    kind = "sd3"
    # docs/method.md's layer rules: embedders, adaptive-norm modulation and the final layer stay high precision.
    quant_skip_patterns = ("pos_embed*", "time_text_embed*", "context_embedder", "*norm*", "proj_out")

    def _encode(self, prompts: list[str]) -> Conditioning:
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            prompt=prompts, prompt_2=None, prompt_3=None, device=self.device,
            do_classifier_free_guidance=False, max_sequence_length=self.max_sequence_length,
        )
        return Conditioning({"encoder_hidden_states": embeds, "pooled_projections": pooled})

    def _forward(self, transformer: nn.Module, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        return sd3_forward(transformer, x_t, t, cond)


class FluxPolicy(PipelinePolicy):
    """FLUX.1-dev: CLIP-L pooled + T5-XXL, 16-channel VAE, latents packed into 2x2 patches, and a
    distilled-guidance input (not classifier-free guidance: one forward pass per step)."""

    pipeline_class = "FluxPipeline"
    kind = "flux"
    latent_multiple = 2
    quant_skip_patterns = ("x_embedder", "context_embedder", "time_text_embed*", "*norm*", "proj_out")

    def __init__(self, pipe, lora: LoraSpec | None = None, resolution: int | None = None, max_sequence_length: int | None = None, guidance: float = 3.5):
        self.guidance = guidance
        super().__init__(pipe, lora, resolution, max_sequence_length)

    def latent_channels(self) -> int:
        return self.transformer.config.in_channels // 4

    def _encode(self, prompts: list[str]) -> Conditioning:
        embeds, pooled, _ = self.pipe.encode_prompt(prompt=prompts, prompt_2=None, device=self.device, max_sequence_length=self.max_sequence_length)
        return Conditioning({"encoder_hidden_states": embeds, "pooled_projections": pooled})

    def _forward(self, transformer: nn.Module, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        return flux_forward(transformer, x_t, t, cond, self.guidance)


class SanaPolicy(PipelinePolicy):
    """SANA: Gemma-2 text encoder with the pipeline's complex human instruction, a deep-compression
    autoencoder (32x), linear-attention DiT."""

    pipeline_class = "SanaPipeline"
    kind = "sana"
    quant_skip_patterns = ("patch_embed*", "time_embed*", "caption_projection*", "*norm*", "proj_out")

    def __init__(self, pipe, lora: LoraSpec | None = None, resolution: int | None = None, max_sequence_length: int | None = None, complex_human_instruction: bool = True):
        # The instruction SanaPipeline prepends by default when it generates, read from the pipeline.
        default = inspect.signature(type(pipe).__call__).parameters["complex_human_instruction"].default
        self.instruction = list(default) if complex_human_instruction else None
        super().__init__(pipe, lora, resolution, max_sequence_length)

    def _encode(self, prompts: list[str]) -> Conditioning:
        embeds, mask, _, _ = self.pipe.encode_prompt(
            prompts, do_classifier_free_guidance=False, device=self.device,
            max_sequence_length=self.max_sequence_length, complex_human_instruction=self.instruction,
        )
        return Conditioning({"encoder_hidden_states": embeds, "encoder_attention_mask": mask})

    def _forward(self, transformer: nn.Module, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        scale = getattr(transformer.config, "timestep_scale", 1.0)
        return transformer(
            x_t,
            encoder_hidden_states=cond["encoder_hidden_states"],
            encoder_attention_mask=cond["encoder_attention_mask"],
            timestep=t.to(x_t.dtype) * 1000.0 * scale,
        ).sample


POLICIES: dict[str, type[PipelinePolicy]] = {"sd3": SD3Policy, "flux": FluxPolicy, "sana": SanaPolicy}
