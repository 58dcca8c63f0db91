"""The in-batch explore audit (rollout.precision_control.in_batch): the audit seeds take training
slots, so the audit regenerates nothing of its own. The selection that keeps them, the schedule
that decides before the selection, and both engines' runs."""

import math

import pytest
from tiny_runs import TINY_RUN, rows_of

from solrl.audit_schedule import AuditSchedule, free_figure
from solrl.config import ConfigError, load_config
from solrl.precision_control import PrecisionControl, audit_seeds
from solrl.selection import select


def test_the_selection_keeps_the_given_candidates_and_picks_the_rest_by_its_mode():
    rewards = [0.5, 0.9, 0.1, 0.7, 0.3, 0.8, 0.2, 0.6]
    assert select(rewards, 4, keep=[3, 0]).indices == [3, 0, 1, 2]  # kept first, then the best and the worst of the others
    assert select(rewards, 4, keep=[1]).indices == [1, 5, 3, 2]  # best_worst picks the other three: two best, one worst
    assert select([math.nan, 0.2, 0.4, 0.1], 2, keep=[0, 2]).indices == [2, 1]  # a non-finite reward is never kept
    drawn = select(rewards, 4, "random", seed=3, keep=[4]).indices
    assert drawn[0] == 4 and len(set(drawn)) == 4
    with pytest.raises(ValueError, match="3 candidates to keep exceed selection.k=2"):
        select(rewards, 2, keep=[0, 1, 2])


def test_the_decision_comes_from_the_figures_lag_iterations_before_the_previous_one():
    """At lag 1 iteration i is decided from the free figures through i - 2: the newest the
    distributed run holds when i's first group is selected. Its own figure may come later."""
    config = PrecisionControl(ladder=["nvfp4", "fp8_e4m3", "bf16"], sentinel=0.6, sentinel_window=1, in_batch=True)
    schedule = AuditSchedule(config, lag=1)
    assert schedule.audits(0, "nvfp4") and schedule.audits(1, "nvfp4")  # nothing recorded that far back: audit
    schedule.record(0, 0.7)
    assert not schedule.audits(2, "nvfp4") and schedule.figures(2) == {"sentinel": 0.7, "free": None}
    schedule.record(1, 0.4)
    schedule.record(2, 0.9)  # iteration 3 is decided before this figure counts
    assert schedule.audits(3, "nvfp4") and schedule.figures(3) == {"sentinel": 0.4, "free": None} and schedule.figures(2)["free"] == 0.9
    assert schedule.audits(4, "fp8_e4m3") and not schedule.audits(4, "nvfp4")  # above the cheapest rung: always
    resumed = AuditSchedule(config, lag=1)
    resumed.load_state(schedule.state(2))  # a checkpoint after iteration 2 holds the window iteration 3 is decided on
    assert resumed.figures(3) == schedule.figures(3)
    # an audited group's figure leaves its audit seeds out: random seeds would pull it down
    assert free_figure((1, 2, 3, 4), (0.1, 0.2, 0.3, 0.4), (0.1, 0.2, 0.4, 0.3), leave_out=(4,)) == pytest.approx(1.0)
    assert free_figure((1, 2, 3, 4), (0.1, 0.2, 0.3, 0.4), (0.1, 0.2, 0.4, 0.3)) == pytest.approx(0.8)


def test_an_audit_larger_than_the_training_slots_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"rollout.precision_control.audit=4 exceeds selection.k=2 with in_batch"):
        load_config(overrides=["rollout.precision_control={audit: 4, in_batch: true}", "selection.k=2", "rollout.candidates=8"])


def test_the_distributed_desk_has_the_selection_keep_the_drawn_seeds_and_regenerates_nothing():
    from solrl.cluster.audit_desk import AuditDesk
    from solrl.types import Candidates, PromptGroup
    from solrl.workers.selector import Selector

    class Queue:  # what the desk hands the dispatcher
        def __init__(self):
            self.jobs = []

        def put(self, stage, work):
            self.jobs.append((stage, work[0]))

    config = load_config(overrides=["rollout.precision_control={audit: 3, in_batch: true}", "selection.k=4", "rollout.candidates=8"])
    desk, queue = AuditDesk(config, log=lambda _: None), Queue()
    desk.attach(queue, rollout=None)
    group = PromptGroup(0, "a red circle", tuple(range(10, 18)), 0, 0)
    candidates = Candidates(group, (0.1, 0.9, 0.3, 0.5, 0.2, 0.8, 0.4, 0.6), 0, 1.0)
    desk.explored_at([candidates], "nvfp4")
    kept = desk.kept(candidates)
    assert kept == audit_seeds(group.seeds, 3, (config.seed, 0, 0))
    sel = Selector(config.selection).choose(candidates, kept)
    assert sel.seeds[:3] == kept and len(sel.seeds) == 4
    desk.selected(sel, candidates)
    assert not queue.jobs  # every drawn seed is trained on: nothing to regenerate, and no preview at the cheapest rung
    rewards = [0.4, 0.3, 0.2, 0.1]
    desk.regenerated(sel, rewards)
    desk.decide(0)
    audit = desk.closing(0)
    assert audit.done and desk.settled(0)
    figures = audit.report()
    assert figures["regenerated"] == 0 and figures["groups"] == 1 and figures["free"] is None  # one seed left out of the audit: undefined


