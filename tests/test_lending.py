"""Learners lent to regeneration (cluster.lend_learners): a BF16 regeneration worker in each learner
rank's bundle takes regeneration tasks only while the learner group has no step to run (and only
of the iterations the lag allows), and a step waits for the lent tasks still running, so the two
never share the GPU at once. The lent
workers are ordinary regeneration samplers, so the run selects and trains exactly what it would
without them; they follow the learner group into its new reservation when it restarts."""

import json

import pyarrow.compute as pc
import pytest
from virtual_runs import selected_seeds, virtual_config, virtual_run

from solrl.cluster.virtual import VirtualRuntime
from solrl.config import load_config, shipped_config
from solrl.workers.store import audit_log, read_log

PROMPTS, SEEDS, ITERATIONS = 6, 96, 3


class Recording(VirtualRuntime):
    """The virtual runtime, also noting each call's (worker, method, start, end) on its clock."""

    def __init__(self):
        super().__init__()
        self.intervals = []

    def call(self, worker, method, *args, returns=1):
        inputs = [a.ready_at for a in args if hasattr(a, "ready_at")]
        start = max([self.clock, worker.free_at, *inputs])
        out = super().call(worker, method, *args, returns=returns)
        self.intervals.append((getattr(worker.obj, "name", None) or f"learner-{worker.obj.rank}", method, start, worker.free_at))
        return out


def _recorded(config, out):
    from solrl.cluster.driver import Driver

    runtime = Recording()
    report = Driver(config, out, log=lambda _: None, runtime=runtime).run()
    return report, runtime


def _regen_workers(run_dir) -> set[str]:
    log = read_log(run_dir / "candidates")
    return set(pc.unique(log["regen_worker"].drop_null()).to_pylist())


@pytest.mark.parametrize("lag, more", [(0, []), (1, []), (1, ["cluster.reward_workers=1", "eval.every=2"])], ids=["lag0", "lag1", "reward_pool_and_evals"])
def test_lent_workers_regenerate_only_while_the_learners_have_no_step_and_change_no_result(tmp_path, lag, more):
    extra = [f"rollout.max_policy_lag={lag}", "cluster.regen_workers=1", "eval.every=0", *more]
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    _, plain = virtual_run(virtual_config(tmp_path / "a", *extra), tmp_path / "a" / "run")
    report, runtime = _recorded(virtual_config(tmp_path / "b", *extra, "cluster.lend_learners=true"), tmp_path / "b" / "run")
    run = tmp_path / "b" / "run"
    assert audit_log(run / "candidates", ITERATIONS, PROMPTS, SEEDS) == {"trained": ITERATIONS * PROMPTS, "dropped": 0, "lost": 0, "duplicated": 0}
    assert selected_seeds(run).equals(selected_seeds(tmp_path / "a" / "run"))  # same seeds, same rewards, whoever regenerated them
    lent = {w for w in _regen_workers(run) if w.startswith("lent-")}
    assert lent and report["lent_tasks"] >= len(lent), (report.get("lent_tasks"), _regen_workers(run))
    steps = [(s, e) for name, method, s, e in runtime.intervals if name.startswith("learner-") and method == "step"]
    regens = [(s, e) for name, method, s, e in runtime.intervals if name.startswith("lent-") and method in ("regenerate", "regenerate_images")]
    assert steps and regens
    overlaps = [(r, t) for r in regens for t in steps if r[0] < t[1] and t[0] < r[1]]
    assert not overlaps, overlaps[:3]
    assert runtime.clock < plain.clock  # the learners' idle time went to the regeneration queue


