"""The command line on the shipped model: toy eval / grid / pretrain, train --local, and the
shipped weights' provenance."""

import json
import subprocess
import sys

import pytest
from PIL import Image

from solrl.cli import main
from solrl.models.shapes import ShapesModel, shipped_model_path

TINY_RUN = [
    "--set", "rollout.prompts_per_iteration=2", "--set", "rollout.candidates=8", "--set", "selection.k=4",
    "--set", "rollout.explore.steps=2", "--set", "rollout.regenerate.steps=3", "--set", "train.iterations=2",
    "--set", "eval.n=1", "--set", "eval.sampling.steps=3", "--set", "eval.best_of=2", "--set", "eval.grid_rows=2",
]


def _json_out(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_shipped_weights_are_small_and_record_their_provenance():
    path = shipped_model_path()
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    assert size <= 25 * 2**20, size
    meta = json.loads((path / "model_index.json").read_text())["solrl"]
    assert meta["command"].startswith("solrl toy pretrain") and "seed" in meta
    assert 0 <= meta["eval"]["accuracy"] <= 1 and "single_object" in meta["eval"]["per_task"]
    ShapesModel.from_pretrained()  # loads offline from the package


def test_toy_eval_prints_one_json_object(tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\nthree squares\n")
    assert main(["toy", "eval", "--prompts", str(prompts), "--n", "2", "--steps", "4", "--precision", "nvfp4"]) == 0
    result = _json_out(capsys)
    assert set(result) >= {"accuracy", "accuracy_se", "score", "score_se", "preference", "preference_se", "per_task", "images_per_s"}
    assert set(result["per_task"]) == {"colors", "counting"} and result["images"] == 4


def test_toy_grid_writes_a_png(tmp_path):
    out = tmp_path / "grid.png"
    assert main(["toy", "grid", "--out", str(out), "--rows", "3", "--per-caption", "2", "--steps", "3"]) == 0
    image = Image.open(out)
    assert image.size[0] > 100 and image.size[1] > 3 * 32


def test_train_local_then_eval_its_lora(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--local", "--out", str(out), *TINY_RUN]) == 0
    summary = _json_out(capsys)
    assert summary["out"] == str(out) and 0 <= summary["final_accuracy"] <= 1
    assert 0 <= summary["base_preference"] <= summary["best_of_preference"] <= 1 and "preference_gap_closed" in summary
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "config.yaml", "eval.json", "grid.png", "lora", "metrics.jsonl", "report.html"]
    grid = Image.open(out / "grid.png")
    assert grid.size[0] > 2 * 6 * 96 and grid.size[1] > 2 * 96  # two panels of 6 seeds, 2 captions
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    prompts = tmp_path / "p.txt"
    prompts.write_text("a blue square\n")
    assert main(["toy", "eval", "--lora", str(out / "lora"), "--adapter", "policy", "--prompts", str(prompts), "--n", "1", "--steps", "3"]) == 0
    assert _json_out(capsys)["images"] == 1


def test_train_errors_are_clear(capsys):
    assert main(["train", "--local", "--address", "ray://x:10001", *TINY_RUN]) == 2
    assert "drop --local" in capsys.readouterr().err
    assert main(["train", "--local", "--set", "selection.mode=top"]) == 2
    assert "selection.mode = 'top'" in capsys.readouterr().err


def test_pretrain_writes_a_loadable_folder(tmp_path):
    out = tmp_path / "model"
    code = "from solrl.cli import main; raise SystemExit(main(['toy', 'pretrain', '--out', %r, '--steps', '2', '--eval-n', '1']))" % str(out)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    meta = json.loads((out / "model_index.json").read_text())["solrl"]
    assert meta["config"]["steps"] == 2 and meta["command"].startswith("solrl toy pretrain")
    assert "accuracy" in meta["eval"]
    ShapesModel.from_pretrained(out)


def test_unknown_adapter_file_is_named(tmp_path):
    from solrl.runs import load_lora

    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_lora(tmp_path)


def test_a_new_run_into_a_folder_with_files_is_refused_before_anything_starts(tmp_path, capsys):
    import ray

    (tmp_path / "notes.txt").write_text("someone's work")
    assert main(["train", "--out", str(tmp_path), *TINY_RUN]) == 2
    err = capsys.readouterr().err
    assert f"--out {tmp_path} is not an empty folder" in err and f"--resume {tmp_path}" in err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"] and not ray.is_initialized()


def _checkpointed_run(tmp_path, *overrides):
    import torch

    from solrl.config import load_config
    from solrl.learner.checkpoint import save_checkpoint

    config = load_config(overrides=list(overrides))
    save_checkpoint(tmp_path, 2, {"x": torch.zeros(2)}, {"iteration": 2, "config": config.model_dump(mode="json")})
    return tmp_path


def test_resume_refuses_a_damaged_checkpoint_or_another_config_before_anything_starts(tmp_path, capsys):
    import ray

    run = _checkpointed_run(tmp_path / "run", "train.optim.lr=0.001")
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    assert main(["train", "--resume", str(run), "--set", "train.iterations=5"]) == 2
    err = capsys.readouterr().err
    assert "the config differs from checkpoint step-000002's in train.optim.lr: 0.001 -> 0.0003" in err and "config.yaml" in err
    (run / "checkpoints" / "step-000002" / "manifest.json").write_text("[]")
    assert main(["train", "--resume", str(run), "--set", "train.optim.lr=0.001"]) == 2
    assert "must map file names to sha256 digests" in capsys.readouterr().err
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before and not ray.is_initialized()


def test_resume_may_change_the_layout_and_length_but_nothing_else(tmp_path):
    from solrl.config import load_config
    from solrl.run_folder import check_run_folder

    run = _checkpointed_run(tmp_path, "train.iterations=4")
    same = load_config(overrides=["train.iterations=9", "cluster.rollout_workers=5", "train.max_seconds=60"])
    check_run_folder(run, run, same)  # no error
