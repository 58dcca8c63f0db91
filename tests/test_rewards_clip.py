"""CLIP-family rewards on tiny random CLIP folders: each reward's formula against a hand
computation through the checkpoint's own processor, batching, 8-bit preprocessing, the open_clip
(HPSv2) conversion, the aesthetic head's two file formats, weighted sums and clear errors."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoProcessor, CLIPModel

from solrl.config import ConfigError, load_config
from solrl.preflight import PreflightError, preflight
from tiny_pipelines import build_clip
from solrl.rewards.clip import AestheticReward, ClipReward, HPSv2, PickScore, ScoreHead
from solrl.rewards.images import to_pil
from solrl.rewards.open_clip_convert import convert_open_clip_state
from solrl.rewards.registry import reward_spec, WeightedReward, build_reward

PROMPTS = ["a red cube on a table", "two dogs", "an astronaut riding a horse"]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return build_clip(tmp_path_factory.mktemp("clip"))


def images(n=3, seed=0, h=40, w=48):
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def reference_cosine(folder, imgs, prompts):
    """Features the way PickScore's reference code computes them: PIL images through the processor."""
    model, processor = CLIPModel.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)
    with torch.no_grad():
        pix = processor(images=to_pil(imgs), return_tensors="pt")["pixel_values"]
        txt = processor(text=prompts, padding=True, truncation=True, max_length=77, return_tensors="pt")
        i = model.get_image_features(pixel_values=pix)
        t = model.get_text_features(input_ids=txt["input_ids"], attention_mask=txt["attention_mask"])
        i = i if isinstance(i, torch.Tensor) else i.pooler_output
        t = t if isinstance(t, torch.Tensor) else t.pooler_output
    i, t = i / i.norm(dim=-1, keepdim=True), t / t.norm(dim=-1, keepdim=True)
    return (i * t).sum(-1), model.logit_scale.exp()


