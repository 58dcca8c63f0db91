"""CLIP-family rewards loaded from local folders with transformers: PickScore, CLIPScore,
HPSv2.1 and a LAION-style aesthetic head.

Every reward takes images in [0, 1] (B, 3, H, W) and prompts. Images are rounded to 8-bit and
handed to the checkpoint's own image processor as PIL images, which is what each reference
implementation scores (a generated image is a PNG before anyone judges it), so resize, crop and
normalisation follow the checkpoint's preprocessor_config.json, not a re-implementation.

Expected layouts (all offline, `path` in the reward config):
- pickscore:  a transformers CLIP folder (config.json, model weights, preprocessor_config.json,
  tokenizer files), e.g. yuvalkirstain/PickScore_v1 with the processor of
  laion/CLIP-ViT-H-14-laion2B-s32B-b79K copied in.
- clipscore:  a transformers CLIP folder, e.g. openai/clip-vit-large-patch14.
- hpsv2:      a transformers CLIP folder of the ViT-H-14 architecture (processor included) plus
  the HPS checkpoint file HPS_v2.1_compressed.pt (open_clip key names) in the same folder; the
  open_clip weights are converted on load (solrl.rewards.open_clip_convert).
- aesthetic:  a transformers CLIP ViT-L/14 folder plus the head's weights as
  aesthetic_head.safetensors or the published sac+logos+ava1-l14-linearMSE.pth.
- imagereward: see solrl.rewards.image_reward.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import torch
from torch import nn
from transformers import AutoProcessor, CLIPModel

from solrl.rewards.images import to_pil


def require_folder(path: str | pathlib.Path | None, reward: str, expected: str) -> pathlib.Path:
    """The reward's local folder, or an error naming the field and what belongs there."""
    if path is None:
        raise ValueError(f"reward {reward!r} needs reward.path: a local folder holding {expected}")
    folder = pathlib.Path(path)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"reward {reward!r}: reward.path={str(folder)!r} is not a model folder (no config.json); it should hold {expected}")
    return folder


class ClipReward(nn.Module):
    """Cosine similarity of CLIP image and text embeddings, times `scale` (a plain CLIPScore)."""

    name = "clipscore"

    def __init__(self, model: CLIPModel, processor, scale: float = 1.0, device: str | torch.device = "cpu"):
        super().__init__()
        self.model = model.eval().requires_grad_(False).to(device)
        self.processor = processor
        self.scale = scale

    @classmethod
    def from_pretrained(cls, path: str | pathlib.Path | None, device: str | torch.device = "cpu", **kwargs) -> ClipReward:
        folder = require_folder(path, cls.name, "a transformers CLIP model and its processor")
        return cls(CLIPModel.from_pretrained(folder, local_files_only=True), AutoProcessor.from_pretrained(folder, local_files_only=True), device=device, **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings."""
        pixels = self.processor(images=to_pil(images), return_tensors="pt")["pixel_values"].to(self.device)
        feats = self.model.get_image_features(pixel_values=pixels)
        feats = feats if isinstance(feats, torch.Tensor) else feats.pooler_output
        return nn.functional.normalize(feats.float(), dim=-1)

    def text_features(self, prompts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings (prompts truncated to the tokenizer's 77 tokens)."""
        tokens = self.processor(text=list(prompts), padding=True, truncation=True, max_length=77, return_tensors="pt")
        feats = self.model.get_text_features(input_ids=tokens["input_ids"].to(self.device), attention_mask=tokens["attention_mask"].to(self.device))
        feats = feats if isinstance(feats, torch.Tensor) else feats.pooler_output
        return nn.functional.normalize(feats.float(), dim=-1)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        if len(images) != len(prompts):
            raise ValueError(f"got {len(images)} images but {len(prompts)} prompts; pass one prompt per image")
        cos = (self.image_features(images) * self.text_features(prompts)).sum(-1)
        return (cos * self._logit_scale() * self.scale).cpu()

    def _logit_scale(self) -> torch.Tensor | float:
        return 1.0


class PickScore(ClipReward):
    """PickScore: exp(logit_scale) * cosine, divided by 26 (the normalisation Flow-GRPO and
    DiffusionNFT train with, which puts the paper's FLUX figures near 0.89)."""

    name = "pickscore"

    def __init__(self, model: CLIPModel, processor, scale: float = 1.0 / 26.0, device: str | torch.device = "cpu"):
        super().__init__(model, processor, scale, device)

    def _logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.exp().float()


class HPSv2(ClipReward):
    """HPSv2.1: cosine of an open_clip ViT-H-14 fine-tuned on human preferences, converted to a
    transformers CLIPModel on load."""

    name = "hpsv2"
    CHECKPOINT = "HPS_v2.1_compressed.pt"

    @classmethod
    def from_pretrained(cls, path: str | pathlib.Path | None, device: str | torch.device = "cpu", **kwargs) -> HPSv2:
        from solrl.rewards.open_clip_convert import load_open_clip_state

        folder = require_folder(path, cls.name, f"a transformers CLIP ViT-H-14 folder and {cls.CHECKPOINT}")
        model = CLIPModel.from_pretrained(folder, local_files_only=True)
        checkpoint = folder / cls.CHECKPOINT
        if not checkpoint.is_file():
            raise FileNotFoundError(f"reward 'hpsv2': {checkpoint} is missing; copy the HPS v2.1 checkpoint into reward.path")
        load_open_clip_state(model, checkpoint)
        return cls(model, AutoProcessor.from_pretrained(folder, local_files_only=True), device=device, **kwargs)


class ScoreHead(nn.Module):
    """The MLP of the LAION aesthetic predictor v2 and of ImageReward (dim -> 1024 -> 128 -> 64 ->
    16 -> 1, dropout between, no activations); state-dict keys layers.{0,2,4,6,7}.*"""

    def __init__(self, dim: int = 768):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).squeeze(-1)


class AestheticReward(ClipReward):
    """LAION-style aesthetic score (about 1-10) of normalised CLIP image embeddings; ignores the prompt."""

    name = "aesthetic"
    HEAD_FILES = ("aesthetic_head.safetensors", "sac+logos+ava1-l14-linearMSE.pth")

    def __init__(self, model: CLIPModel, processor, head: ScoreHead, device: str | torch.device = "cpu"):
        super().__init__(model, processor, 1.0, device)
        self.head = head.eval().requires_grad_(False).to(device)

    @classmethod
    def from_pretrained(cls, path: str | pathlib.Path | None, device: str | torch.device = "cpu", **kwargs) -> AestheticReward:
        folder = require_folder(path, cls.name, f"a transformers CLIP ViT-L/14 folder and one of {cls.HEAD_FILES}")
        model = CLIPModel.from_pretrained(folder, local_files_only=True)
        head = ScoreHead(model.config.projection_dim)
        head.load_state_dict(load_head_state(folder, cls.HEAD_FILES))
        return cls(model, AutoProcessor.from_pretrained(folder, local_files_only=True), head, device=device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        if len(images) != len(prompts):
            raise ValueError(f"got {len(images)} images but {len(prompts)} prompts; pass one prompt per image")
        return self.head(self.image_features(images)).float().cpu()


def load_head_state(folder: pathlib.Path, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """The first of `names` present in `folder`: safetensors, or a torch state dict loaded with
    weights_only (plain tensors only, no arbitrary unpickling)."""
    for name in names:
        path = folder / name
        if path.is_file():
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                return load_file(str(path))
            return torch.load(path, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"none of {list(names)} is in {folder}; copy the head's weights there")
