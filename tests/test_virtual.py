"""The scheduler on the virtual-clock runtime (solrl.cluster.virtual): the real driver, dispatcher,
pools, publisher and learner group over stand-in workers at FLUX.1's stage times, in one process.

Workers of every kind are killed in every phase through cluster.faults (the same plans the Ray
fault runs use); the candidate log must show every group trained exactly once, and the same
seeds selected with the same rewards as the uninterrupted run."""

import json
import shutil

import pyarrow.compute as pc
import pytest
import torch
from virtual_runs import ITERATIONS, PROMPTS, SEEDS, selected_seeds, virtual_config, virtual_run

from solrl.cluster.driver import Driver
from solrl.cluster.pools import WorkerPool
from solrl.cluster.slices import Partial, explore_pieces, slices
from solrl.cluster.startup import advance
from solrl.cluster.traffic import Traffic
from solrl.cluster.virtual import VirtualRuntime
from solrl.config import ConfigError, load_config
from solrl.learner.checkpoint import load_checkpoint
from solrl.learner.weight_sync import WeightUpdate
from solrl.types import Candidates, PromptGroup
from solrl.workers.store import audit_log, read_log


@pytest.fixture(scope="module", params=[0, 1], ids=["lag0", "lag1"])
def reference(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"lag{request.param}")
    lag = request.param
    report, runtime = virtual_run(virtual_config(tmp, f"rollout.max_policy_lag={lag}"), tmp / "run")
    return lag, tmp / "run", report, runtime


def test_a_virtual_run_takes_the_modeled_time_and_trains_every_group_once(reference):
    lag, run, report, runtime = reference
    assert report["iterations"] == ITERATIONS and report["restarts"] == {"rollout": 0, "regen": 0, "learner": 0}
    assert audit_log(run / "candidates", ITERATIONS, PROMPTS, SEEDS) == {"trained": ITERATIONS * PROMPTS, "dropped": 0, "lost": 0, "duplicated": 0}
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["policy_lag"] for r in rows] == ([0, 0, 0] if lag == 0 else [0, 1, 1])
    # 6 prompts x 24 kept trained 6 times on flux1.yaml's 4 ranks: 15 s of B200 a group
    # (solrl/standin/timing.py), 22.5 s a step, not the milliseconds the test takes
    assert all(20 < r["seconds"]["learn"] < 30 for r in rows), [r["seconds"] for r in rows]
    assert runtime.clock > ITERATIONS * 20


FAULTS = {
    "samplers": ["rollout-0:explore:2", "regen-0:regenerate:3", "rollout-1:apply_update:1", "regen-1:measure:1"],
    "learner_step": ["learner-1:step:2"],
    "learner_backward": ["learner-0:backward:3"],
    "learner_publish": ["learner-2:publish:1"],
    "reward_pool": ["reward-0:score:2", "reward-1:label:1"],
    # the base eval asks the reward worker once per sampler (4): the 5th is a periodic eval's slice, redone with its replacement
    "reward_eval_slice": ["reward-0:score_eval:5"],
}
EXTRA = {"reward_pool": ["cluster.reward_workers=1"], "reward_eval_slice": ["cluster.reward_workers=1", "eval.every=1"]}


@pytest.mark.parametrize("name", list(FAULTS))
def test_workers_killed_in_every_phase_lose_nothing_and_train_nothing_twice(reference, tmp_path, name):
    lag, run, _, _ = reference
    extra = EXTRA.get(name, [])
    report, runtime = virtual_run(virtual_config(tmp_path, f"rollout.max_policy_lag={lag}", f"cluster.faults={json.dumps(FAULTS[name])}", *extra), tmp_path / "run")
    died = {spec.split("-")[0] for spec in FAULTS[name]}
    assert all(report["restarts"][kind] >= 1 for kind in died), report["restarts"]
    assert audit_log(tmp_path / "run" / "candidates", ITERATIONS, PROMPTS, SEEDS) == {"trained": ITERATIONS * PROMPTS, "dropped": 0, "lost": 0, "duplicated": 0}
    mine = selected_seeds(tmp_path / "run")
    assert mine.num_rows == pc.sum(pc.equal(mine["status"], "trained")).as_py()
    if extra:  # a stand-in reward worker scores by position, not seed: its own uninterrupted run is the reference
        virtual_run(virtual_config(tmp_path, f"rollout.max_policy_lag={lag}", *extra), tmp_path / "reference")
        run = tmp_path / "reference"
    assert mine.equals(selected_seeds(run))
    if name == "reward_eval_slice":  # it died scoring the first periodic eval, whose figures are those of the run it did not die in
        at = lambda start: next(i for i, line in enumerate(runtime.lines) if line.startswith(start))
        assert at("base model") < at("reward-0 died") < at("iter 1/"), runtime.lines  # after the base eval, before the first row
        rows = {r: [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()] for r, d in (("mine", tmp_path / "run"), ("theirs", run))}
        evals = {r: [{k: v for k, v in row["eval"].items() if k != "images_per_s"} for row in rs[:-1]] for r, rs in rows.items()}
        assert evals["mine"] == evals["theirs"] and report["restarts"]["reward"] == 1


