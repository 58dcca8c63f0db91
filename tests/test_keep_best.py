"""train.keep_best (issue 29 item 2), and benchmarks/fresh_peaks.py, which measures a run's kept
or rerun peak again on fresh seeds, on the same two tiny local runs: one of 4 iterations evaluated
after each, whose learning rate (0.1) wrecks the policy after its first step, and the same run
stopped after 1 iteration."""

import json
import pathlib
import shutil
import sys

import pytest
import torch
from tiny_runs import TINY_RUN, rows_of

from solrl.config import load_config
from solrl.evaluation import validation_prompts
from solrl.local_run import LocalRun
from solrl.runs import load_lora

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(sets, the 4-iteration run's folder and report, the 1-iteration run's folder and report)."""
    root = tmp_path_factory.mktemp("keep-best")
    prompts = root / "eval.txt"
    prompts.write_text("a red circle\n")
    sets = [*TINY_RUN, f"eval.prompts={prompts}", "eval.grid_rows=0", "eval.every=1", "cluster.checkpoint_every=1", "train.optim.lr=0.1"]
    whole, one = root / "whole", root / "one"
    report = LocalRun(load_config(overrides=[*sets, "train.iterations=4"]), whole, log=lambda _: None).run()
    first = LocalRun(load_config(overrides=[*sets, "train.iterations=1", "train.keep_best=false"]), one, log=lambda _: None).run()
    return sets, whole, report, one, first


def same_adapters(a: pathlib.Path, b: pathlib.Path, which: str) -> bool:
    x, y = load_lora(a, which)[0], load_lora(b, which)[0]
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_keep_best_keeps_the_adapters_of_the_best_validation_eval_across_a_resume(runs, tmp_path):
    """lora/ holds the adapters of the eval with the best mean reward on the validation captions
    (none of them an eval caption), which are those of the one-iteration run, lora/last/ the last
    ones, and the final eval reports the kept ones. The best so far travels in each checkpoint: a
    run resumed from the third keeps the same adapters, bit for bit."""
    sets, whole, report, one, first = runs
    config = load_config(overrides=[*sets, "train.iterations=4"])
    assert config.keeps_best and not set(validation_prompts(config)) & {"a red circle"}
    rows = rows_of(whole)
    assert [r["iteration"] for r in rows if "validation" in r] == [0, 1, 2]  # the last one's is the final eval's
    figures = [r["validation"]["reward"] for r in rows if "validation" in r] + [report["kept"]["last_validation_reward"]]
    assert figures[0] > max(figures[1:]), figures  # the run this test is about: it falls after its first step
    assert report["kept"] == {"iteration": 1, "validation_reward": figures[0], "last_validation_reward": figures[3]}
    assert json.loads((whole / "lora" / "adapter_config.json").read_text())["kept"] == {"iteration": 1, "validation_reward": figures[0]}
    assert all(same_adapters(whole / "lora", one / "lora", which) for which in ("policy", "old", "ema"))
    assert report["final_eval"] == first["final_eval"] | {"images_per_s": report["final_eval"]["images_per_s"]}  # the kept EMA's figures
    assert not same_adapters(whole / "lora", whole / "lora" / "last", "ema") and "final_eval_last" in report
    resumed = tmp_path / "resumed"
    shutil.copytree(whole, resumed)
    again = LocalRun(config, resumed, log=lambda _: None).run(resume=resumed / "checkpoints" / "step-000003")  # the oldest one kept
    assert again["kept"] == report["kept"]
    for folder in ("lora", "lora/last"):
        assert all(same_adapters(whole / folder, resumed / folder, which) for which in ("policy", "old", "ema")), folder


def test_fresh_peaks_finds_the_peaks_adapters_checks_them_against_the_run_and_measures_them_again(runs, tmp_path):
    """benchmarks/fresh_peaks.py on a copy of the 4-iteration run, its peak set by hand (the peak is
    read off 'accuracy'; the checks and differences read each caption's accuracy and the means): at
    the kept eval, lora/ holds it; elsewhere it is nowhere until a rerun stopped there is given,
    which must have retraced the run. The adapters found give the run's recorded evals on its own
    seeds, so measured again on those, end - peak is the recorded one; adapters that are not the
    run's are refused."""
    from fresh_peaks import Evaluator, adapter_folders, measure

    _, whole, _, one, _ = runs
    run, reruns = tmp_path / "runs" / "r", tmp_path / "reruns"
    shutil.copytree(whole, run)

    def peak_at(iteration: int) -> None:
        rows = rows_of(whole)
        rows[iteration - 1]["eval"]["accuracy"] = 2.0
        (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")

    peak_at(1)  # the kept one
    assert adapter_folders(run, None) == (run / "lora", run / "lora" / "last")
    config = load_config(run / "config.yaml")
    own = measure(run, None, Evaluator(config.eval.seed, config.eval.n))
    assert (own["peak_iteration"], own["end_iteration"], own["peak_from"], own["fresh_n"]) == (1, 4, str(run / "lora"), config.eval.n)
    assert (own["fresh_end_minus_peak"], own["fresh_paired_se"]) == (own["own_end_minus_peak"], own["own_paired_se"])
    assert own["fresh_base_accuracy"] == own["own_base_accuracy"]
    peak_at(2)
    assert "the peak (iteration 2) was not kept: rerun it with train.iterations=2" in adapter_folders(run, reruns)
    peak_at(1)
    final = json.loads((run / "eval.json").read_text())
    (run / "eval.json").write_text(json.dumps(final | {"kept": final["kept"] | {"iteration": 3}}))  # as if validation had chosen the third
    shutil.copytree(one, reruns / "r")
    assert adapter_folders(run, reruns) == (reruns / "r" / "lora", run / "lora" / "last")
    fresh = measure(run, reruns, Evaluator(99, 3))
    assert (fresh["fresh_seed"], fresh["fresh_n"], fresh["own_end_minus_peak"]) == (99, 3, own["own_end_minus_peak"])
    shutil.copy(one / "lora" / "ema.safetensors", run / "lora" / "last")  # the end's folder now holds the peak's EMA
    with pytest.raises(RuntimeError, match="the end's adapters in .* do not give the end's recorded eval"):
        measure(run, reruns, Evaluator(99, 3))
    final = json.loads((reruns / "r" / "eval.json").read_text())
    final["final_eval"]["score"] += 0.01
    (reruns / "r" / "eval.json").write_text(json.dumps(final))
    assert "did not retrace the run" in adapter_folders(run, reruns)
