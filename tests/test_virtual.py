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

from solrl.cluster.driver import Driver
from solrl.cluster.pools import WorkerPool
from solrl.cluster.slices import Partial, explore_pieces, slices
from solrl.cluster.startup import advance
from solrl.cluster.traffic import Traffic
from solrl.cluster.virtual import VirtualRuntime
from solrl.config import ConfigError, load_config, shipped_config
from solrl.learner.checkpoint import load_checkpoint
from solrl.learner.weight_sync import WeightUpdate
from solrl.types import Candidates, PromptGroup
from solrl.workers.store import audit_log, read_log

PROMPTS, SEEDS, ITERATIONS = 6, 96, 3


def _config(tmp_path, *extra):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"prompt number {i}, a photo\n" for i in range(12)))
    validation = tmp_path / "validation.txt"  # train.keep_best chooses on these (none an eval prompt)
    validation.write_text("".join(f"validation prompt {i}\n" for i in range(4)))
    return load_config(
        shipped_config("flux1"),
        [
            f"prompts={prompts}", f"eval.prompts={prompts}", f"eval.validation={validation}", "eval.n=1", "eval.grid_rows=0", f"train.iterations={ITERATIONS}",
            f"rollout.prompts_per_iteration={PROMPTS}", "cluster.control_port=null", "cluster.stand_in={model: flux1}",
            "cluster.checkpoint_every=0", "cluster.snapshot_every=2", *extra,
        ],
    )  # fmt: skip


def _run(config, out) -> tuple[dict, VirtualRuntime]:
    runtime, lines = VirtualRuntime(), []
    report = Driver(config, out, log=lines.append, runtime=runtime).run()
    runtime.lines = lines
    return report, runtime


@pytest.fixture(scope="module", params=[0, 1], ids=["lag0", "lag1"])
def reference(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"lag{request.param}")
    lag = request.param
    report, runtime = _run(_config(tmp, f"rollout.max_policy_lag={lag}"), tmp / "run")
    return lag, tmp / "run", report, runtime


def _selected(run_dir):
    log = read_log(run_dir / "candidates")
    key = ["iteration", "prompt_id", "seed"]
    columns = [*key, "proxy_reward", "bf16_reward", "status"]
    return log.sort_by([(k, "ascending") for k in key]).select(columns)


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
    report, runtime = _run(_config(tmp_path, f"rollout.max_policy_lag={lag}", f"cluster.faults={json.dumps(FAULTS[name])}", *extra), tmp_path / "run")
    died = {spec.split("-")[0] for spec in FAULTS[name]}
    assert all(report["restarts"][kind] >= 1 for kind in died), report["restarts"]
    assert audit_log(tmp_path / "run" / "candidates", ITERATIONS, PROMPTS, SEEDS) == {"trained": ITERATIONS * PROMPTS, "dropped": 0, "lost": 0, "duplicated": 0}
    mine = _selected(tmp_path / "run")
    assert mine.num_rows == pc.sum(pc.equal(mine["status"], "trained")).as_py()
    if extra:  # a stand-in reward worker scores by position, not seed: its own uninterrupted run is the reference
        _run(_config(tmp_path, f"rollout.max_policy_lag={lag}", *extra), tmp_path / "reference")
        run = tmp_path / "reference"
    assert mine.equals(_selected(run))
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
        config = _config(tmp_path, "rollout.max_policy_lag=1", "train.iterations=4", "eval.n=24", f"eval.every={every}", "cluster.checkpoint_every=1")
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
    assert _selected(resumed).equals(_selected(runs[1]))


def test_spare_rollout_workers_take_a_replacement_and_a_scale_up(tmp_path):
    """cluster.spare_rollout_workers=1: the spare stands in for a killed rollout worker, another
    spare for the scale-up after the first row; a new spare starts behind each, none takes a task
    while spare, and none counts in the pool's size or busy ratios."""
    config = _config(tmp_path, "rollout.max_policy_lag=1", "cluster.spare_rollout_workers=1", f"cluster.faults={json.dumps(['rollout-0:explore:2'])}")
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
    config = _config(tmp_path)
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


