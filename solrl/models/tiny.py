"""A tiny random-weight PolicyModel for tests: diffusers' SD3Transformer2DModel in pixel space
with a hashed bag-of-words text encoder. Every part is real; it just knows nothing."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import torch
from diffusers import SD3Transformer2DModel
from torch import nn

from solrl.models.base import Conditioning, LoraSpec
from solrl.models.sd3_pixel import SD3PixelPolicy


class HashTextEncoder(nn.Module):
    """Words -> crc32 buckets -> a frozen random embedding table; pooled = mean over words."""

    def __init__(self, dim: int, vocab: int = 1024, max_words: int = 8, seed: int = 0):
        super().__init__()
        self.vocab, self.max_words = vocab, max_words
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("table", torch.randn(vocab + 1, dim, generator=generator) / dim**0.5)

    def token_ids(self, prompts: Sequence[str]) -> torch.Tensor:
        ids = torch.full((len(prompts), self.max_words), self.vocab, dtype=torch.long)  # vocab = padding
        for i, prompt in enumerate(prompts):
            words = prompt.lower().split()[: self.max_words]
            ids[i, : len(words)] = torch.tensor([zlib.crc32(w.encode()) % self.vocab for w in words], dtype=torch.long)
        return ids

    def forward(self, prompts: Sequence[str]) -> Conditioning:
        ids = self.token_ids(prompts).to(self.table.device)
        hidden = self.table[ids]
        mask = (ids != self.vocab).unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return Conditioning({"encoder_hidden_states": hidden, "pooled_projections": pooled})


class TinyPolicyModel(SD3PixelPolicy):
    """SD3-architecture policy on 3 x size x size pixels; deterministic for a given seed."""

    quant_skip_patterns = ("time_text_embed.*", "context_embedder", "*norm*", "proj_out")

    def __init__(self, size: int = 16, width: int = 32, layers: int = 2, lora: LoraSpec | None = None, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        heads = 2
        self.transformer = SD3Transformer2DModel(
            sample_size=size,
            patch_size=2,
            in_channels=3,
            out_channels=3,
            num_layers=layers,
            attention_head_dim=width // heads,
            num_attention_heads=heads,
            joint_attention_dim=width,
            caption_projection_dim=width,
            pooled_projection_dim=width,
            pos_embed_max_size=size,
        )
        self.text_encoder = HashTextEncoder(width, seed=seed)
        self.sample_shape = (3, size, size)
        self.attach_lora(lora or LoraSpec(rank=4, alpha=8.0))

    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        return self.text_encoder(prompts)