def _in_batch_rows(rows: list[dict], threshold: float, lag: int) -> None:
    """What every in-batch run's rows show: an iteration is audited where the free figure lag + 1
    iterations back is below `threshold` (or there is none), and an audit regenerates nothing."""
    for i, r in enumerate(rows):
        a = r["audit"]
        back = rows[i - 1 - lag]["audit"]["free"] if i > lag else None
        assert a["sentinel"] == back, (i, a)
        assert ("spearman" in a) == (back is None or back < threshold), (i, a)
        assert a.get("regenerated", 0) == 0
        if "spearman" not in a:
            assert a["free"] == pytest.approx(r["spearman"], abs=1e-3)  # unaudited: the selected seeds' own figure
    regenerate = {r["modeled_cost"]["regenerate"] for r in rows}
    assert len(regenerate) == 1, regenerate  # audited or not, an iteration regenerates what it trains and no more


def test_the_one_process_run_audits_in_the_batch_and_resumes_deciding_alike(tmp_path):
    """The local run at lag 1 with a sentinel between the figures a fully audited run logged: both
    kinds of iteration occur, and a run resumed after iteration 2 makes the same decisions."""
    from solrl.local_run import LocalRun

    prompts = tmp_path / "eval.txt"
    prompts.write_text("a red circle\n")
    sets = [*TINY_RUN, "rollout.candidates=8", "selection.k=6", "rollout.max_policy_lag=1", f"eval.prompts={prompts}", "eval.grid_rows=0"]
    control = "rollout.precision_control={floor: -1.0, recover: 1.0, audit: 2, sentinel_window: 1, in_batch: true"
    LocalRun(load_config(overrides=[*sets, control + "}", "train.iterations=6"]), tmp_path / "all", log=lambda _: None).run()
    every = [r["audit"] for r in rows_of(tmp_path / "all")]
    assert all("spearman" in a and a["regenerated"] == 0 for a in every)
    free = sorted(a["free"] for a in every if a["free"] is not None)
    threshold = free[len(free) // 2]
    sets.append(control + f", sentinel: {threshold}}}")
    config = load_config(overrides=[*sets, "train.iterations=6"])
    LocalRun(config, tmp_path / "whole", log=lambda _: None).run()
    rows = rows_of(tmp_path / "whole")
    _in_batch_rows(rows, threshold, lag=1)
    audited = ["spearman" in r["audit"] for r in rows]
    assert any(audited[2:]) and not all(audited), [r["audit"] for r in rows]
    LocalRun(load_config(overrides=[*sets, "train.iterations=3"]), tmp_path / "split", log=lambda _: None).run()
    LocalRun(config, tmp_path / "split", log=lambda _: None).run(resume=tmp_path / "split")
    assert [r["audit"] | {"seconds": 0} for r in rows_of(tmp_path / "split")] == [r["audit"] | {"seconds": 0} for r in rows]


def test_the_distributed_run_audits_in_the_batch(tmp_path):
    """The driver at lag 1 on the virtual clock's stand-in workers, the sentinel between the
    figures a fully audited run logged."""
    from virtual_runs import virtual_config

    from solrl.cluster.driver import Driver
    from solrl.cluster.virtual import VirtualRuntime

    control = "rollout.precision_control={ladder: [nvfp4, fp8_e4m3, bf16], floor: -1.0, recover: 1.0, audit: 16, sentinel_window: 1, in_batch: true"
    base = virtual_config(tmp_path, "rollout.max_policy_lag=1", "train.iterations=8", control + "}")
    Driver(base, tmp_path / "all", log=lambda _: None, runtime=VirtualRuntime()).run()
    every = [r["audit"] for r in rows_of(tmp_path / "all")]
    assert all("spearman" in a and a["regenerated"] == 0 for a in every)
    free = sorted(a["free"] for a in every if a["free"] is not None)
    threshold = free[len(free) // 2]
    config = virtual_config(tmp_path, "rollout.max_policy_lag=1", "train.iterations=8", control + f", sentinel: {threshold}}}")
    Driver(config, tmp_path / "run", log=lambda _: None, runtime=VirtualRuntime()).run()
    rows = rows_of(tmp_path / "run")
    _in_batch_rows(rows, threshold, lag=1)
    audited = ["spearman" in r["audit"] for r in rows]
    assert any(audited[2:]) and not all(audited), [r["audit"] for r in rows]
