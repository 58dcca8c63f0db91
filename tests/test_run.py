"""The run skeleton's pieces that do not need an engine: the eval schedule, the log line, and
what a resumed run keeps of metrics.jsonl."""

import json

from solrl.config import load_config
from solrl.run import eval_due, iteration_line
from solrl.run_folder import rows_before


def test_eval_every_skips_the_last_iteration_which_gets_the_final_eval():
    config = load_config(overrides=["train.iterations=6", "eval.every=2"])
    assert [it for it in range(6) if eval_due(config, it)] == [1, 3]
    assert not any(eval_due(load_config(overrides=["train.iterations=6"]), it) for it in range(6))


def test_the_log_line_shows_lag_and_eval_when_the_row_has_them():
    row = {"iteration": 2, "bf16_reward_mean": 0.5, "proxy_reward_mean": 0.25, "spearman": 0.75, "loss": 0.1, "seconds": {"a": 1.0, "b": 2.0}}
    assert iteration_line(row, 5) == "iter 3/5: bf16 reward 0.500 proxy 0.250 rho 0.75 loss 0.1000 (3.0s)"
    row |= {"iteration_seconds": 4.0, "policy_lag": 1, "eval": {"metric": "reward", "reward": 0.7}}
    assert iteration_line(row, 5).endswith("(4.0s, lag 1) eval reward 0.7000")


def test_a_resumed_run_keeps_the_rows_its_checkpoint_holds(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [json.dumps({"iteration": i}) for i in range(4)]
    path.write_text("\n".join(rows) + '\n{"iteration": 4, "lo')  # the kill tore the last line
    assert rows_before(path, 2) == rows[:2]
    assert rows_before(path, 9) == rows
    assert rows_before(tmp_path / "missing.jsonl", 1) == []
