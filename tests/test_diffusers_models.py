"""SD3.5, FLUX.1 and SANA policies on tiny random-config pipelines saved as diffusers folders:
each loads through `from_pretrained`, runs a full single-process Sol-RL iteration on CPU with a
CLIP-family reward, and exports a LoRA that diffusers' own `load_lora_weights` reproduces."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import DiffusionPipeline

from solrl.config import ConfigError, load_config
from solrl.local_run import LocalRun
from solrl.models.base import POLICY, LoraSpec
from solrl.models.diffusers_models import POLICIES
from solrl.models.lora_export import WEIGHT_NAME, export_diffusers_lora
from tiny_pipelines import BUILDERS, build_clip

KINDS = ["sd3", "flux", "sana"]
TARGETS = {
    "sd3": ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.to_add_out"],
    "flux": ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.to_add_out"],
    "sana": ["to_q", "to_k", "to_v", "to_out.0"],
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipelines")
    return {kind: BUILDERS[kind](root / kind) for kind in KINDS} | {"clip": build_clip(root / "clip")}


def load(kind, folder, **options):
    return POLICIES[kind].from_pretrained(folder, lora=LoraSpec(rank=4, alpha=8.0, target_modules=TARGETS[kind]), resolution=32, **options)


@pytest.mark.parametrize("kind", KINDS)
def test_full_sol_rl_iteration(kind, folders, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red apple\na photo of a cat\n# comment\nan oil painting of a lighthouse\n")
    overrides = [
        f"model={{kind: {kind}, path: {folders[kind]}, resolution: 32, lora: {{rank: 4, alpha: 8, target_modules: {json.dumps(TARGETS[kind])}}}}}",
        f"reward={{name: pickscore, path: {folders['clip']}}}",
        f"prompts={prompts}", f"eval.prompts={prompts}", "prompt_sampling=uniform", "eval.n=2", "eval.sampling.steps=2",
        "rollout.prompts_per_iteration=2", "rollout.candidates=6", "selection.k=4",
        "rollout.explore.steps=2", "rollout.regenerate.steps=3", "train.iterations=1",
    ]
    config = load_config(overrides=overrides)
    run = LocalRun(config, tmp_path / "run", log=lambda _: None)
    before = run.policy.adapter_state(POLICY)
    report = run.run()
    assert report["base_eval"]["metric"] == "reward" and report["iterations"] == 1
    assert torch.isfinite(torch.tensor(report["final_eval"]["reward"]))
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["candidates"] == 12 and row["regenerated"] == 8 and row["bf16_reward_std"] > 0
    after = run.policy.adapter_state(POLICY)
    assert any(not torch.equal(before[k], after[k]) for k in before), "the LoRA did not move"
    assert (tmp_path / "run" / "lora" / "diffusers" / WEIGHT_NAME).is_file()


@pytest.mark.parametrize("kind", KINDS)
def test_exported_lora_loads_in_diffusers(kind, folders, tmp_path):
    """The diffusers pipeline with our exported LoRA computes the policy's velocity."""
    policy = load(kind, folders[kind])
    torch.manual_seed(1)
    state = {k: torch.randn_like(v) * 0.1 for k, v in policy.adapter_state(POLICY).items()}
    policy.load_adapter_state(state, POLICY)
    export_diffusers_lora(tmp_path / "lora", state, policy.lora, kind)
    pipe = DiffusionPipeline.from_pretrained(folders[kind], local_files_only=True)
    pipe.load_lora_weights(tmp_path / "lora")
    x = torch.randn(2, *policy.sample_shape)
    t = torch.tensor([0.3, 0.8])
    cond = policy.encode_prompts(["a cat", "a dog"])
    with torch.no_grad():
        ours = policy.velocity(x, t, cond, adapter=POLICY)
        theirs = policy._forward(pipe.transformer, x, t, cond)
        base = policy.velocity(x, t, cond, adapter=None)
    assert (ours - base).abs().max() > 1e-3, "the adapter should change the output"
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_conditioning_cache_and_pipeline_encoding(kind, folders):
    policy = load(kind, folders[kind])
    first = policy.encode_prompts(["a cat", "a dog", "a cat"])
    assert len(policy._cache) == 2
    torch.testing.assert_close(first.select([0]).tensors, first.select([2]).tensors)
    again = policy.encode_prompts(["a dog"])
    torch.testing.assert_close(again.tensors, first.select([1]).tensors)
    # the cache holds what the pipeline's own encoder gives for the prompt alone
    fresh = policy._encode(["a dog"])
    for key in again.tensors:
        torch.testing.assert_close(again[key], fresh[key].to(again[key].dtype))


@pytest.mark.parametrize("kind", KINDS)
def test_quantized_copy_follows_skip_rules(kind, folders):
    from fnmatch import fnmatch

    policy = load(kind, folders[kind])
    report = policy.inference_copy("nvfp4").quant_report
    assert report.quantized, "some GEMMs must be quantized"
    for name in report.quantized:
        assert not any(fnmatch(name, p) for p in policy.quant_skip_patterns), name
    images = policy.decode(torch.randn(2, *policy.sample_shape))
    assert images.shape == (2, 3, 32, 32) and 0 <= images.min() and images.max() <= 1


def test_sana_complex_human_instruction_changes_conditioning(folders):
    with_chi = load("sana", folders["sana"]).encode_prompts(["a cat"])
    without = load("sana", folders["sana"], complex_human_instruction=False).encode_prompts(["a cat"])
    assert with_chi["encoder_hidden_states"].shape == without["encoder_hidden_states"].shape
    assert not torch.allclose(with_chi["encoder_hidden_states"], without["encoder_hidden_states"])


def test_errors_name_field_and_fix(folders, tmp_path):
    with pytest.raises(ConfigError, match="model.path"):
        load_config(overrides=["model.kind=flux"])
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        POLICIES["sd3"].from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model.resolution=34"):
        POLICIES["flux"].from_pretrained(folders["flux"], resolution=34)


@pytest.mark.parametrize("name", ["sd35", "flux1", "sana"])
def test_shipped_configs_validate(name):
    from solrl.config import shipped_config

    config = load_config(shipped_config(name))
    assert config.rollout.candidates == 96 and config.selection.k == 24 and config.rollout.prompts_per_iteration == 48
    assert config.rollout.explore.steps == 6 and config.rollout.regenerate.steps == 10
    assert config.model.lora.rank == 32 and config.model.lora.alpha == 64 and config.train.optim.lr == 3e-4
    assert config.rollout.quant.skip.name_patterns
    # the Sol-RL reference's nvfp4_min_dim per model (SD3.5-L, FLUX.1, SANA-1.6B's width)
    assert config.rollout.quant.skip.min_dim == {"sd35": 2432, "flux1": 1000, "sana": 2240}[name]
    assert config.rollout.explore.solver == ("euler" if name == "sana" else "dpm2")