def test_explore_tasks_are_sized_from_the_pool():
    assert explore_pieces(0, 48, 96, 3) == 1  # the shipped 48 x 96 on 3 workers: 16 groups a worker already
    assert explore_pieces(0, 48, 96, 64) == 4  # 64 workers: 4 tasks a group, of 24 seeds
    assert explore_pieces(0, 6, 96, 3) == 4 and explore_pieces(0, 12, 32, 2) == 1  # the shapes run's 32 seeds: never split
    assert explore_pieces(3, 6, 96, 3) == 3
    with pytest.raises(ConfigError, match=r"cluster.explore_split=200 exceeds rollout.candidates=32; share a group's seeds"):
        load_config(overrides=["rollout.candidates=32", "cluster.explore_split=200"])


def test_slices_come_back_as_the_whole_group_in_its_seed_order():
    group = PromptGroup(7, "a prompt", tuple(range(100, 110)), 0, 3)
    parts = slices(group, 3)
    assert [len(p.seeds) for p in parts] == [3, 3, 4] and sum((p.seeds for p in parts), ()) == group.seeds
    partial = Partial(group)
    results = [(Candidates(p, tuple(float(s) for s in p.seeds), 3 + i, 1.0), f"rollout-{i}") for i, p in enumerate(parts)]
    assert partial.add(*results[2]) is None and partial.add(*results[0]) is None and partial.add(*results[0]) is None
    whole, workers = partial.add(*results[1])
    assert whole.group == group and whole.proxy_rewards == tuple(float(s) for s in group.seeds)
    assert whole.version == 3 and whole.seconds == 3.0  # the oldest slice's version; every slice's seconds
    assert workers == ["rollout-0"] * 3 + ["rollout-1"] * 3 + ["rollout-2"] * 4


def test_a_groups_seeds_go_to_several_workers_and_the_log_says_so(reference):
    _, run, _, runtime = reference
    assert "explore: each group's 96 seeds in 4 tasks for 2 rollout workers" in runtime.lines
    log = read_log(run / "candidates").to_pylist()
    workers = {}
    for row in log:
        workers.setdefault((row["iteration"], row["prompt_id"]), set()).add(row["explore_worker"])
    assert max(len(w) for w in workers.values()) > 1