def test_explore_precision_moves_on_the_distributed_run_as_its_audit_says(tmp_path):
    """rollout.precision_control at lag 1 (floor 1: any swap of two audited seeds is poor; gain null:
    the floor alone moves it): each row
    waits for its audit; the moves replay exactly from the logged figures; explore tasks handed out
    after a move run at the new precision (the rows count the images explored at each, and the
    cost prices them so); a group explored before the move does not count toward the new rung's
    figure; a replacement worker starts at the precision reached; a resume continues from it."""
    from solrl.cost import CostMeter
    from solrl.precision_control import PrecisionController

    control = "rollout.precision_control={ladder: [nvfp4, fp8_e4m3, bf16], floor: 1.0, patience: 1, recover: 1.0, recover_patience: 1, audit: 16, gain: null}"
    config = _config(tmp_path, "rollout.max_policy_lag=1", "train.iterations=4", control, "cluster.checkpoint_every=1",
                     f"cluster.faults={json.dumps(['rollout-0:explore:30'])}")  # fmt: skip
    lines = []
    driver = Driver(config, tmp_path / "run", log=lines.append, runtime=VirtualRuntime())
    driver.run()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    audits = [r["audit"] for r in rows]
    replay, at = PrecisionController(config.rollout.precision_control, "nvfp4"), []
    for it, a in enumerate(audits):
        assert a["precision"] == replay.precision and a["regenerated"] > 0  # 16 drawn of 96, 24 selected: most regenerated for the audit only
        move = replay.observe(it, a["spearman"] if a["groups"] else float("nan"), a.get("cheaper_spearman"))
        assert (move is None) == ("switch" not in a)
        at.append(replay.precision)
    assert [a["precision"] for a in audits] == ["nvfp4", "fp8_e4m3", "fp8_e4m3", "bf16"] and at[-1] == "bf16"
    # iteration 1 was explored (lag 1) before row 0's move: its groups do not count toward fp8's figure
    assert audits[1]["explored"] == {"nvfp4": PROMPTS * SEEDS} and audits[1]["groups"] == 0 and "switch" not in audits[1]
    assert audits[2]["explored"] == {"fp8_e4m3": PROMPTS * SEEDS} and audits[2]["groups"] == PROMPTS
    assert audits[2]["cheaper"] == "nvfp4" and audits[2]["previewed_at"] == {"nvfp4": PROMPTS * 16}
    assert sum("explore precision" in line for line in lines) == 2
    # under lag 1 an iteration is explored before the row two back is out; rollout-0 died exploring iteration 2 (its
    # 30th task, after the first move) and its replacement explored at fp8, the precision reached
    assert [list(a["explored"]) for a in audits] == [["nvfp4"], ["nvfp4"], ["fp8_e4m3"], ["fp8_e4m3"]], lines
    at_line = lambda start: next(i for i, line in enumerate(lines) if line.startswith(start))
    assert at_line("explore precision nvfp4 -> fp8_e4m3") < at_line("rollout-0 died; starting") < at_line("iter 3/4"), lines
    # the cost prices each row's explore at the precisions it ran at (fp8 twice NVFP4's price by default)
    meter = CostMeter(config)
    plain = meter.iteration({"candidates": PROMPTS * SEEDS, "regenerated": rows[1]["regenerated"]})["explore"]
    assert rows[1]["modeled_cost"]["explore"] == pytest.approx(plain)
    assert rows[2]["modeled_cost"]["explore"] > rows[1]["modeled_cost"]["explore"] * config.cost.price("fp8_e4m3") / config.cost.price("nvfp4") * 0.99
    assert driver.pools["rollout"].restarts == 1 and driver.pools["rollout"].explore_rung == "bf16"
    # a resume from the checkpoint after row 2 (its move made) explores the last iteration in BF16
    states = {json.loads((c / "state.json").read_text())["iteration"]: c for c in (tmp_path / "run" / "checkpoints").glob("step-*")}
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "run", resumed)
    Driver(config, resumed, log=lambda _: None, runtime=VirtualRuntime(), resume=states[3]).run()
    again = [json.loads(line)["audit"] for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [a["precision"] for a in again] == [a["precision"] for a in audits] and again[3]["explored"] == {"bf16": PROMPTS * SEEDS}


def test_the_distributed_controller_previews_the_safer_rung_under_lag_and_moves_on_its_measured_gain(tmp_path):
    """rollout.precision_control at lag 1 with the safer rung's check (floor 1, patience 2, gain 0:
    a move needs the safer rung measurably better, which the stand-in's less noisy FP8 previews
    are): groups selected once agreement has been poor are also previewed one rung up, the rows log
    the per-group gains, the move waits for them, and the moves replay exactly from the rows."""
    from solrl.precision_control import PrecisionController

    control = "rollout.precision_control={ladder: [nvfp4, fp8_e4m3, bf16], floor: 1.0, patience: 2, recover: 1.0, recover_patience: 9, audit: 16, gain: 0.0}"
    config = _config(tmp_path, "rollout.max_policy_lag=1", "train.iterations=6", control)
    lines = []
    Driver(config, tmp_path / "run", log=lines.append, runtime=VirtualRuntime()).run()
    audits = [json.loads(line)["audit"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    replay = PrecisionController(config.rollout.precision_control, "nvfp4")
    for it, a in enumerate(audits):
        assert a["precision"] == replay.precision
        move = replay.observe(it, a["spearman"] if a["groups"] else float("nan"), a.get("cheaper_spearman"), a.get("safer_gains", ()))
        assert (move is None) == ("switch" not in a), (it, a)
    assert "safer_gains" not in audits[0] and "safer_gains" not in audits[1]  # iteration 1 was selected before row 0 was out
    first = next(i for i, a in enumerate(audits) if "switch" in a)
    assert first == 2 and audits[1]["spearman"] < 1.0  # row 1 reached patience without gains: no move yet
    assert audits[first]["switch"]["to"] == "fp8_e4m3" and "ranks the same seeds better by" in audits[first]["switch"]["reason"], audits
    assert audits[first]["previewed_at"]["fp8_e4m3"] == PROMPTS * 16 and len(audits[first]["safer_gains"]) >= 2
    assert sum(line.startswith("explore precision ") for line in lines) == sum("switch" in a for a in audits)


def test_an_audit_every_other_iteration_skips_the_others_and_prices_only_what_it_drew(tmp_path):
    """rollout.precision_control.every=2 at lag 1 (floor 1, patience 1: every audited iteration is
    poor; gain null): iterations 1, 3, 5 are explored unaudited (no figures, no regenerations, no
    previews, priced as plain explore) and count neither way, so the moves come after the audited
    iterations 0 and 2, as a replay of the audited rows alone makes them."""
    from solrl.precision_control import PrecisionController

    control = "rollout.precision_control={ladder: [nvfp4, fp8_e4m3, bf16], floor: 1.0, patience: 1, recover: 1.0, recover_patience: 9, audit: 16, gain: null, every: 2}"
    config = _config(tmp_path, "rollout.max_policy_lag=1", "train.iterations=6", control)
    Driver(config, tmp_path / "run", log=lambda _: None, runtime=VirtualRuntime()).run()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    replay = PrecisionController(config.rollout.precision_control, "nvfp4")
    for it, row in enumerate(rows):
        a = row["audit"]
        assert a["precision"] == replay.precision
        if it % 2:
            assert set(a) == {"precision", "explored"}, a
            continue
        assert a["regenerated"] > 0
        move = replay.observe(it, a["spearman"] if a["groups"] else float("nan"), a.get("cheaper_spearman"), a.get("safer_gains", ()))
        assert (move is None) == ("switch" not in a), (it, a)
    assert [r["audit"].get("switch", {}).get("to") for r in rows] == ["fp8_e4m3", None, "bf16", None, None, None], [r["audit"] for r in rows]
    plain = [r["modeled_cost"]["regenerate"] for r in rows]
    assert plain[1] == plain[3] == plain[5] < min(plain[0], plain[2], plain[4])  # an unaudited iteration regenerates only what it trains


def test_the_sentinel_audits_only_the_iterations_whose_selected_seeds_ranked_poorly(tmp_path):
    """rollout.precision_control.sentinel at lag 1 (floor -1: nothing is poor, so explore stays at
    NVFP4): the audit waits for the whole iteration's regenerations, then runs only where the
    selected seeds' preview Spearman (the row's own `spearman`, free) is below the sentinel; the
    others are explored unaudited and unpriced, and training is the same as with every iteration
    audited. The threshold is the middle of the figures a fully audited run logged, so both kinds occur."""
    control = "rollout.precision_control={ladder: [nvfp4, fp8_e4m3, bf16], floor: -1.0, recover: 1.0, audit: 16, sentinel_window: 1"
    base = _config(tmp_path, "rollout.max_policy_lag=1", "train.iterations=6", control + "}")
    Driver(base, tmp_path / "all", log=lambda _: None, runtime=VirtualRuntime()).run()
    every = [json.loads(line) for line in (tmp_path / "all" / "metrics.jsonl").read_text().splitlines()]
    free = [r["spearman"] for r in every]
    threshold = sorted(free)[len(free) // 2]
    config = _config(tmp_path, "rollout.max_policy_lag=1", "train.iterations=6", control + f", sentinel: {threshold}}}")
    Driver(config, tmp_path / "run", log=lambda _: None, runtime=VirtualRuntime()).run()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    audited = ["spearman" in r["audit"] for r in rows]
    assert audited == [f < threshold for f in free] and any(audited) and not all(audited), (free, threshold)
    for r, f, a in zip(rows, free, audited, strict=True):
        assert r["audit"]["sentinel"] == pytest.approx(f, abs=1e-3) and r["audit"]["precision"] == "nvfp4"
        assert (r["audit"].get("regenerated", 0) > 0) == a
    assert [r["spearman"] for r in rows] == free and [r["loss"] for r in rows] == [r["loss"] for r in every]  # the audit never trains
    plain = [r["modeled_cost"]["regenerate"] for r, a in zip(rows, audited, strict=True) if not a]
    assert max(plain) < min(r["modeled_cost"]["regenerate"] for r, a in zip(rows, audited, strict=True) if a)
