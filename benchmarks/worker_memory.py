"""Per-GPU memory of the real workers for the shipped real-model configs, computed from the models'
dimensions (solrl/model_dims.py; transformers built on the meta device to count what each
config quantizes) and what solrl's workers hold today. Computed, not measured: no GPU here.

    python benchmarks/worker_memory.py [--config configs/flux1.yaml ...]

What each worker holds (one GPU each; BF16 = 2 bytes a parameter):
- sampler (explore or regenerate): the policy (transformer in BF16 with its policy and old LoRA
  adapters in fp32), its text encoders and autoencoder in BF16, the reward model when samplers
  score their own images (PickScore: CLIP ViT-H/14, 986M parameters), and the inference copy:
  another BF16 transformer, plus fp32 copies of the adapted layers' base weights (every merge
  starts from them), plus with the emulated NVFP4 backend a cached fake-quantized BF16 copy of
  each quantized layer (transformer-engine quantizes on the fly instead);
- learner rank (FSDP2 over R ranks): its 1/R of the BF16 transformer and of the adapters'
  fp32 policy, old, EMA, gradient and two Adam moments, and, unsharded, the text encoders and
  autoencoder the policy is built with;
- activations: inference holds one block's activations for every sample of a task (explore: a
  prompt group's N seeds; regeneration: its K), about tokens x (4 x width + MLP width) x 2 bytes a
  sample; training saves about 16 x tokens x width x 2 bytes a sample for each block (no
  recomputation), per micro-batch (train.micro_batch; the whole rank's share when unset).
"""

from __future__ import annotations

import argparse
import json

import torch
from common import append_results, table

from solrl.config import load_config
from solrl.model_dims import MODELS
from solrl.quant.linear import gemm_features, skip_reason

GB = 1e9
PICKSCORE_PARAMS = 986_000_000
CONFIGS = ["configs/flux1.yaml", "configs/sd35.yaml", "configs/sana.yaml"]
STAND_IN = {"flux": "flux1", "sd3": "sd35", "sana": "sana"}


def quantized_params(dims, config) -> int:
    """Parameters of the GEMMs the config's skip rules leave in NVFP4."""
    import diffusers

    with torch.device("meta"):
        model = getattr(diffusers, dims.transformer_class)(**dims.transformer_config)
    rules = config.rollout.quant.skip
    return sum(m.weight.numel() for n, m in model.named_modules() if gemm_features(m) and skip_reason(n, m, rules) is None)


def tokens(dims, config) -> int:
    """Sequence length the transformer sees: latent patches plus text tokens (joint attention)."""
    c, h, w = dims.latent_shape(config.model.resolution)
    patch = dims.transformer_config.get("patch_size", 1) * (2 if dims.name == "flux1" else 1)
    text = 0 if dims.name == "sana" else dims.conditioning_shapes(config.model.max_sequence_length)["encoder_hidden_states"][0][0]
    return (h // patch) * (w // patch) + text


def memory(path: str) -> dict:
    config = load_config(path, ["prompts=/x", "eval.prompts=/x"])
    dims = MODELS[STAND_IN[config.model.kind]]
    transformer = dims.params["transformer"]
    encoders = sum(v for k, v in dims.params.items() if k != "transformer")
    adapted = sum(m.fan_in * m.fan_out for m in dims.adapted(config.model.lora.target_modules))
    lora = sum(config.model.lora.rank * (m.fan_in + m.fan_out) for m in dims.adapted(config.model.lora.target_modules))
    width = dims.transformer_config["num_attention_heads"] * dims.transformer_config["attention_head_dim"]
    mlp = int(width * dims.transformer_config.get("mlp_ratio", 4))
    layers = dims.transformer_config["num_layers"] + dims.transformer_config.get("num_single_layers", 0)
    seq = tokens(dims, config)
    ranks = config.cluster.learner_ranks
    quantized = quantized_params(dims, config)
    infer_act = seq * (4 * width + mlp) * 2
    train_act = 16 * seq * width * 2 * layers
    ro, k = config.rollout, config.selection.k
    sampler_common = {
        "policy transformer (BF16)": transformer * 2,
        "policy LoRA, policy + old (fp32)": 2 * lora * 4,
        "text encoders + autoencoder (BF16)": encoders * 2,
        "reward model (PickScore, BF16)": PICKSCORE_PARAMS * 2,
        "inference copy (BF16)": transformer * 2,
        "fp32 base of the adapted layers": adapted * 4,
    }
    roles = {
        "explore (NVFP4, transformer-engine)": sampler_common | {f"activations, {ro.candidates} seeds a task": ro.candidates * infer_act},
        "explore (NVFP4, emulated backend)": sampler_common
        | {"fake-quantized copy of the NVFP4 layers (BF16)": quantized * 2}
        | {f"activations, {ro.candidates} seeds a task": ro.candidates * infer_act},
        "regenerate (BF16)": sampler_common | {f"activations, {k} seeds a task": k * infer_act},
        f"learner rank (1 of {ranks})": {
            "transformer shard (BF16)": transformer * 2 / ranks,
            "LoRA policy, old, EMA, gradient, 2 Adam moments (fp32, sharded)": 6 * lora * 4 / ranks,
            "text encoders + autoencoder (BF16, unused)": encoders * 2,
            "activations, one sample (no recompute)": train_act,
        },
    }
    return {
        "config": dims.name,
        "resolution": config.model.resolution or dims.default_resolution,
        "tokens": seq,
        "quantized_share": round(quantized / transformer, 3),
        "roles": {role: {p: round(b / GB, 2) for p, b in parts.items()} | {"total": round(sum(parts.values()) / GB, 1)} for role, parts in roles.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", help="a shipped real-model config (default: all three)")
    args = parser.parse_args()
    results = [memory(p) for p in args.config or CONFIGS]
    blocks = []
    for r in results:
        rows = [[role, "; ".join(f"{p} {gb:g}" for p, gb in parts.items() if p != "total"), f"**{parts['total']:g}**"] for role, parts in r["roles"].items()]
        share = f"{r['quantized_share']:.0%} of the transformer's parameters in NVFP4 GEMMs"
        blocks.append(f"### {r['config']} at {r['resolution']} px ({r['tokens']} tokens; {share})\n\n" + table(["worker", "what it holds, GB", "GB per GPU"], rows))
    body = "\n\n".join(blocks) + "\n\n```json\n" + "\n".join(json.dumps(r) for r in results) + "\n```"
    append_results("Per-GPU memory of the real workers, computed from the model dimensions (not measured)", body)


if __name__ == "__main__":
    main()
