"""Rollout throughput at the real transformer sizes of SD3.5-Large and FLUX.1-dev (random weights):
images/s of a 6-step explore in bf16, fp8 and NVFP4, and the seconds to merge a LoRA update into
the sampler's copy and re-quantize it, and the seconds of one trained sample-time as the learner
runs it (reference and old forwards without gradient, the policy's forward and backward through
its LoRA), which set against the stand-in stage table's modeled seconds. Transformer only: conditioning is random (text encoders
run once per prompt and are cached) and the VAE decode is left out.

    python benchmarks/gpu_rollout.py [--resolution 512] [--batch 8] [--steps 6] [--models sd35l flux1]
    python benchmarks/gpu_rollout.py --tiny      # the same code path on a CPU, tiny sizes, no RESULTS entry

Backends: bf16 runs the merged copy in bf16; fp8_e4m3 uses torchao's FP8 GEMMs on compute
capability >= 8.9 (emulated otherwise); nvfp4 runs the emulated backend everywhere and, on
Blackwell (>= 10.0), torchao's real FP4 GEMMs as a second row.
"""

from __future__ import annotations

import argparse
import gc

import torch
from common import append_results, median_seconds, with_json_lines

from solrl.models.base import OLD, POLICY, Conditioning, LoraSpec
from solrl.models.diffusers_models import flux_forward
from solrl.models.lora_policy import DiffusersPolicy
from solrl.models.sd3_pixel import sd3_forward
from solrl.quant.linear import QuantRecipe, requantize_model
from solrl.sampling import SamplingConfig, sample

ATTENTION = ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out"]
# The published transformer configs (diffusers' transformer/config.json of each checkpoint).
MODELS = {
    "sd35l": {
        "cls": "SD3Transformer2DModel",
        "config": dict(sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=38, attention_head_dim=64,
                       num_attention_heads=38, joint_attention_dim=4096, caption_projection_dim=2432, pooled_projection_dim=2048,
                       pos_embed_max_size=192, qk_norm="rms_norm"),
        "tiny": dict(sample_size=16, patch_size=2, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=16,
                     num_attention_heads=2, joint_attention_dim=64, caption_projection_dim=32, pooled_projection_dim=32,
                     pos_embed_max_size=32, qk_norm="rms_norm"),
        "channels": 16, "text_tokens": 333, "skip": ["pos_embed*", "time_text_embed*", "context_embedder", "*norm*", "proj_out"],
    },
    "flux1": {
        "cls": "FluxTransformer2DModel",
        "config": dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128, num_attention_heads=24,
                       joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56)),
        "tiny": dict(patch_size=1, in_channels=64, num_layers=1, num_single_layers=2, attention_head_dim=16, num_attention_heads=2,
                     joint_attention_dim=64, pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 6, 6)),
        "channels": 16, "text_tokens": 512, "skip": ["x_embedder", "context_embedder", "time_text_embed*", "*norm*", "proj_out"],
    },
}


class RandomPolicy(DiffusersPolicy):
    """A transformer with LoRA and random conditioning: the sampler's view of a real model."""

    def __init__(self, name: str, spec: dict, latent: int, tiny: bool, device: torch.device, dtype: torch.dtype):
        super().__init__()
        import diffusers

        torch.manual_seed(0)
        config = spec["tiny" if tiny else "config"]
        with torch.device(device):
            # nn.Module.to: diffusers' own .to() warns about fp32-pinned modules these models lack
            self.transformer = torch.nn.Module.to(getattr(diffusers, spec["cls"])(**config), dtype)
        self.name, self.spec, self.sample_shape = name, spec, (spec["channels"], latent, latent)
        self.quant_skip_patterns = tuple(spec["skip"])
        self.text_dim = config["joint_attention_dim"]
        self.pooled_dim = config["pooled_projection_dim"]
        self.attach_lora(LoraSpec(rank=32, alpha=64, target_modules=ATTENTION))

    def encode_prompts(self, prompts):
        g = torch.Generator().manual_seed(len(prompts))
        tokens = 16 if self.text_dim == 64 else self.spec["text_tokens"]
        return Conditioning({
            "encoder_hidden_states": torch.randn(len(prompts), tokens, self.text_dim, generator=g),
            "pooled_projections": torch.randn(len(prompts), self.pooled_dim, generator=g),
        }).to(self.device)

    def _forward(self, transformer, x_t, t, cond):
        return sd3_forward(transformer, x_t, t, cond) if self.name == "sd35l" else flux_forward(transformer, x_t, t, cond, 3.5)

    def decode(self, x0):
        return x0


def train_seconds(policy: RandomPolicy, batch: int, repeats: int) -> float:
    """Seconds per sample of one trained sample-time: what NFTTrainer runs for each sample and timestep."""
    g = torch.Generator(device=policy.device).manual_seed(1)
    x = torch.randn(batch, *policy.sample_shape, device=policy.device, generator=g)
    t = torch.full((batch,), 0.5, device=policy.device)
    cond = policy.encode_prompts(["p"] * batch)

    def step() -> None:
        with torch.no_grad():
            policy.velocity(x, t, cond, adapter=None)
            policy.velocity(x, t, cond, adapter=OLD)
        policy.velocity(x, t, cond).float().square().mean().backward()
        policy.zero_grad(set_to_none=True)

    return median_seconds(step, repeats=repeats) / batch


