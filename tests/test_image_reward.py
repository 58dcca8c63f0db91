"""ImageReward on a tiny random BLIP written in ImageReward's own checkpoint format: keys convert
onto transformers' BLIP modules, the score follows ImageReward's recipe ([ENC] token, cross-
attention to the image, MLP, standardisation), and preprocessing matches its transform."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import BlipTextConfig, BlipTextModel, BlipVisionConfig, BlipVisionModel

from solrl.rewards.clip import ScoreHead
from solrl.rewards.image_reward import CLIP_MEAN, CLIP_STD, MEAN, STD, ImageReward, preprocess
from solrl.rewards.registry import build_one, reward_spec

VISION = {"hidden_size": 24, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 32, "patch_size": 8, "layer_norm_eps": 1e-6}
MED = {"vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
       "max_position_embeddings": 64, "layer_norm_eps": 1e-12, "hidden_act": "gelu", "pad_token_id": 0, "add_cross_attention": True}
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *list("abcdefghijklmnopqrstuvwxyz"), "cat", "dog", "red"]


def _original_keys(vision: BlipVisionModel, text: BlipTextModel, head: ScoreHead) -> dict[str, torch.Tensor]:
    """The modules' weights under ImageReward's (BLIP's) key names, spelled out independently."""
    out = {}
    names = {"layer_norm1": "norm1", "layer_norm2": "norm2", "self_attn.qkv": "attn.qkv", "self_attn.projection": "attn.proj", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    for key, v in vision.state_dict().items():
        if key == "embeddings.class_embedding":
            out["blip.visual_encoder.cls_token"] = v
        elif key == "embeddings.position_embedding":
            out["blip.visual_encoder.pos_embed"] = v
        elif key.startswith("embeddings.patch_embedding."):
            out["blip.visual_encoder.patch_embed.proj." + key.rsplit(".", 1)[1]] = v
        elif key.startswith("post_layernorm."):
            out["blip.visual_encoder.norm." + key.rsplit(".", 1)[1]] = v
        else:
            _, _, i, sub = key.split(".", 3)
            module, kind = sub.rsplit(".", 1)
            out[f"blip.visual_encoder.blocks.{i}.{names[module]}.{kind}"] = v
    out.update({f"blip.text_encoder.{k}": v for k, v in text.state_dict().items()})
    out.update({f"mlp.{k}": v for k, v in head.state_dict().items()})
    out["blip.vision_proj.weight"] = torch.zeros(4, 24)  # unused parts of BLIP are ignored
    return out


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imagereward")
    torch.manual_seed(0)
    vision = BlipVisionModel(BlipVisionConfig(**VISION)).eval()
    text = BlipTextModel(BlipTextConfig(**{k: v for k, v in MED.items() if k != "add_cross_attention"}, encoder_hidden_size=24), add_pooling_layer=False).eval()
    head = ScoreHead(16).eval()
    torch.save({"state_dict": _original_keys(vision, text, head)}, folder / "ImageReward.pt")
    (folder / "med_config.json").write_text(json.dumps(MED))
    (folder / "vision_config.json").write_text(json.dumps(VISION))
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return folder, vision, text, head


def test_score_follows_image_reward_recipe(release):
    folder, vision, text, head = release
    reward = ImageReward.from_pretrained(folder)
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    prompts = ["a red cat", "a dog", "cat dog"]
    tok = reward.tokenizer(prompts, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    assert tok["input_ids"].shape == (3, 35) and reward.enc_token_id == len(VOCAB) + 1  # [DEC] then [ENC] appended
    ids = tok["input_ids"].clone()
    ids[:, 0] = reward.enc_token_id
    with torch.no_grad():
        emb = vision(pixel_values=preprocess(images, 32)).last_hidden_state
        feat = text(input_ids=ids, attention_mask=tok["attention_mask"], encoder_hidden_states=emb,
                    encoder_attention_mask=torch.ones(emb.shape[:2], dtype=torch.long)).last_hidden_state[:, 0]
        expected = (head(feat) - MEAN) / STD
    got = reward(images, prompts)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(reward(images, prompts[::-1]), got)
    assert isinstance(build_one(reward_spec(name="imagereward", path=str(folder))), ImageReward)


def test_preprocessing():
    square = torch.rand(2, 3, 32, 32)
    eight_bit = (square * 255).round() / 255
    expected = (eight_bit - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(preprocess(square, 32), expected)  # already at size: only normalised
    wide = torch.zeros(1, 3, 20, 60)
    wide[..., 25:35] = 1.0  # a white band in the middle survives the centre crop
    out = preprocess(wide, 10)
    assert out.shape == (1, 3, 10, 10) and out[0, :, :, 4:6].mean() > 1.0 and out[0, :, :, 0].mean() < 0


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="ImageReward.pt"):
        ImageReward.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="reward.path"):
        ImageReward.from_pretrained(None)