def test_periodic_evals_run_among_the_pipelines_tasks_and_checkpoints_stay_exact(tmp_path):
    """eval.every=1 at lag 1: each eval is cut into slices that samplers take between pipeline
    tasks, and its iteration's row waits for the figures while later steps go on."""
    spans, runs = {}, {}
    for every in (0, 1):
        runtime, at, runs[every] = VirtualRuntime(), [], tmp_path / f"every{every}"
        config = virtual_config(tmp_path, "rollout.max_policy_lag=1", "train.iterations=4", "eval.n=24", f"eval.every={every}", "cluster.checkpoint_every=1")
        Driver(config, runs[every], log=lambda _: None, runtime=runtime, on_iteration=lambda d, r: at.append(runtime.now())).run()  # noqa: B023
        spans[every] = at[-1] - at[0]
    rows = [json.loads(line) for line in (runs[1] / "metrics.jsonl").read_text().splitlines()]
    assert ["eval" in r for r in rows] == ["validation" in r for r in rows] == [True, True, True, False]
    # the stand-in's reward ignores the policy: every validation eval ties, and the first is kept
    assert json.loads((runs[1] / "eval.json").read_text())["kept"]["iteration"] == 1
    figures = lambda e: {k: v for k, v in e.items() if k != "images_per_s"}  # noqa: E731 (the final eval is cut otherwise)
    final = figures(json.loads((runs[1] / "eval.json").read_text())["final_eval"])
    assert all(figures(r["eval"]) == final for r in rows[:3])  # the stand-in's reward ignores the version: every slice back, in plan order
    # 96 images of 10 BF16 steps after every iteration cost a barrier 19 % of the run's time (measured before)
    assert spans[1] < 1.04 * spans[0], spans
    # a checkpoint after a held row holds that iteration's state, though a later step ended first
    states = {json.loads((c / "state.json").read_text())["iteration"]: c for c in (runs[1] / "checkpoints").glob("step-*")}
    tensors, state = load_checkpoint(states[3])
    steps = [v.item() for k, v in tensors.items() if k.endswith(".step")]  # a stand-in fills its state with 1e-3 x its version
    assert state["step"] == rows[2]["version"] and steps == pytest.approx([1e-3 * state["step"]] * len(steps)), (state["step"], steps)
    resumed = tmp_path / "resumed"
    shutil.copytree(runs[1], resumed)
    Driver(config, resumed, log=lambda _: None, runtime=VirtualRuntime(), resume=states[3]).run()
    assert selected_seeds(resumed).equals(selected_seeds(runs[1]))


def test_spare_rollout_workers_take_a_replacement_and_a_scale_up(tmp_path):
    """cluster.spare_rollout_workers=1: the spare stands in for a killed rollout worker, another
    spare for the scale-up after the first row; a new spare starts behind each, none takes a task
    while spare, and none counts in the pool's size or busy ratios."""
    config = virtual_config(tmp_path, "rollout.max_policy_lag=1", "cluster.spare_rollout_workers=1", f"cluster.faults={json.dumps(['rollout-0:explore:2'])}")
    rows, lines = [], []

    def on_row(driver, row):
        rows.append(row)
        if row["iteration"] == 0:
            driver.scale("rollout", 3)

    driver = Driver(config, tmp_path / "run", log=lines.append, runtime=VirtualRuntime(), on_iteration=on_row)
    report = driver.run()
    assert report["restarts"]["rollout"] == 1
    assert audit_log(tmp_path / "run" / "candidates", ITERATIONS, PROMPTS, SEEDS) == {"trained": ITERATIONS * PROMPTS, "dropped": 0, "lost": 0, "duplicated": 0}
    history = {w.name: w for w in driver.pools["rollout"].history}
    assert list(history) == ["rollout-0", "rollout-1", "rollout-2", "rollout-3", "rollout-4"]  # 2 + a spare; a spare behind each taken one
    assert history["rollout-2"].first_task_at is not None and history["rollout-3"].first_task_at is not None
    assert history["rollout-4"].spare and history["rollout-4"].first_task_at is None
    assert [r["workers"]["rollout"] for r in rows] == [2, 3, 3] and all(r["spares"] == {"rollout": 1} for r in rows)
    assert "rollout-4" not in {k for r in rows for k in r["busy"]}


def test_a_starting_worker_says_what_it_waits_for_and_how_long_each_stage_took(tmp_path):
    """A worker spawned after a weight update goes resources -> imports -> weights -> ready;
    status lines say which (with the version and size of the weights), and the ready line in the
    log says how long each stage took, on the virtual clock."""
    config = virtual_config(tmp_path)
    runtime, lines = VirtualRuntime(), []
    pool = WorkerPool(config, runtime, "explore", "rollout", Traffic())
    update = WeightUpdate.build(3, {"w": torch.ones(4)})
    pool.update, pool.update_bytes, pool.update_version = runtime.put(update), 2_500_000, 3
    w = pool.spawn()
    assert advance({"rollout": pool}, lines.append) == {"rollout": ["rollout-0: receiving weights v3 (2.5 MB) for 0 s"]}
    assert w.phase == "weights" and not lines  # placed and started at once on the virtual clock
    runtime.wait([w.updated])  # the clock moves to the apply's end
    assert advance({"rollout": pool}, lines.append) == {"rollout": []} and w.phase == "ready"
    assert len(lines) == 1 and lines[0].startswith("rollout-0 is ready ") and "receiving weights " in lines[0], lines
    assert set(w.took) == {"resources", "weights"} and w.took["weights"] > 0
