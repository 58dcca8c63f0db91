"""ShapesModel: the built-in miniature text-to-image policy. diffusers' SD3Transformer2DModel in
pixel space, a transformers CLIP text encoder and a word-level `tokenizers` tokenizer, stored as a
diffusers-style folder (model_index.json, transformer/, text_encoder/, tokenizer/)."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence
from importlib import resources
from typing import Literal

import torch
from diffusers import SD3Transformer2DModel
from pydantic import BaseModel, ConfigDict
from torch import nn
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import CLIPTextConfig, CLIPTextModel

from solrl.models.base import Conditioning, LoraSpec
from solrl.models.sd3_pixel import SD3PixelPolicy

PAD, BOS, EOS, UNK = "[PAD]", "[BOS]", "[EOS]", "[UNK]"
MAX_TOKENS = 10  # the longest caption has 7 words, plus BOS and EOS
# With sample prediction the velocity is (x_t - x0_hat) / t; the floor keeps it finite near t = 0
# (the last Euler step then lands on x0_hat exactly for any grid whose times stay above it).
MIN_T = 0.05
Prediction = Literal["velocity", "sample"]


class ShapesArchitecture(BaseModel):
    """Sizes of a ShapesModel built from scratch."""

    model_config = ConfigDict(extra="forbid")
    image_size: int = 32
    patch_size: int = 2
    layers: int = 4
    heads: int = 4
    head_dim: int = 32
    text_dim: int = 64
    text_layers: int = 2
    # What the transformer outputs: the velocity eps - x0, or the clean image x0 ("sample"; the
    # velocity is derived from it). Predicting the mostly-black clean image spares a tiny network
    # from carrying the noise through every layer (JiT, Li & He 2025).
    prediction: Prediction = "velocity"


def build_tokenizer(words: Sequence[str]) -> Tokenizer:
    """A word-level tokenizer over `words`: lower-cased, whitespace split, [BOS] ... [EOS], padded.

    [EOS] takes the highest id. transformers' CLIPTextModel pools at the [EOS] position, except
    when its config says eos_token_id == 2, where (for old CLIP checkpoints) it pools at the
    highest token id instead: with [EOS] = 2, "a red circle" pooled at "red", before "circle".
    With [EOS] last, both rules pick the [EOS] token, which has read the whole caption.
    """
    vocab = {tok: i for i, tok in enumerate([PAD, BOS, UNK, *sorted(set(words)), EOS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])]
    )
    tok.enable_padding(pad_id=vocab[PAD], pad_token=PAD, length=MAX_TOKENS)
    tok.enable_truncation(MAX_TOKENS)
    return tok


def check_pooling(eos_token_id: int, tokenizer: Tokenizer, path: pathlib.Path | str) -> None:
    """Refuse a text encoder whose pooled vector would not be the [EOS] token's (see build_tokenizer)."""
    eos = tokenizer.token_to_id(EOS)
    if eos_token_id != eos or eos_token_id == 2:
        raise ValueError(
            f"{path}: text_encoder eos_token_id={eos_token_id} with tokenizer [EOS]={eos}: CLIP would pool at "
            f"{'the highest token id' if eos_token_id == 2 else 'a token that never occurs'}, not the end of the caption; "
            f"re-pretrain the model with `solrl toy pretrain` (its tokenizer puts [EOS] last)"
        )


def shipped_model_path() -> pathlib.Path:
    """The pretrained ShapesModel folder inside the package."""
    return pathlib.Path(str(resources.files("solrl.toy").joinpath("weights")))