def settings(device: torch.device) -> list[tuple[str, str]]:
    """(precision, backend) pairs this machine can run."""
    cap = torch.cuda.get_device_capability() if device.type == "cuda" else (0, 0)
    out = [("bf16", "-"), ("fp8_e4m3", "torchao" if cap >= (8, 9) else "emulated"), ("nvfp4", "emulated")]
    if cap >= (10, 0):
        out.append(("nvfp4", "torchao"))
    return out


def common_arguments(parser: argparse.ArgumentParser, models: list[str] | None = None) -> None:
    """The arguments every GPU benchmark takes: which models, at what size, on what attention."""
    parser.add_argument("--models", nargs="+", default=models or list(MODELS), choices=list(MODELS))
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--no-cudnn-attention", action="store_true",
                        help="keep torch's SDPA off cuDNN (its backward failed on FLUX.1's shapes under torch 2.11+cu130 on an H200)")
    parser.add_argument("--tiny", action="store_true", help="tiny configs on whatever device there is; nothing is appended")


def device_of(args: argparse.Namespace) -> tuple[torch.device, torch.dtype, int]:
    """(device, dtype, resolution) of a run with common_arguments: bf16 on a GPU, fp32 on a CPU."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.no_cudnn_attention:
        torch.backends.cuda.enable_cudnn_sdp(False)
    return device, torch.bfloat16 if device.type == "cuda" else torch.float32, 64 if args.tiny else args.resolution


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_arguments(parser)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-batch", type=int, default=2, help="samples per timed training step (no gradient checkpointing)")
    args = parser.parse_args()
    device, dtype, resolution = device_of(args)
    rows, points = [], []
    for name in args.models:
        policy = RandomPolicy(name, MODELS[name], resolution // 8, args.tiny, device, dtype)
        params = sum(p.numel() for p in policy.transformer.parameters()) / 1e9
        cond = policy.encode_prompts(["p"] * args.batch)
        seeds = list(range(args.batch))
        update = {k: v + 0.01 * torch.randn_like(v) for k, v in policy.adapter_state(POLICY).items()}
        for precision, backend in settings(device):
            recipe = QuantRecipe(format=precision if precision != "bf16" else "nvfp4", backend=backend if backend != "-" else "emulated")
            try:
                sampler = policy.inference_copy(precision, adapter=OLD, quant=recipe)
                seconds = median_seconds(lambda: sample(sampler, cond, seeds, SamplingConfig(steps=args.steps)), repeats=args.repeats)

                def merge() -> None:
                    sampler.update_adapter(update)
                    requantize_model(sampler.transformer)

                merge_s = median_seconds(merge, repeats=args.repeats)
            except Exception as exc:  # a backend that cannot run here is reported with its error, and the rest still measured
                rows.append([name, f"{params:.2f}", precision, backend, "-", "-", "-", f"failed: {type(exc).__name__} {str(exc)[:60]}"])
                print(rows[-1], flush=True)
                sampler = None
                continue
            call_s = seconds / (args.batch * args.steps)
            rows.append([name, f"{params:.2f}", precision, backend, f"{args.batch / seconds:.2f}", f"{call_s:.4f}", f"{merge_s:.3f}", ""])
            points.append({"model": name, "stage": "explore", "precision": precision, "backend": backend, "images_per_s": args.batch / seconds,
                           "call_seconds_per_sample": call_s, "merge_seconds": merge_s, "resolution": resolution, "batch": args.batch})
            print(rows[-1], flush=True)
            sampler = None  # free it before the next precision
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        try:
            train_s = train_seconds(policy, args.train_batch, args.repeats)
            rows.append([name, f"{params:.2f}", "bf16 train", "-", "-", f"{train_s:.4f}", "-", f"per trained sample-time, batch {args.train_batch}"])
            points.append({"model": name, "stage": "train", "precision": "bf16", "seconds_per_sample_time": train_s,
                           "resolution": resolution, "batch": args.train_batch})
        except (torch.OutOfMemoryError, RuntimeError) as exc:  # reported; a CUDA fault ends the run at the next model anyway
            rows.append([name, f"{params:.2f}", "bf16 train", "-", "-", "-", "-", f"failed: {type(exc).__name__} {str(exc)[:60]}"])
        print(rows[-1], flush=True)
        del policy
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    headers = ["model", "B params", "precision", "backend", "images/s", "s per call per sample", "merge + requantize s", "note"]
    if args.tiny:
        print(with_json_lines(headers, rows, points))
        return
    append_results(
        f"Rollout and training at real transformer sizes, {resolution} px, batch {args.batch}, {args.steps} steps (random weights)",
        with_json_lines(headers, rows, points),
        "transformer only (random conditioning, no VAE); LoRA r=32 on the attention projections; images/s = batch / seconds "
        "of one explore; s per call per sample = seconds / (batch x steps), and for the train row the seconds of reference + old "
        "forwards and the policy's forward and backward per sample; merge = fold a new adapter into the copy's weights and re-quantize every quantized layer",
    )


if __name__ == "__main__":
    main()
