"""The single-process Sol-RL loop end to end on a small random ShapesModel, and the model folder."""

import json
import shutil

import pytest
import torch
from tiny_runs import TINY_RUN, rows_of

from solrl.config import load_config
from solrl.evaluation import prompt_order
from solrl.local_run import LocalRun
from solrl.models.base import POLICY, LoraSpec
from solrl.models.shapes import ShapesArchitecture, ShapesModel
from solrl.runs import PromptOrder, load_lora, make_groups
from solrl.toy.captions import all_captions

WORDS = sorted({w for caps in all_captions().values() for c in caps for w in c.split()})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("shapes-model")
    model = ShapesModel.from_scratch(ShapesArchitecture(patch_size=4, layers=1, heads=2, head_dim=16, text_dim=32, text_layers=1), WORDS)
    model.save_pretrained(path, {"note": "random weights for tests"})
    return path


def test_model_folder_round_trip(model_dir):
    index = json.loads((model_dir / "model_index.json").read_text())
    assert index["transformer"] == ["diffusers", "SD3Transformer2DModel"] and index["solrl"]["note"]
    a = ShapesModel.from_pretrained(model_dir, lora=LoraSpec(rank=2, alpha=4))
    b = ShapesModel.from_pretrained(model_dir, lora=LoraSpec(rank=2, alpha=4))
    x, t = torch.randn(2, 3, 32, 32), torch.full((2,), 0.5)
    cond = a.encode_prompts(["a red circle", "two squares"])
    assert torch.equal(a.velocity(x, t, cond), b.velocity(x, t, cond))
    tokens = a.tokenizer.encode("a red circle").tokens
    assert tokens[:5] == ["[BOS]", "a", "red", "circle", "[EOS]"]
    assert a.tokenizer.encode("a zebra").tokens[2] == "[UNK]"
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        ShapesModel.from_pretrained(model_dir / "transformer")


@pytest.mark.parametrize("which", ["from scratch", "shipped"])
def test_pooled_text_vector_reads_the_whole_caption(which, model_dir):
    """CLIP pools at [EOS]: the pooled vector depends on a caption's last word (with [EOS] = 2,
    transformers pooled at the highest token id, and "a triangle and a square" / "... a circle"
    got one vector)."""
    model = ShapesModel.from_pretrained(None if which == "shipped" else model_dir)
    eos = model.tokenizer.token_to_id("[EOS]")
    assert model.text_encoder.config.eos_token_id == eos == model.tokenizer.get_vocab_size() - 1
    for a, b in [("a triangle and a square", "a triangle and a circle"), ("a red circle", "a red square"), ("a circle", "a square")]:
        pooled = model.encode_prompts([a, b])["pooled_projections"]
        assert not torch.allclose(pooled[0], pooled[1], atol=1e-4), (a, b)


