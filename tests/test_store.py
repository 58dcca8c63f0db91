"""CandidateStore: Arrow tables per open group, a Parquet log of every candidate, duplicates ignored."""

import pytest

from solrl.workers.selector import Selector
from solrl.workers.store import CandidateStore, read_log
from solrl.config import SelectionConfig
from solrl.types import Candidates, PromptGroup


def _candidates(prompt_id: int, iteration: int = 0, n: int = 6, version: int = 0) -> Candidates:
    group = PromptGroup(prompt_id, f"prompt {prompt_id}", tuple(range(100 * prompt_id, 100 * prompt_id + n)), iteration, version)
    return Candidates(group, tuple(float(i % 4) / 4 for i in range(n)), version, seconds=1.2)


def test_groups_flow_from_explore_to_the_parquet_log(tmp_path):
    store = CandidateStore(tmp_path / "log")
    selector = Selector(SelectionConfig(mode="best_worst", k=2))
    a, b = _candidates(1), _candidates(2, version=1)
    assert store.add(a, "rollout-0") and store.add(b, "rollout-1")
    assert store.table((0, 1)).num_rows == 6 and store.table((0, 1)).column("explore_worker")[0].as_py() == "rollout-0"
    sel = selector.choose(a)
    assert len(sel.seeds) == 2 and sorted(sel.proxy_rewards) == [0.0, 0.75]
    store.record_regenerated(sel, [0.5, 0.25], "regen-0")
    store.close((0, 1), "trained")
    store.close((0, 2), "dropped")
    assert store.flush().name == "part-00000.parquet" and store.flush() is None
    log = read_log(tmp_path / "log").to_pylist()
    assert len(log) == 12
    regenerated = [r for r in log if r["bf16_reward"] is not None]
    assert {r["seed"]: r["bf16_reward"] for r in regenerated} == dict(zip(sel.seeds, [0.5, 0.25]))
    assert all(r["regen_worker"] == "regen-0" for r in regenerated)
    assert {(r["prompt_id"], r["status"], r["policy_version"]) for r in log} == {(1, "trained", 0), (2, "dropped", 1)}
    assert abs(log[0]["explore_seconds"] - 0.2) < 1e-9


def test_a_group_arriving_twice_is_ignored_and_counted(tmp_path):
    store = CandidateStore(tmp_path)
    assert store.add(_candidates(3), "rollout-0")
    assert not store.add(_candidates(3), "rollout-1")  # a re-queued copy, still open
    store.close((0, 3), "trained")
    assert not store.add(_candidates(3), "rollout-1")  # ... or already trained
    assert store.add(_candidates(3, iteration=1), "rollout-1")  # the same prompt in a later iteration is new
    assert store.duplicates == 2


def test_bad_input_is_refused():
    store = CandidateStore()
    group = PromptGroup(0, "p", (1, 2, 3), 0, 0)
    with pytest.raises(ValueError, match="3 seeds but 2 rewards"):
        store.add(Candidates(group, (0.1, 0.2), 0, 0.0), "w")
    store.add(_candidates(4), "w")
    with pytest.raises(ValueError, match="status 'done' is unknown"):
        store.close((0, 4), "done")
    assert read_log("/nonexistent").num_rows == 0


def test_a_resumed_log_drops_the_parts_written_after_its_checkpoint(tmp_path):
    store = CandidateStore(tmp_path)
    for it in range(3):
        store.add(_candidates(1, iteration=it), "rollout-0")
        store.close((it, 1), "trained")
        store.flush()
    (tmp_path / "part-00003.tmp").write_bytes(b"torn")  # a write the kill interrupted
    resumed = CandidateStore(tmp_path)
    resumed.truncate(2)  # the checkpoint was taken after two parts
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    resumed.add(_candidates(1, iteration=2), "rollout-1")
    resumed.close((2, 1), "trained")
    assert resumed.flush().name == "part-00002.parquet"
    log = read_log(tmp_path).to_pylist()
    assert [r["iteration"] for r in log] == [0] * 6 + [1] * 6 + [2] * 6 and log[-1]["explore_worker"] == "rollout-1"