class ShapesModel(SD3PixelPolicy):
    """A PolicyModel over 3 x 32 x 32 images in [-1, 1] (black background = -1)."""

    # docs/method.md's rules as data: embedders, norms' modulation and the final layer stay high precision.
    quant_skip_patterns = ("time_text_embed.*", "context_embedder", "pos_embed*", "*norm*", "proj_out")

    def __init__(
        self,
        transformer: SD3Transformer2DModel,
        text_encoder: CLIPTextModel,
        tokenizer: Tokenizer,
        lora: LoraSpec | None = None,
        prediction: Prediction = "velocity",
    ):
        super().__init__()
        if prediction not in ("velocity", "sample"):
            raise ValueError(f"prediction={prediction!r}: expected 'velocity' or 'sample'")
        self.prediction = prediction
        self.transformer = transformer
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        size = transformer.config.sample_size
        self.sample_shape = (transformer.config.in_channels, size, size)
        if lora is not None:
            self.attach_lora(lora)

    @classmethod
    def from_scratch(cls, arch: ShapesArchitecture, words: Sequence[str], seed: int = 0) -> ShapesModel:
        """Random weights for pretraining."""
        torch.manual_seed(seed)
        tokenizer = build_tokenizer(words)
        width = arch.heads * arch.head_dim
        transformer = SD3Transformer2DModel(
            sample_size=arch.image_size,
            patch_size=arch.patch_size,
            in_channels=3,
            out_channels=3,
            num_layers=arch.layers,
            attention_head_dim=arch.head_dim,
            num_attention_heads=arch.heads,
            joint_attention_dim=arch.text_dim,
            caption_projection_dim=width,
            pooled_projection_dim=arch.text_dim,
            pos_embed_max_size=arch.image_size // arch.patch_size,
        )
        text_config = CLIPTextConfig(
            vocab_size=tokenizer.get_vocab_size(),
            hidden_size=arch.text_dim,
            intermediate_size=4 * arch.text_dim,
            num_hidden_layers=arch.text_layers,
            num_attention_heads=max(1, arch.text_dim // 32),
            max_position_embeddings=MAX_TOKENS,
            pad_token_id=tokenizer.token_to_id(PAD),
            bos_token_id=tokenizer.token_to_id(BOS),
            eos_token_id=tokenizer.token_to_id(EOS),
        )
        return cls(transformer, CLIPTextModel(text_config), tokenizer, prediction=arch.prediction)

    @classmethod
    def from_pretrained(cls, path: str | pathlib.Path | None = None, lora: LoraSpec | None = None) -> ShapesModel:
        """Load a saved folder (default: the weights shipped in the package), offline."""
        path = pathlib.Path(path) if path is not None else shipped_model_path()
        if not (path / "model_index.json").is_file():
            raise FileNotFoundError(f"{path} is not a ShapesModel folder: model_index.json is missing")
        transformer = SD3Transformer2DModel.from_pretrained(path / "transformer", local_files_only=True)
        text_encoder = CLIPTextModel.from_pretrained(path / "text_encoder", local_files_only=True)
        tokenizer = Tokenizer.from_file(str(path / "tokenizer" / "tokenizer.json"))
        check_pooling(text_encoder.config.eos_token_id, tokenizer, path)
        prediction = json.loads((path / "model_index.json").read_text()).get("prediction_type", "velocity")
        transformer.requires_grad_(False).eval()
        text_encoder.requires_grad_(False).eval()
        return cls(transformer, text_encoder, tokenizer, lora or LoraSpec(), prediction)

    def save_pretrained(self, path: str | pathlib.Path, metadata: dict | None = None) -> None:
        """Write the diffusers-style folder; `metadata` (command, seed, eval figures) goes in
        model_index.json under "solrl"."""
        path = pathlib.Path(path)
        (path / "tokenizer").mkdir(parents=True, exist_ok=True)
        self.transformer.save_pretrained(path / "transformer")
        self.text_encoder.save_pretrained(path / "text_encoder")
        self.tokenizer.save(str(path / "tokenizer" / "tokenizer.json"))
        index = {
            "_class_name": "ShapesModel",
            "transformer": ["diffusers", "SD3Transformer2DModel"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["tokenizers", "Tokenizer"],
            "prediction_type": self.prediction,
            "solrl": metadata or {},
        }
        (path / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")

    def _forward(self, transformer: nn.Module, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        out = super()._forward(transformer, x_t, t, cond)
        if self.prediction == "sample":
            return (x_t - out) / t.to(out.dtype).clamp_min(MIN_T).view(-1, *([1] * (out.dim() - 1)))
        return out

    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        encodings = self.tokenizer.encode_batch([p.lower() for p in prompts])
        device = next(self.text_encoder.parameters()).device
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long, device=device)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long, device=device)
        out = self.text_encoder(input_ids=ids, attention_mask=mask)
        return Conditioning({"encoder_hidden_states": out.last_hidden_state, "pooled_projections": out.pooler_output})