def test_pickscore_and_clipscore_match_reference(clip_dir):
    imgs = images()
    cos, logit_scale = reference_cosine(clip_dir, imgs, PROMPTS)
    torch.testing.assert_close(ClipReward.from_pretrained(clip_dir)(imgs, PROMPTS), cos, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(PickScore.from_pretrained(clip_dir)(imgs, PROMPTS), logit_scale * cos / 26, atol=1e-5, rtol=1e-5)


def test_batched_equals_one_by_one_and_prompt_matters(clip_dir):
    reward, imgs = PickScore.from_pretrained(clip_dir), images()
    together = reward(imgs, PROMPTS)
    alone = torch.cat([reward(imgs[i : i + 1], PROMPTS[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(reward(imgs, PROMPTS), reward(imgs, PROMPTS[::-1]))


def test_images_are_scored_as_8_bit(clip_dir):
    """Values that round to the same 8-bit pixel score the same: the reward judges the PNG."""
    reward, imgs = ClipReward.from_pretrained(clip_dir), images()
    nudged = (imgs * 255).round() / 255 + 0.3 / 255
    torch.testing.assert_close(reward(imgs, PROMPTS), reward(nudged.clamp(0, 1), PROMPTS))
    assert to_pil(torch.full((1, 3, 2, 2), 0.5))[0].getpixel((0, 0)) == (128, 128, 128)
    with pytest.raises(ValueError, match="one prompt per image"):
        reward(imgs, PROMPTS[:2])


def _to_open_clip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers CLIP -> open_clip key names, written out independently of the converter."""
    out = {}
    for key, v in state.items():
        if key.endswith("position_ids"):
            continue
        k = key
        for tower, oc in (("text_model.encoder.layers.", "transformer.resblocks."), ("vision_model.encoder.layers.", "visual.transformer.resblocks.")):
            if k.startswith(tower):
                rest = k[len(tower):]
                i, sub = rest.split(".", 1)
                if sub.startswith("self_attn.q_proj."):
                    kind = sub.rsplit(".", 1)[1]
                    parts = [state[f"{tower}{i}.self_attn.{p}_proj.{kind}"] for p in "qkv"]
                    out[f"{oc}{i}.attn.in_proj_{kind}"] = torch.cat(parts)
                elif sub.startswith(("self_attn.k_proj.", "self_attn.v_proj.")):
                    pass
                else:
                    sub = (sub.replace("self_attn.out_proj", "attn.out_proj").replace("layer_norm1", "ln_1").replace("layer_norm2", "ln_2")
                           .replace("mlp.fc1", "mlp.c_fc").replace("mlp.fc2", "mlp.c_proj"))
                    out[f"{oc}{i}.{sub}"] = v
                break
        else:
            names = {
                "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
                "text_model.embeddings.position_embedding.weight": "positional_embedding",
                "text_model.final_layer_norm.weight": "ln_final.weight", "text_model.final_layer_norm.bias": "ln_final.bias",
                "logit_scale": "logit_scale", "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
                "vision_model.embeddings.class_embedding": "visual.class_embedding",
                "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
                "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight", "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
                "vision_model.post_layernorm.weight": "visual.ln_post.weight", "vision_model.post_layernorm.bias": "visual.ln_post.bias",
            }
            if key in names:
                out[names[key]] = v
            elif key == "text_projection.weight":
                out["text_projection"] = v.t()
            elif key == "visual_projection.weight":
                out["visual.proj"] = v.t()
            else:
                raise AssertionError(f"unmapped key {key}")
    return out


def test_hpsv2_loads_open_clip_checkpoint(clip_dir, tmp_path):
    """An open_clip-format checkpoint of a (differently seeded) CLIP loads into the folder's
    architecture and scores exactly like the original model."""
    torch.manual_seed(7)
    source = CLIPModel(CLIPModel.from_pretrained(clip_dir).config).eval()
    state = _to_open_clip(source.state_dict())
    assert set(convert_open_clip_state(state)) | {"text_model.embeddings.position_ids", "vision_model.embeddings.position_ids"} >= set(source.state_dict()) - {"text_model.embeddings.position_ids", "vision_model.embeddings.position_ids"}
    folder = tmp_path / "hps"
    build_clip(folder)
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 1}, folder / HPSv2.CHECKPOINT)
    imgs = images()
    reference = ClipReward(source, AutoProcessor.from_pretrained(clip_dir))(imgs, PROMPTS)
    torch.testing.assert_close(HPSv2.from_pretrained(folder)(imgs, PROMPTS), reference, atol=1e-5, rtol=1e-5)
    (folder / HPSv2.CHECKPOINT).unlink()
    with pytest.raises(FileNotFoundError, match="HPS_v2.1_compressed.pt"):
        HPSv2.from_pretrained(folder)


def test_aesthetic_head_from_safetensors_or_pth(clip_dir, tmp_path):
    torch.manual_seed(3)
    head = ScoreHead(16)
    imgs = images()
    base = ClipReward.from_pretrained(clip_dir)
    with torch.no_grad():
        expected = head.eval()(base.image_features(imgs))
    for name in AestheticReward.HEAD_FILES:
        folder = tmp_path / name.replace(".", "_")
        build_clip(folder)
        if name.endswith(".safetensors"):
            save_file(head.state_dict(), str(folder / name))
        else:
            torch.save(head.state_dict(), folder / name)
        got = AestheticReward.from_pretrained(folder)(imgs, ["ignored"] * 3)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(FileNotFoundError, match="aesthetic_head.safetensors"):
        AestheticReward.from_pretrained(clip_dir)


def test_weighted_sum_and_config_forms(clip_dir):
    imgs = images()
    specs = [reward_spec(name="pickscore", path=str(clip_dir), weight=0.5), reward_spec(name="clipscore", path=str(clip_dir), weight=2.0)]
    total = build_reward(specs)
    assert isinstance(total, WeightedReward)
    expected = 0.5 * PickScore.from_pretrained(clip_dir)(imgs, PROMPTS) + 2.0 * ClipReward.from_pretrained(clip_dir)(imgs, PROMPTS)
    torch.testing.assert_close(total(imgs, PROMPTS), expected, atol=1e-5, rtol=1e-5)
    assert set(total.last_means) == {"pickscore", "clipscore"}
    # reward: a name, a mapping, or a list
    assert [r.name for r in load_config(overrides=["reward=shapes"]).reward] == ["shapes"]


def test_reward_errors_name_the_field(clip_dir, tmp_path):
    with pytest.raises(ValueError, match="reward.path"):
        PickScore.from_pretrained(None)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        PickScore.from_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="reward"):
        load_config(overrides=["reward=pickscorez"])
    with pytest.raises(PreflightError, match="prompts='train'"):  # the shapes captions, which a prompt-file reward cannot read
        preflight(load_config(overrides=[f"reward={{name: pickscore, path: {clip_dir}}}"]))
