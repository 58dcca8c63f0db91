"""Flow-matching pretraining of ShapesModel on freshly rendered (caption, image) pairs.

Each step draws a task uniformly, then a train caption of that task, renders it, and regresses
the velocity v = eps - x0 at a logit-normal time (the network may predict x0; the loss is on v). An EMA of the weights is what gets saved.
"""

from __future__ import annotations

import copy
import json
import pathlib
import random
import time

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from solrl.models.shapes import ShapesArchitecture, ShapesModel
from solrl.toy.captions import all_captions, load_prompts, parse_caption
from solrl.toy.render import render_batch


class PretrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    arch: ShapesArchitecture = Field(default_factory=lambda: ShapesArchitecture(patch_size=4, layers=6, prediction="sample"))
    steps: int = Field(default=6000, ge=1)
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    warmup: int = Field(default=300, ge=0)
    weight_decay: float = Field(default=0.01, ge=0)
    ema_decay: float = Field(default=0.999, ge=0, le=1)
    seed: int = 0
    # Start from this ShapesModel folder's weights instead of random ones (its architecture is
    # kept; text embeddings are matched to this tokenizer by token, so an older vocabulary order loads).
    init: str | None = None


def _by_task(captions: list[str]) -> dict[str, list[str]]:
    tasks: dict[str, list[str]] = {}
    for c in captions:
        tasks.setdefault(parse_caption(c).task, []).append(c)
    return tasks


def warm_start(model: ShapesModel, folder: pathlib.Path) -> None:
    """Load a saved ShapesModel's weights into `model` (same architecture), matching each text
    token's embedding row by the token itself, so a folder with another vocabulary order loads."""
    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(f"--init {folder}: not a ShapesModel folder (model_index.json is missing)")
    model.transformer.load_state_dict(load_file(str(folder / "transformer" / "diffusion_pytorch_model.safetensors")))
    text = load_file(str(folder / "text_encoder" / "model.safetensors"))
    old_vocab = Tokenizer.from_file(str(folder / "tokenizer" / "tokenizer.json")).get_vocab()
    key = next(k for k in text if k.endswith("token_embedding.weight"))
    rows = text[key].clone()
    new = model.text_encoder.state_dict()[key].clone()
    for token, i in model.tokenizer.get_vocab().items():
        if token not in old_vocab:
            raise ValueError(f"--init {folder}: its tokenizer has no {token!r}; start from scratch instead")
        new[i] = rows[old_vocab[token]]
    model.text_encoder.load_state_dict(text | {key: new})


def pretrain(config: PretrainConfig, progress: bool = True) -> ShapesModel:
    """Train from scratch; returns the EMA model (adapter-free, frozen)."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    picker = random.Random(config.seed)
    words = sorted({w for caps in all_captions().values() for c in caps for w in c.split()})
    model = ShapesModel.from_scratch(config.arch, words, seed=config.seed)
    if config.init:
        warm_start(model, pathlib.Path(config.init))
    tasks = _by_task(load_prompts("train"))
    names = sorted(tasks)
    params = list(model.transformer.parameters()) + list(model.text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)

    def lr_at(step: int) -> float:
        warm = min(1.0, (step + 1) / max(1, config.warmup))
        cosine = 0.5 * (1 + np.cos(np.pi * step / config.steps))
        return config.lr * warm * (0.1 + 0.9 * cosine)

    ema = copy.deepcopy(model).requires_grad_(False)
    ema_params = list(ema.transformer.parameters()) + list(ema.text_encoder.parameters())
    bar = tqdm(range(config.steps), desc="pretrain", disable=not progress, mininterval=5)
    running = None
    for step in bar:
        captions = [picker.choice(tasks[picker.choice(names)]) for _ in range(config.batch_size)]
        x0 = render_batch([parse_caption(c) for c in captions], rng) * 2 - 1
        eps = torch.randn_like(x0)
        t = torch.sigmoid(torch.randn(config.batch_size))  # logit-normal(0, 1), SD3's choice
        tb = t.view(-1, 1, 1, 1)
        x_t = (1 - tb) * x0 + tb * eps
        cond = model.encode_prompts(captions)
        v = model._forward(model.transformer, x_t, t, cond)
        loss = ((v - (eps - x0)) ** 2).mean()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        with torch.no_grad():
            decay = min(config.ema_decay, (1 + step) / (10 + step))
            for e, p in zip(ema_params, params):
                e.lerp_(p, 1 - decay)
        running = float(loss) if running is None else 0.98 * running + 0.02 * float(loss)
        bar.set_postfix(loss=f"{running:.4f}", lr=f"{lr_at(step):.1e}")
    ema.transformer.eval()
    ema.text_encoder.eval()
    return ema


def main_pretrain(out: str, config: PretrainConfig, command: str, eval_fn=None) -> dict:
    """Pretrain, evaluate with `eval_fn(model) -> dict` if given, and save with provenance."""
    start = time.time()
    model = pretrain(config)
    minutes = (time.time() - start) / 60
    figures = eval_fn(model) if eval_fn else {}
    metadata = {
        "command": command,
        "seed": config.seed,
        "config": config.model_dump(),
        "train_minutes": round(minutes, 1),
        "torch_threads": torch.get_num_threads(),
        "eval": figures,
    }
    if config.init:  # the chain of provenance: what the starting weights were made by
        metadata["init"] = json.loads((pathlib.Path(config.init) / "model_index.json").read_text()).get("solrl", {})
    model.save_pretrained(pathlib.Path(out), metadata)
    return metadata
