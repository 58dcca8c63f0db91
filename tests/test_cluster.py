"""The distributed run on a real local Ray cluster (token auth on), with the shipped model:
equality with the single-process loop; a driver SIGKILLed mid-run and resumed through the CLI;
workers killed in every phase through cluster.faults, with pools scaled meanwhile, each ending
bit for bit where the uninterrupted run ends. (Bounded policy lag is checked on the submitted
run of tests/test_jobs.py.) Each run is tiny; the cluster is started once for the module."""

import io
import json
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.compute as pc
import pytest
import ray
import torch
from PIL import Image
from tiny_runs import TINY_RUN

from solrl.cluster.driver import Driver
from solrl.config import load_config
from solrl.local_run import LocalRun
from solrl.runs import load_lora
from solrl.workers.store import read_log

TINY = [
    *TINY_RUN,
    "train.iterations=3",
    "train.optim.lr=0.001",
    "deterministic=true",
    "rollout.max_policy_lag=0",  # the shipped lag is 1; exact equality holds only in lockstep
    "eval.every=1",  # the EMA evaluated after iterations 1 and 2 as well, in slices among the pipeline's tasks
]


@pytest.fixture(scope="module")
def cluster(ray_cluster, tmp_path_factory):
    """The tiny run's config, on the session's Ray cluster (tests/conftest.py)."""
    eval_prompts = tmp_path_factory.mktemp("prompts") / "eval.txt"
    eval_prompts.write_text("a red circle\ntwo squares\na circle\n")  # 3 eval slices: one for each sampler
    return load_config(overrides=[*TINY, f"eval.prompts={eval_prompts}"])


def _cfg(base, *overrides):
    return load_config(overrides=[*TINY, f"eval.prompts={base.eval.prompts}", *overrides])


def _trained_once(run_dir, iterations: int, per_iteration: int = 3):
    log = read_log(run_dir / "candidates")
    trained = log.filter(pc.equal(log["status"], "trained"))
    groups = {(r["iteration"], r["prompt_id"]) for r in trained.select(["iteration", "prompt_id"]).to_pylist()}
    # each group's 4 candidates appear once: no group trained twice, none lost
    assert trained.num_rows == 4 * len(groups)
    assert len(groups) == iterations * per_iteration
    return log


@pytest.fixture(scope="module")
def reference(cluster, tmp_path_factory):
    """A 3-iteration distributed run."""
    out = tmp_path_factory.mktemp("dist")
    report = Driver(cluster, out, log=lambda _: None).run()
    return out, report