def test_a_lent_worker_and_a_learner_killed_mid_run_lose_nothing_and_the_lent_pool_follows_the_group(tmp_path):
    extra = ["rollout.max_policy_lag=1", "cluster.regen_workers=1", "eval.every=0", "cluster.lend_learners=true"]
    (tmp_path / "ref").mkdir()
    virtual_run(virtual_config(tmp_path / "ref", *extra), tmp_path / "ref" / "run")
    faults = ["lent-0:regenerate:2", "learner-0:step:2"]
    report, runtime = virtual_run(virtual_config(tmp_path, *extra, f"cluster.faults={json.dumps(faults)}"), tmp_path / "run")
    assert report["restarts"]["lent"] >= 1 and report["restarts"]["learner"] >= 1, report["restarts"]
    assert audit_log(tmp_path / "run" / "candidates", ITERATIONS, PROMPTS, SEEDS) == {"trained": ITERATIONS * PROMPTS, "dropped": 0, "lost": 0, "duplicated": 0}
    assert selected_seeds(tmp_path / "run").equals(selected_seeds(tmp_path / "ref" / "run"))
    assert any(line.startswith("lent-0 died") for line in runtime.lines), runtime.lines
    assert any(line.startswith("lent workers lent-") and "restarted learner group" in line for line in runtime.lines), runtime.lines


def test_a_lent_worker_halves_its_learner_ranks_gpus_and_shares_its_bundle():
    c = load_config(shipped_config("flux1"), ["prompts=/x", "eval.prompts=/x", "cluster.gpus_per_worker=1", "cluster.lend_learners=true"]).cluster
    assert c.worker_resources("learner")["GPU"] == c.worker_resources("lent")["GPU"] == 0.5
    assert c.learner_bundle() == {"CPU": 2 * c.cpus_per_worker, "GPU": 1.0}
    assert c.demands()["lent"] == (c.learner_ranks, c.worker_resources("lent"))
    assert c.resources()["GPU"] == c.rollout_workers + c.regen_workers + c.learner_ranks  # no GPU beyond the learners'
    off = load_config(shipped_config("flux1"), ["prompts=/x", "eval.prompts=/x", "cluster.gpus_per_worker=1"]).cluster
    assert off.learner_bundle() == off.worker_resources("learner") == {"CPU": off.cpus_per_worker, "GPU": 1.0} and "lent" not in off.demands()


def test_lent_workers_run_on_ray_in_the_learner_groups_bundles(ray_cluster, tmp_path):
    """Real Ray actors (stand-ins): each lent worker sits in its own bundle of the learners'
    placement group, and takes regeneration tasks."""
    import ray

    from solrl.cluster.driver import Driver

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox at dawn\nan old lighthouse in the rain\na glass teapot\n")
    config = load_config(
        shipped_config("flux1"),
        [
            f"prompts={prompts}", f"eval.prompts={prompts}", "eval.n=1", "eval.grid_rows=0", "eval.every=0", "train.iterations=2",
            "rollout.prompts_per_iteration=2", "cluster.rollout_workers=1", "cluster.regen_workers=1", "cluster.learner_ranks=2",
            "cluster.gpus_per_worker=0", "cluster.cpus_per_worker=0.25", "cluster.stand_in={model: flux1, speedup: 1000}",
            "cluster.checkpoint_every=0", "cluster.lend_learners=true", "cluster.control_port=null",
        ],
    )  # fmt: skip
    placed = {}

    def look(driver, row):  # each lent actor says, from inside, which placement group it runs in
        where = lambda _: ray.get_runtime_context().get_placement_group_id()  # noqa: E731
        lent = driver.pools["lent"].workers.values()
        placed.update({w.name: ray.get(w.handle.__ray_call__.remote(where)) for w in lent})
        placed["pg"], placed["bundles"] = driver.learners.pg.id.hex(), sorted(w.bundle for w in lent)

    report = Driver(config, tmp_path / "run", log=lambda _: None, on_iteration=look).run()
    assert audit_log(tmp_path / "run" / "candidates", 2, 2, 96) == {"trained": 4, "dropped": 0, "lost": 0, "duplicated": 0}
    assert placed["lent-0"] == placed["lent-1"] == placed["pg"] and placed["bundles"] == [0, 1], placed
    assert report["lent_tasks"] >= 1 and any(w.startswith("lent-") for w in _regen_workers(tmp_path / "run"))
