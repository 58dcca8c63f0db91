"""ImageReward (Xu et al. 2023) on transformers' BLIP modules: a BLIP ViT encodes the image, BLIP's
BERT text encoder reads the prompt with cross-attention to it, and an MLP on the first token gives
the score, standardised with the published mean and std.

Expected folder (reward.path), all from the ImageReward release:
- ImageReward.pt: the checkpoint (BLIP's own key names; converted on load, loaded weights-only);
- med_config.json: BLIP's BERT config;
- vocab.txt: the bert-base-uncased WordPiece vocabulary;
- vision_config.json (optional): transformers BlipVisionConfig fields; default ViT-L/16 at 224 px.
Preprocessing is ImageReward's: bicubic resize of the short side to the image size, centre crop,
CLIP mean / std; prompts padded to 35 tokens with [ENC] in place of [CLS].
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from transformers import BertTokenizer, BlipTextConfig, BlipTextModel, BlipVisionConfig, BlipVisionModel

from solrl.rewards.clip import ScoreHead
from solrl.rewards.images import to_pil

MEAN, STD = 0.16717362830052426, 1.0333394966054072  # ImageReward's score standardisation
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_TOKENS = 35
VIT_L = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
         "image_size": 224, "patch_size": 16, "layer_norm_eps": 1e-6}
_VISION = {"norm1": "layer_norm1", "norm2": "layer_norm2", "attn.qkv": "self_attn.qkv", "attn.proj": "self_attn.projection",
           "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}


def convert_image_reward_state(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """ImageReward.pt keys -> {'vision': BlipVisionModel, 'text': BlipTextModel, 'head': ScoreHead} state dicts."""
    out: dict[str, dict[str, torch.Tensor]] = {"vision": {}, "text": {}, "head": {}}
    for key, value in state.items():
        if key.startswith("blip.visual_encoder."):
            rest = key.removeprefix("blip.visual_encoder.")
            if rest == "cls_token":
                out["vision"]["embeddings.class_embedding"] = value
            elif rest == "pos_embed":
                out["vision"]["embeddings.position_embedding"] = value
            elif rest.startswith("patch_embed.proj."):
                out["vision"]["embeddings.patch_embedding." + rest.rsplit(".", 1)[1]] = value
            elif rest.startswith("norm."):
                out["vision"]["post_layernorm." + rest.rsplit(".", 1)[1]] = value
            elif rest.startswith("blocks."):
                _, index, sub = rest.split(".", 2)
                module, kind = sub.rsplit(".", 1)
                if module not in _VISION:
                    raise KeyError(f"ImageReward key {key!r} has no transformers counterpart")
                out["vision"][f"encoder.layers.{index}.{_VISION[module]}.{kind}"] = value
            else:
                raise KeyError(f"ImageReward key {key!r} has no transformers counterpart")
        elif key.startswith("blip.text_encoder."):
            rest = key.removeprefix("blip.text_encoder.")
            if not rest.endswith("position_ids"):
                out["text"][rest] = value
        elif key.startswith("mlp."):
            out["head"][key.removeprefix("mlp.")] = value
        # the rest of BLIP (projections, ITM head) is not used for scoring
    return out


def preprocess(images: torch.Tensor, size: int) -> torch.Tensor:
    """ImageReward's transform on 8-bit images: bicubic short-side resize, centre crop, normalise."""
    out = []
    for img in to_pil(images):
        w, h = img.size
        scale = size / min(w, h)
        img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
        w, h = img.size
        left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
        img = img.crop((left, top, left + size, top + size))
        out.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1))
    x = torch.stack(out)
    return (x - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)


class ImageReward(nn.Module):
    """ImageReward score (standardised; typically about -2 to 2)."""

    name = "imagereward"

    def __init__(self, vision: BlipVisionModel, text: BlipTextModel, head: ScoreHead, tokenizer: BertTokenizer, device="cpu"):
        super().__init__()
        self.vision, self.text, self.head = vision.eval(), text.eval(), head.eval()
        self.requires_grad_(False).to(device)
        self.tokenizer = tokenizer
        self.enc_token_id = tokenizer.convert_tokens_to_ids("[ENC]")
        self.image_size = vision.config.image_size

    @classmethod
    def from_pretrained(cls, path: str | pathlib.Path | None, device: str | torch.device = "cpu") -> ImageReward:
        if path is None:
            raise ValueError("reward 'imagereward' needs reward.path: a folder with ImageReward.pt, med_config.json and vocab.txt")
        folder = pathlib.Path(path)
        missing = [f for f in ("ImageReward.pt", "med_config.json", "vocab.txt") if not (folder / f).is_file()]
        if missing:
            raise FileNotFoundError(f"reward 'imagereward': reward.path={str(folder)!r} lacks {missing}; copy them from the ImageReward release")
        med = json.loads((folder / "med_config.json").read_text())
        vision_fields = json.loads((folder / "vision_config.json").read_text()) if (folder / "vision_config.json").is_file() else VIT_L
        vision = BlipVisionModel(BlipVisionConfig(**vision_fields))
        text = BlipTextModel(BlipTextConfig(
            vocab_size=med["vocab_size"], hidden_size=med["hidden_size"], intermediate_size=med["intermediate_size"],
            num_hidden_layers=med["num_hidden_layers"], num_attention_heads=med["num_attention_heads"],
            max_position_embeddings=med["max_position_embeddings"], layer_norm_eps=med.get("layer_norm_eps", 1e-12),
            hidden_act=med.get("hidden_act", "gelu"), encoder_hidden_size=vision.config.hidden_size, pad_token_id=med.get("pad_token_id", 0),
        ), add_pooling_layer=False)
        head = ScoreHead(med["hidden_size"])
        raw = torch.load(folder / "ImageReward.pt", map_location="cpu", weights_only=True)
        parts = convert_image_reward_state(raw.get("state_dict", raw))
        for name, module in (("vision", vision), ("text", text), ("head", head)):
            result = module.load_state_dict(parts[name], strict=False)
            missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
            if missing or result.unexpected_keys:
                raise ValueError(f"ImageReward.pt does not fit the configs in {folder}: {name} missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}")
        tokenizer = BertTokenizer(str(folder / "vocab.txt"))
        tokenizer.add_special_tokens({"bos_token": "[DEC]"})
        tokenizer.add_tokens(["[ENC]"], special_tokens=True)  # after [DEC], as ImageReward adds them
        return cls(vision, text, head, tokenizer, device)

    @property
    def device(self) -> torch.device:
        return next(self.head.parameters()).device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        if len(images) != len(prompts):
            raise ValueError(f"got {len(images)} images but {len(prompts)} prompts; pass one prompt per image")
        pixels = preprocess(images, self.image_size).to(self.device)
        image_embeds = self.vision(pixel_values=pixels).last_hidden_state
        tokens = self.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        ids = tokens["input_ids"].clone()
        ids[:, 0] = self.enc_token_id
        out = self.text(
            input_ids=ids.to(self.device), attention_mask=tokens["attention_mask"].to(self.device),
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=torch.ones(image_embeds.shape[:2], dtype=torch.long, device=self.device),
        ).last_hidden_state[:, 0]
        return ((self.head(out.float()) - MEAN) / STD).cpu()