def test_distributed_run_equals_the_single_process_run(cluster, reference, tmp_path):
    """deterministic: true, lag 0: three iterations on Ray (2 samplers, 2 FSDP ranks) equal the
    one-process loop, bit for bit in practice (the bar is 1e-6)."""
    out, report = reference
    LocalRun(_cfg(cluster), tmp_path, log=lambda _: None).run()
    a, _ = load_lora(out / "lora", "policy")
    b, _ = load_lora(tmp_path / "lora", "policy")
    assert any(v.abs().max() > 0 for k, v in b.items() if "lora_B" in k)  # it trained
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    dist_rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    local_rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(dist_rows) == len(local_rows) == 3
    for row, local_row in zip(dist_rows, local_rows):
        for key in ("proxy_reward_mean", "bf16_reward_mean", "spearman", "loss"):
            assert row[key] == pytest.approx(local_row[key], abs=1e-6), key
    assert [_figures(r["eval"]) for r in dist_rows[:2]] == [_figures(r["eval"]) for r in local_rows[:2]]  # 3 slices on 3 samplers, merged in plan order
    assert "eval" not in dist_rows[2] and "eval" not in local_rows[2]  # the final eval's

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["version"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert r["policy_lag"] == 0 and r["candidates"] == 12 and r["regenerated"] == 6
        assert set(r["busy"]) == {"rollout-0", "rollout-1", "regen-0"}
    log = _trained_once(out, 3)
    regenerated = log.filter(pc.invert(pc.is_null(log["bf16_reward"])))
    assert regenerated.num_rows == 18 and set(regenerated["regen_worker"].to_pylist()) == {"regen-0"}
    assert report["restarts"] == {"rollout": 0, "regen": 0, "learner": 0}
    assert (out / "checkpoints").is_dir() and (out / "eval.json").is_file()


def _drew_data(png: bytes) -> float:
    """Share of strongly coloured pixels: data (lines, bars, samples) rather than axes and text,
    which matplotlib draws in black and grey."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return float(((pixels.max(axis=2) - pixels.min(axis=2)) > 60).mean())


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs the chromium binary (Debian package chromium; .ci/run installs it)")
def test_the_run_report_draws_every_figure_in_a_browser(reference, tmp_path):
    """report.html, written at the end of the run, opened offline in headless Chromium: every
    figure loads and has data drawn in it; `solrl report` redraws the same figures."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (the test extra) to drive Chromium")
    out, _ = reference
    written = (out / "report.html").read_text()
    assert "http://" not in written and "https://" not in written  # self-contained
    redraw = subprocess.run([sys.executable, "-m", "solrl.cli", "report", str(out)], capture_output=True, text=True, timeout=120)
    assert redraw.returncode == 0 and redraw.stdout.strip() == str(out / "report.html"), redraw.stderr
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto((out / "report.html").as_uri())
        figures = page.query_selector_all("figure")
        captions = [f.query_selector("figcaption").inner_text() for f in figures]
        assert captions == ["Reward", "Where the time goes", "Worker utilization", "Proxy fidelity", "Policy lag", "Data moved",
                            "Samples of fixed seeds: base model (left) and trained EMA (right)"]  # fmt: skip
        for caption, figure in zip(captions, figures):
            assert figure.query_selector("img").evaluate("i => i.complete && i.naturalWidth > 100"), caption
            assert _drew_data(figure.screenshot()) > 0.002, f"{caption}: nothing drawn"
        assert "held-out eval" in page.inner_text("table")
        page.screenshot(path=tmp_path / "report.png", full_page=True)
        browser.close()
    assert all(url.startswith(("file:", "data:")) for url in requests), requests


def test_a_driver_killed_mid_run_resumes_exactly(cluster, reference, tmp_path):
    """The driver process is SIGKILLed (cluster.faults) after iteration 2's metrics row and
    candidate log part are written, before its checkpoint. `solrl train --resume` continues from
    the checkpoint after iteration 1: the run ends with every iteration's row once, each group
    trained once, and the uninterrupted run's LoRA bit for bit."""
    out, _ = reference
    run = tmp_path / "run"
    sets = [a for s in [*TINY, f"eval.prompts={cluster.eval.prompts}", "cluster.rollout_workers=1"] for a in ("--set", s)]
    cmd = [sys.executable, "-m", "solrl.cli", "train", "--address", ray.get_runtime_context().gcs_address, *sets]
    fault = ["--set", 'cluster.faults=["driver-0:checkpoint:2"]']
    killed = subprocess.run([*cmd, "--out", str(run), *fault], capture_output=True, text=True, timeout=900)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    first_rows = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["iteration"] for r in first_rows] == [0, 1]
    # iteration 2's groups were logged (and iteration 3's too, if its step ended while iteration 2's
    # row waited for its evals): a resume must drop what the checkpoint does not cover
    assert len(list((run / "candidates").glob("part-*.parquet"))) >= 2
    resumed = subprocess.run([*cmd, "--resume", str(run), "--metrics-port", "0"], capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from step 1 (iteration 1)" in resumed.stdout + resumed.stderr
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["out"] == str(run)  # the CLI's summary line
    assert {"config.yaml", "metrics.jsonl", "lora", "eval.json", "candidates", "checkpoints", "grid.png"} <= {p.name for p in run.iterdir()}
    rows = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["iteration"] for r in rows] == [0, 1, 2]
    assert rows[0] == first_rows[0]  # kept as written, not redone from iteration 0
    _same_lora(out, run)
    _trained_once(run, 3)


