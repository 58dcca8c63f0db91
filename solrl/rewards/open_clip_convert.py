"""open_clip CLIP weights (HPSv2's checkpoint format) -> a transformers CLIPModel, so the HPS
reward runs on transformers alone (open_clip needs torchvision, which a CPU-only install lacks).

open_clip stores each attention's q, k, v as one `in_proj` matrix and the projections as (D, P)
matrices applied on the right; transformers splits the former and stores the latter transposed.
"""

from __future__ import annotations

import pathlib

import torch
from transformers import CLIPModel

_BLOCK = {  # per residual block: open_clip suffix -> transformers suffix
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}
_TOP = {  # whole tensors renamed as they are
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
}
_TRANSPOSED = {"text_projection": "text_projection.weight", "visual.proj": "visual_projection.weight"}


def convert_open_clip_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename and reshape an open_clip CLIP state dict into transformers' CLIPModel keys."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in _TOP:
            out[_TOP[key]] = value
        elif key in _TRANSPOSED:
            out[_TRANSPOSED[key]] = value.t().contiguous()
        elif ".resblocks." in key:
            tower, rest = key.split("transformer.resblocks.", 1)
            index, suffix = rest.split(".", 1)
            prefix = f"{'vision_model' if tower == 'visual.' else 'text_model'}.encoder.layers.{index}."
            if suffix.startswith("attn.in_proj_"):
                kind = suffix.rsplit("_", 1)[1]  # weight or bias
                for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                    out[f"{prefix}self_attn.{name}.{kind}"] = part.contiguous()
            else:
                module, kind = suffix.rsplit(".", 1)
                if module not in _BLOCK:
                    raise KeyError(f"open_clip key {key!r} has no transformers counterpart")
                out[f"{prefix}{_BLOCK[module]}.{kind}"] = value
        elif key == "attn_mask" or key.endswith(".attn_mask"):
            continue  # the causal mask is a buffer open_clip saves; transformers builds its own
        else:
            raise KeyError(f"open_clip key {key!r} has no transformers counterpart")
    return out


def load_open_clip_state(model: CLIPModel, checkpoint: str | pathlib.Path) -> None:
    """Load an open_clip checkpoint (a state dict, or {'state_dict': ...}) into `model`, strictly.

    torch.load runs with weights_only: the file may hold tensors and plain containers only.
    """
    raw = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = raw.get("state_dict", raw) if isinstance(raw, dict) else raw
    converted = convert_open_clip_state(state)
    expected = set(model.state_dict())
    missing = sorted(expected - set(converted) - {"text_model.embeddings.position_ids", "vision_model.embeddings.position_ids"})
    unexpected = sorted(set(converted) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{checkpoint} does not fit the CLIP folder's architecture: missing {missing[:4]}, unexpected {unexpected[:4]}; "
            f"the folder's config.json must describe the checkpoint's model (ViT-H-14 for HPSv2.1)"
        )
    model.load_state_dict(converted, strict=False)
