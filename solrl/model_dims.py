"""The real models' dimensions that decide what moves between processes: latents, each text
encoder's conditioning, decoded images, the LoRA a config trains and the learner state around it;
and `cluster.stand_in`, the settings of the stand-in workers that carry them (solrl/standin/). A
leaf module: the config validates against it without importing the stand-ins.

Sources (diffusers 0.42 folders of each checkpoint):
- FLUX.1-dev: transformer/config.json (24 heads x 128 = 3072 wide, 19 double-stream and 38
  single-stream blocks, in_channels 64 = 16 latent channels packed 2x2, joint_attention_dim 4096,
  pooled_projection_dim 768); FluxPipeline.encode_prompt: T5-XXL states (512 tokens by default, 4096
  wide) and CLIP-L's pooled vector (768); VAE: 16 channels, 8x.
- SD3.5-Large: transformer/config.json (38 heads x 64 = 2432 wide, 38 joint blocks, the last one
  context_pre_only, so it has no to_add_out; joint_attention_dim 4096, pooled 2048);
  StableDiffusion3Pipeline.encode_prompt: CLIP-L + CLIP-G states (77 tokens, padded to 4096)
  followed by T5-XXL's (256 tokens by default), pooled CLIP-L + CLIP-G (768 + 1280); VAE: 16, 8x.
- SANA 1.6B 1024px: transformer/config.json (70 heads x 32 = 2240 wide, 20 blocks, each with
  self-attention attn1 and cross-attention attn2 of 20 heads x 112, caption_channels 2304);
  SanaPipeline.encode_prompt: Gemma-2-2B states (300 tokens by default after the complex human
  instruction is cut off, 2304 wide) and their attention mask (int64); DC-AE: 32 channels, 32x.
Parameter counts are PyTorch's count of each module (transformer, text encoders, autoencoder) built
from its checkpoint's config on the meta device; tests/test_standin.py rebuilds the transformers
and checks the adapted modules and the counts against this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# torch dtype names; "compute" is the sampler's compute dtype (bf16 on a GPU)
COMPUTE = "compute"


@dataclass(frozen=True)
class Linear:
    path: str  # module path inside the transformer, as peft names it
    fan_in: int
    fan_out: int


@dataclass(frozen=True)
class ModelDims:
    name: str  # the stand-in's name: flux1, sd35, sana
    kind: str  # the model.kind it stands in for
    latent_channels: int
    vae_factor: int
    latent_multiple: int  # latent sides must be a multiple of this (FLUX packs 2x2)
    default_resolution: int
    default_sequence_length: int
    # conditioning tensors per prompt: name -> (shape given the sequence length, dtype)
    conditioning: tuple[tuple[str, tuple[int | str, ...], str], ...]
    linears: tuple[Linear, ...]  # the attention projections LoRA may adapt
    params: dict[str, int]  # parameters by component (transformer, text encoders, autoencoder)
    transformer_class: str  # diffusers' class, built from `transformer_config` (the checkpoint's config.json)
    transformer_config: dict

    def latent_shape(self, resolution: int | None) -> tuple[int, int, int]:
        res = resolution or self.default_resolution
        multiple = self.vae_factor * self.latent_multiple
        if res % multiple:
            raise ValueError(f"model.resolution={res} must be a multiple of {multiple} for {self.name}; e.g. {res // multiple * multiple or multiple}")
        return (self.latent_channels, res // self.vae_factor, res // self.vae_factor)

    def image_shape(self, resolution: int | None) -> tuple[int, int, int]:
        res = resolution or self.default_resolution
        return (3, res, res)

    def conditioning_shapes(self, sequence_length: int | None) -> dict[str, tuple[tuple[int, ...], str]]:
        """name -> (shape of one prompt's tensor, dtype) of what the pipeline's encode_prompt returns."""
        length = sequence_length or self.default_sequence_length
        return {name: (tuple(_dim(d, length) for d in shape), dtype) for name, shape, dtype in self.conditioning}

    def adapted(self, targets: list[str]) -> list[Linear]:
        """The modules peft adapts for `target_modules` (a name equal to a target or ending in '.' + target)."""
        chosen = [m for m in self.linears if any(m.path == t or m.path.endswith("." + t) for t in targets)]
        if not chosen:
            known = sorted({m.path.split(".", 2)[-1] for m in self.linears})
            raise ValueError(f"model.lora.target_modules={targets} matches none of {self.name}'s attention projections {known}; target those")
        return chosen


def _dim(d: int | str, length: int) -> int:
    """A conditioning dimension: a number, "L" (the text sequence length) or "77+L"."""
    if isinstance(d, int):
        return d
    fixed, _, var = d.rpartition("+")
    return (int(fixed) if fixed else 0) + length


def _blocks(prefix: str, count: int, names: tuple[str, ...], width: int, skip_last: tuple[str, ...] = ()) -> list[Linear]:
    out = []
    for i in range(count):
        for name in names:
            if i == count - 1 and name in skip_last:
                continue
            out.append(Linear(f"{prefix}.{i}.{name}", width, width))
    return out


_JOINT = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out")
_SANA = tuple(f"{attn}.{m}" for attn in ("attn1", "attn2") for m in ("to_q", "to_k", "to_v", "to_out.0"))

MODELS: dict[str, ModelDims] = {
    "flux1": ModelDims(
        "flux1", "flux", 16, 8, 2, 1024, 512,
        (("encoder_hidden_states", ("L", 4096), COMPUTE), ("pooled_projections", (768,), COMPUTE)),
        tuple(_blocks("transformer_blocks", 19, _JOINT, 3072) + _blocks("single_transformer_blocks", 38, _JOINT[:3], 3072)),
        {"transformer": 11_901_408_320, "t5_xxl": 4_762_310_656, "clip_l": 123_060_480, "vae": 83_819_683},
        "FluxTransformer2DModel",
        {"attention_head_dim": 128, "guidance_embeds": True, "in_channels": 64, "joint_attention_dim": 4096, "num_attention_heads": 24,
         "num_layers": 19, "num_single_layers": 38, "patch_size": 1, "pooled_projection_dim": 768},
    ),
    "sd35": ModelDims(
        "sd35", "sd3", 16, 8, 1, 1024, 256,
        (("encoder_hidden_states", ("77+L", 4096), COMPUTE), ("pooled_projections", (2048,), COMPUTE)),
        tuple(_blocks("transformer_blocks", 38, _JOINT, 2432, skip_last=("attn.to_add_out",))),
        {"transformer": 8_056_627_520, "t5_xxl": 4_762_310_656, "clip_l": 123_650_304, "clip_g": 694_659_840, "vae": 83_819_683},
        "SD3Transformer2DModel",
        {"attention_head_dim": 64, "caption_projection_dim": 2432, "in_channels": 16, "joint_attention_dim": 4096, "num_attention_heads": 38,
         "num_layers": 38, "out_channels": 16, "patch_size": 2, "pooled_projection_dim": 2048, "pos_embed_max_size": 192,
         "qk_norm": "rms_norm", "sample_size": 128},
    ),
    "sana": ModelDims(
        "sana", "sana", 32, 32, 1, 1024, 300,
        (("encoder_hidden_states", ("L", 2304), COMPUTE), ("encoder_attention_mask", ("L",), "int64")),
        tuple(_blocks("transformer_blocks", 20, _SANA, 2240)),
        {"transformer": 1_604_462_752, "gemma2_2b": 2_614_341_888, "dc_ae": 312_250_275},
        "SanaTransformer2DModel",
        {"attention_bias": False, "attention_head_dim": 32, "caption_channels": 2304, "cross_attention_dim": 2240, "cross_attention_head_dim": 112,
         "in_channels": 32, "mlp_ratio": 2.5, "norm_elementwise_affine": False, "norm_eps": 1e-6, "num_attention_heads": 70,
         "num_cross_attention_heads": 20, "num_layers": 20, "out_channels": 32, "patch_size": 1, "sample_size": 32},
    ),
}


StandInModel = Literal["flux1", "sd35", "sana"]


class StandInConfig(BaseModel):
    """Which real model the stand-in workers carry the payloads of, and how their time is modeled."""

    model_config = ConfigDict(extra="forbid")
    model: StandInModel = Field(description="The model whose sizes the workers carry: flux1 (FLUX.1-dev), sd35 (SD3.5-Large), sana (SANA 1.6B).")
    gpu: Literal["b200", "h100", "h200"] = Field(default="b200", description="The GPU each worker models (solrl/standin/timing.py).")
    pools: dict[Literal["rollout", "regen", "reward", "learner"], Literal["b200", "h100", "h200"]] = Field(
        default_factory=dict, description="The GPU of a pool's workers where it is not `gpu` (a mixed fleet), e.g. {learner: h100}."
    )
    speedup: float = Field(default=1.0, gt=0, description="Modeled durations are divided by this, so a benchmark fits minutes.")
    jitter: float = Field(default=0.1, ge=0, lt=1, description="Each call's duration varies uniformly by up to this fraction.")