def _last(run) -> pathlib.Path:
    """The run's last adapters: lora/last/ when train.keep_best kept the best in lora/."""
    return run / "lora" / "last" if (run / "lora" / "last").is_dir() else run / "lora"


def _same_lora(a_dir, b_dir):
    """The same last adapters, and the same kept ones when both runs kept their best."""
    folders = [(_last(a_dir), _last(b_dir))] + [(a_dir / "lora", b_dir / "lora")] * ((a_dir / "lora" / "last").is_dir() and (b_dir / "lora" / "last").is_dir())
    for a_folder, b_folder in folders:
        for which in ("policy", "ema"):
            a, _ = load_lora(a_folder, which)
            b, _ = load_lora(b_folder, which)
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), (a_folder, which)


# Workers killed (SIGKILL, through cluster.faults) at known points of every phase. Each run
# must finish with the uninterrupted reference's LoRA bit for bit, the same final eval, and
# every (iteration, prompt group) trained exactly once in the candidate log.
FAULT_RUNS = {
    "samplers_and_learner": (
        [
            "rollout-0:measure:1",  # base eval; replaced by rollout-2
            "rollout-1:explore:2",  # an explore task
            "regen-0:regenerate:2",  # a regeneration task; replaced by regen-1
            "rollout-2:apply_update:1",  # applying the first published weights
            "learner-1:backward:1",  # mid-backward of the first step
            "regen-1:measure:1",  # born mid-run, its first eval slice is a periodic eval's, a pipeline task: queued again
        ],
        [],
        {"rollout": 3, "regen": 2, "learner": 1},
    ),
    "reward_pool_publish_and_scaling": (  # the rollout pool also grows to 3 and shrinks to 1 meanwhile
        [
            "reward-0:score_eval:1",  # scoring the base eval's images (a shapes eval also reports the run's reward): the eval is redone
            "reward-1:label:1",  # labelling regenerated images
            "reward-2:score:1",  # scoring explore previews
            "learner-0:publish:2",  # publishing step 2: no snapshot yet, so step 1 is redone from its inputs first
        ],
        # no periodic evals: each row comes out as its step ends, so the pool is resized between iterations
        ["cluster.reward_workers=1", "cluster.checkpoint_every=0", "cluster.snapshot_every=3", "eval.every=0"],
        {"rollout": 0, "regen": 0, "reward": 3, "learner": 1},
    ),
}


def _figures(result: dict) -> str:
    """An eval's figures without its speed, as JSON (so NaN standard errors compare equal)."""
    return json.dumps({k: v for k, v in result.items() if k != "images_per_s"}, sort_keys=True)


@pytest.mark.parametrize("name", list(FAULT_RUNS))
def test_a_run_with_workers_killed_in_every_phase_equals_the_uninterrupted_run(cluster, reference, tmp_path, name):
    out, expected = reference
    faults, extra, restarts = FAULT_RUNS[name]
    config = _cfg(cluster, *extra, f"cluster.faults={json.dumps(faults)}")
    sizes = []

    def scale(driver, row):  # elastic pools change who does the work, never the numbers
        sizes.append(row["workers"]["rollout"])
        if "scaling" in name and row["iteration"] < 2:
            driver.scale("rollout", 3 if row["iteration"] == 0 else 1)

    report = Driver(config, tmp_path, log=lambda _: None, on_iteration=scale, live="scaling" in name).run()  # and the live view draws
    assert report["restarts"] == restarts and report["iterations"] == 3
    assert sizes == ([2, 3, 1] if "scaling" in name else [2, 2, 2])
    _same_lora(out, tmp_path)
    last = lambda r: r.get("final_eval_last", r["final_eval"])  # noqa: E731 (the last EMA's eval, whatever was kept)
    assert _figures(report["base_eval"]) == _figures(expected["base_eval"])
    assert _figures(last(report)) == _figures(last(expected))
    mine, theirs = _trained_once(tmp_path, 3), _trained_once(out, 3)
    key = ["iteration", "prompt_id", "seed"]
    columns = [*key, "proxy_reward", "bf16_reward", "status"]
    assert mine.sort_by([(k, "ascending") for k in key]).select(columns).equals(theirs.sort_by([(k, "ascending") for k in key]).select(columns))
    if "reward_workers" in str(extra):
        rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
        assert "score" in rows[0]["queues"] and any(name.startswith("reward-") for name in rows[0]["busy"])