def test_a_text_encoder_that_pools_elsewhere_is_refused(model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    config = json.loads((broken / "text_encoder" / "config.json").read_text())
    (broken / "text_encoder" / "config.json").write_text(json.dumps(config | {"eos_token_id": 2}))
    with pytest.raises(ValueError, match="eos_token_id=2.*re-pretrain"):
        ShapesModel.from_pretrained(broken)


def _stream(order: PromptOrder, n: int) -> list[int]:
    return [order.take(1)[0] for _ in range(n)]


def test_prompt_order_visits_every_prompt_once_per_epoch():
    order = PromptOrder(7, seed=3)
    first, second = order.take(7), order.take(7)
    assert sorted(first) == sorted(second) == list(range(7)) and first != second
    assert _stream(PromptOrder(7, seed=3), 14) == first + second


def test_prompt_order_by_stratum_balances_tasks():
    strata = ["big"] * 9 + ["small"] * 1 + ["mid"] * 3
    order = PromptOrder(len(strata), seed=0, strata=strata)
    drawn = _stream(order, 30)
    counts = {label: sum(strata[i] == label for i in drawn) for label in ("big", "small", "mid")}
    assert counts == {"big": 10, "small": 10, "mid": 10}
    big = [i for i in drawn if strata[i] == "big"]
    assert sorted(big[:9]) == list(range(9))  # each stratum walks its whole cycle before repeating
    assert _stream(PromptOrder(len(strata), seed=0, strata=strata), 30) == drawn


@pytest.mark.parametrize("strata", [None, ["big"] * 9 + ["small"] * 1 + ["mid"] * 3])
def test_an_iterations_prompts_are_distinct(strata):
    # 13 prompts, 5 an iteration: epochs (or a stratum's one-prompt cycle) end mid-iteration;
    # a repeated prompt would be two groups with one id and the same seeds
    order = PromptOrder(13, seed=1, strata=strata)
    for _ in range(40):
        assert len(set(order.take(5))) == 5
    with pytest.raises(ValueError, match="14 distinct prompts from 13"):
        order.take(14)


def test_prompts_per_iteration_above_the_prompt_count_is_refused(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\ntwo squares\n")
    config = load_config(overrides=[f"prompts={prompts}", "rollout.prompts_per_iteration=3"])
    with pytest.raises(ValueError, match=r"rollout.prompts_per_iteration=3 is more than the 2 prompts.*at most 2"):
        make_groups(config, ["a red circle", "two squares"], prompt_order(config, ["a red circle", "two squares"]), 0, 0)


def test_local_run_end_to_end(model_dir, tmp_path):
    prompts = tmp_path / "eval.txt"
    prompts.write_text("a red circle\ntwo squares\n")
    config = load_config(
        overrides=[
            f"model.path={model_dir}",
            "model.lora={rank: 2, alpha: 4}",
            "rollout.prompts_per_iteration=2",
            "rollout.candidates=6",
            "rollout.explore.steps=2",
            "rollout.regenerate.steps=3",
            "selection.k=4",
            "train.iterations=2",
            f"eval.prompts={prompts}",
            "eval.n=2",
            "eval.sampling.steps=2",
        ]
    )
    out = tmp_path / "run"
    report = LocalRun(config, out, log=lambda _: None).run()
    rows = rows_of(out)
    assert [r["iteration"] for r in rows] == [0, 1] and [r["version"] for r in rows] == [1, 2]
    for r in rows:
        assert r["candidates"] == 12 and r["regenerated"] == 8
        assert set(r["seconds"]) == {"explore", "select", "regenerate", "learn", "sync"}
        assert -1 <= r["spearman"] <= 1 or r["spearman"] != r["spearman"]  # NaN when rewards tie
        assert r["loss"] > 0
    assert (out / "config.yaml").is_file()
    assert load_config(out / "config.yaml") == config
    saved = json.loads((out / "eval.json").read_text())
    assert saved["final_eval"]["images"] == 4 and set(saved["base_eval"]["per_task"]) == {"colors", "counting"}
    assert report["improvement"] == saved["improvement"]
    # the base eval draws best_of seeds per caption, its first n being the eval's own
    base = saved["base_eval"]
    assert base["images"] == 2 * 32 and base["best_of"]["n"] == 32 and base["best_of"]["preference"] >= base["preference"]
    for result in (base, saved["final_eval"], saved["final_eval_policy"]):
        assert all(result[f"{k}_se"] >= 0 for k in ("accuracy", "score", "preference"))
    assert {"preference_gap_closed", "preference_gap_closed_policy", "accuracy_change", "accuracy_change_se"} <= set(saved)
    # the change is the stratified mean of the per-caption differences: the same as the accuracies'
    assert abs(saved["accuracy_change"] - (saved["final_eval"]["accuracy"] - base["accuracy"])) <= 1e-3
    assert (out / "grid.png").is_file() and (out / "report.html").is_file()
    # modeled GPU cost in BF16 calls: 12 candidates x 2 NVFP4 explore steps, 8 samples x 3 regeneration
    # steps, 8 x round(0.6 x 3) = 2 training times x 5; the base eval (64 images x 2 steps) joins row 0
    nvfp4 = 1 / 2.16
    assert rows[1]["modeled_cost"] == pytest.approx({"explore": 24 * nvfp4, "regenerate": 24, "train": 80, "eval": 0}, abs=1e-3)
    assert rows[0]["modeled_cost"]["eval"] == 128 and rows[1]["modeled_cost_total"]["all"] == pytest.approx(2 * (24 * nvfp4 + 104) + 128, abs=1e-2)
    # the final EMA and policy evals (4 images x 2 steps each) join the run's total
    assert saved["modeled_cost"]["eval"] == 128 + 16 and saved["modeled_cost"]["all"] == pytest.approx(rows[1]["modeled_cost_total"]["all"] + 16, abs=1e-2)
    state, spec = load_lora(out / "lora", "policy")
    assert spec.rank == 2 and state.keys() == ShapesModel.from_pretrained(model_dir, lora=spec).adapter_state(POLICY).keys()
    b_moved = any(v.abs().sum() > 0 for k, v in state.items() if "lora_B" in k)
    if all(r["bf16_reward_std"] == 0 for r in rows):
        # A random model earns the same reward everywhere: every advantage is 0, r = 0.5, and the
        # v+ / v- gradients cancel exactly, so the adapter's B stays at its zero init.
        assert not b_moved
    else:
        assert b_moved


def test_a_local_run_resumed_from_its_checkpoint_equals_the_uninterrupted_run(model_dir, tmp_path):
    """Two iterations, then --resume to three (solrl.run.Checkpoints): the same LoRA bit for bit and
    the same metrics as three iterations in one go."""
    prompts = tmp_path / "eval.txt"
    prompts.write_text("a red circle\n")
    # the shipped shapes model: its rewards differ between seeds, so every step moves the adapters
    sets = [*TINY_RUN, f"eval.prompts={prompts}", "eval.grid_rows=0"]
    whole = LocalRun(load_config(overrides=[*sets, "train.iterations=3"]), tmp_path / "whole", log=lambda _: None).run()
    LocalRun(load_config(overrides=[*sets, "train.iterations=2"]), tmp_path / "split", log=lambda _: None).run()
    assert sorted(p.name for p in (tmp_path / "split" / "checkpoints").iterdir()) == ["step-000001", "step-000002"]
    lines = []
    resumed = LocalRun(load_config(overrides=[*sets, "train.iterations=3"]), tmp_path / "split", log=lines.append).run(resume=tmp_path / "split")
    assert "resuming from step 2 (iteration 2)" in lines
    assert all(r["grad_norm"] > 0 for r in rows_of(tmp_path / "whole"))
    for which in ("policy", "ema"):
        a, _ = load_lora(tmp_path / "whole" / "lora", which)
        b, _ = load_lora(tmp_path / "split" / "lora", which)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), which
    rows = [rows_of(tmp_path / run) for run in ("whole", "split")]
    # timings differ, and the resumed run's total also holds the base eval it ran again
    same = lambda r: json.dumps({k: v for k, v in r.items() if k not in ("seconds", "elapsed", "modeled_cost", "modeled_cost_total")})  # noqa: E731
    assert [same(r) for r in rows[0]] == [same(r) for r in rows[1]]
    assert resumed["final_eval"] == whole["final_eval"] | {"images_per_s": resumed["final_eval"]["images_per_s"]}


def test_updates_per_iteration_steps_once_per_share_of_groups(model_dir, tmp_path):
    prompts = tmp_path / "eval.txt"
    prompts.write_text("a red circle\n")
    config = load_config(
        overrides=[
            f"model.path={model_dir}",
            "model.lora={rank: 2, alpha: 4}",
            "rollout.prompts_per_iteration=3",
            "rollout.candidates=4",
            "rollout.explore.steps=2",
            "rollout.regenerate.steps=2",
            "selection.k=2",
            "train.iterations=1",
            "train.updates_per_iteration=2",
            f"eval.prompts={prompts}",
            "eval.n=1",
            "eval.sampling.steps=2",
        ]
    )
    LocalRun(config, tmp_path / "run", log=lambda _: None).run()
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert row["version"] == 2 and row["regenerated"] == 6


def test_train_batch_splits_into_whole_groups():
    from solrl.models.base import Conditioning
    from solrl.types import TrainBatch

    groups = torch.tensor([5, 5, 2, 2, 9, 9, 7, 7])
    batch = TrainBatch(
        torch.arange(8.0).view(8, 1), Conditioning({"c": torch.arange(8.0).view(8, 1)}), torch.rand(8), groups, torch.arange(8), 3
    )
    parts = batch.split_by_group(3)
    assert [p.groups.tolist() for p in parts] == [[5, 5], [2, 2], [9, 9, 7, 7]]
    assert parts[2].x0.view(-1).tolist() == parts[2].cond.tensors["c"].view(-1).tolist() == [4, 5, 6, 7]
    assert all(p.version == 3 for p in parts)
    with pytest.raises(ValueError, match="cannot split 4 prompt groups into 5"):
        batch.split_by_group(5)