def test_a_run_the_cluster_has_no_room_for_fails_naming_what_it_waited_for(cluster, tmp_path, capsys):
    """`solrl train` (in-process, on this cluster) with workers reserving more than the cluster
    has: it logs what is missing, waits cluster.startup_timeout_s, then exits 1 naming each worker
    and what it waits for, and leaves no worker behind. (Submitted as a job, the same message ends
    the job: the CLI's exit code is the job's.)"""
    from ray._private.state import actors

    from solrl.cli import main

    sets = [*TINY, f"eval.prompts={cluster.eval.prompts}", "cluster.cpus_per_worker=64", "cluster.pool_resources={}", "cluster.startup_timeout_s=3"]
    assert main(["train", "--out", str(tmp_path / "run"), *[a for s in sets for a in ("--set", s)]]) == 1
    said = capsys.readouterr()
    assert "this run reserves {CPU: 320}" in said.out and "missing {CPU: " in said.out, said.out
    assert "did not start within cluster.startup_timeout_s=3" in said.err, said.err
    assert re.search(r"rollout-\d+: waiting for resources \{CPU: 64\}", said.err) and "learner group: waiting for resources {CPU: 128}" in said.err, said.err
    gone = lambda: not actors(actor_state_name="PENDING_CREATION") and not actors(actor_state_name="ALIVE")
    deadline = time.monotonic() + 30
    while not gone() and time.monotonic() < deadline:  # ray.kill is asynchronous
        time.sleep(0.2)
    assert gone(), actors()


def test_explore_precision_control_on_the_cluster_equals_the_single_process_run(cluster, tmp_path):
    """rollout.precision_control at lag 0 with a reward pool (floor 1: any swap is poor; gain -2: any
    measured gain of the safer rung will do; that rung previews in 3 steps, not the sampler's 2): the audit's previews at both neighbouring rungs and its
    regenerations are pool tasks, yet every row's audit figures and moves equal the one-process
    run's, and so do the trained adapters."""
    control = "rollout.precision_control={ladder: [nvfp4, fp8_e4m3@3, bf16], floor: 1.0, patience: 1, recover: 1.0, recover_patience: 1, audit: 4, gain: -2}"
    config = _cfg(cluster, control, "eval.every=0", "train.iterations=3", "cluster.reward_workers=1")
    Driver(config, tmp_path / "dist", log=lambda _: None).run()
    LocalRun(config, tmp_path / "local", log=lambda _: None).run()
    rows = {name: [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()] for name in ("dist", "local")}
    keys = ("precision", "spearman", "cheaper", "cheaper_spearman", "safer", "safer_gains", "previewed_at", "switch", "regenerated")
    # per-group gains list in prompt order in both engines, whichever explore finished first on the cluster
    audits = {name: [{k: r["audit"].get(k) for k in keys} for r in rs] for name, rs in rows.items()}
    assert audits["dist"] == audits["local"]
    local = [r["audit"] for r in rows["local"]]  # poor, then previewed above and moved there, then previewed below
    assert "safer" not in local[0] and local[1]["safer"] == "fp8_e4m3@3" and local[1]["switch"]["to"] == "fp8_e4m3@3" and local[2]["cheaper"] == "nvfp4", local
    assert [r["modeled_cost"] for r in rows["dist"]] == [r["modeled_cost"] for r in rows["local"]]
    a, _ = load_lora(tmp_path / "dist" / "lora", "policy")
    b, _ = load_lora(tmp_path / "local" / "lora", "policy")
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
