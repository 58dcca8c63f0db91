"""The users' verbs on a real Ray cluster: `ray start --head` with token authentication, started
here as a subprocess on loopback and torn down after. A short shapes run is submitted through
the job server, its rollout pool scaled 2 -> 3 while it still starts (acknowledged at once, applied once it can), then -> 5 -> 1 while it runs (two of the five wait for room), stopped with a checkpoint and
resumed; the candidate log then shows every (iteration, group) trained exactly once. Control
calls without the token are refused (a run the cluster has no room for is tested in-process,
tests/test_cluster.py). A real Prometheus, run with deploy/prometheus's config, scrapes a
submitted run and Ray's own metrics, and every query of the Grafana dashboard returns data."""

import contextlib
import json
import os
import pathlib
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
import urllib.parse
import urllib.request

import grpc
import pytest
import yaml

pytest.importorskip("ray.job_submission", reason="the cluster verbs need ray[default] (pip install 'solrl[cluster]')")

from solrl.cluster.control import ControlClient, parse_announcement
from solrl.cluster.jobs import status_dict
from solrl.workers.store import audit_log
from tiny_runs import TINY_RUN

DEPLOY = pathlib.Path(__file__).resolve().parent.parent / "deploy"
# Rollout workers reserve half a CPU: the 2-CPU head then holds 3 of them beside the regeneration
# worker and the learner, so growing the pool past 3 leaves workers waiting without starting more.
TINY = [
    *TINY_RUN, "train.iterations=400", "eval.grid_rows=0", "eval.best_of=0", "cluster.learner_ranks=1", "cluster.pool_resources={rollout: {CPU: 0.5}}",
    # the explore audit on a submitted, scaled, stopped and resumed job, every dashboard panel with data: a sentinel of 1
    # audits every iteration whose selected seeds did not all rank perfectly, and exports its figure
    "rollout.precision_control={sentinel: 1.0}",
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A one-node Ray cluster with token auth; yields (dashboard address, client environment)."""
    token = secrets.token_hex(16)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    env.pop("RAY_ADDRESS", None)
    port, dashboard = _free_port(), _free_port()
    # The node's agents get free ports too: another cluster on this machine (the suite's embedded
    # one, tests/conftest.py) holds Ray's default ones, and a head whose job agent cannot bind
    # answers every submit with "No available agent".
    agents = [f"--{flag}={_free_port()}" for flag in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port")]
    cmd = [
        sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--num-cpus=2",
        f"--port={port}", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", *agents,
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        _wait_for(lambda: _dashboard_up(dashboard), 120, "the Ray head's job server to start")
        yield address, env
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # --block: the head takes its processes down with it
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:  # it waits on its workers' graceful exit (10 s here); nothing here needs that
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        _wait_for(lambda: not _dashboard_up(port), 30, "the head's GCS to go")


def _dashboard_up(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _wait_for(check, timeout: float, what: str, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def solrl(env, *args, check=True, timeout=300) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "solrl.cli", *args], env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert out.returncode == 0, f"solrl {' '.join(args)}: {out.stderr[-3000:]}"
    return out


def _status(address, env, job) -> dict:
    return json.loads(solrl(env, "status", job, "--address", address, "--json").stdout)


def _rows(out: pathlib.Path) -> list[dict]:
    path = out / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _one_eval_caption(tmp_path) -> str:
    path = tmp_path / "eval.txt"
    path.write_text("a red circle\n")
    return f"eval.prompts={path}"


def test_submit_scale_stop_resume_with_every_group_trained_once(head, tmp_path):
    """Submit, scale, stop and resume as in the module's docstring; watched meanwhile by a real
    Prometheus (deploy/prometheus), which finds data for every dashboard query and sees the pool
    resizes as they happened. Without the prometheus binary that part is skipped, with a warning."""
    with _prometheus(tmp_path, metrics_port := _free_port(), token := secrets.token_hex(8)) as prometheus:
        start = time.time()
        out = _submit_scale_stop(head, tmp_path, metrics_port, token)
        if prometheus is not None:
            _check_dashboard_queries(prometheus, start, time.time(), _rows(out))
        else:
            warnings.warn("prometheus is not installed (Debian package prometheus): the dashboard queries were not checked", stacklevel=1)
    _resume_and_audit(head, out)


def _submit_scale_stop(head, tmp_path, metrics_port: int, token: str) -> pathlib.Path:
    address, env = head
    out = tmp_path / "run"
    sets = [a for s in [*TINY, _one_eval_caption(tmp_path)] for a in ("--set", s)]
    metrics = ["--metrics-port", str(metrics_port)]  # with the token passed to the job: the endpoint demands it
    job = solrl(env | {"SOLRL_METRICS_TOKEN": token}, "submit", "--address", address, "--out", str(out), *metrics, *sets).stdout.strip()
    assert job.startswith("solrl-")

    # the CLI finds the run's control service (what a user does); the waits below then ask it
    # directly, without a CLI process each time, which would take the run's CPU
    starting = _wait_for(lambda: _status(address, env, job)["run"], 300, "the run's control service")
    endpoint = parse_announcement(solrl(env, "logs", job, "--address", address).stdout)["address"]

    def run_status() -> dict:
        return status_dict(ControlClient(endpoint, token=env["RAY_AUTH_TOKEN"], timeout_s=10).status())  # the run's control token: the Ray token

    def running_at(iteration):
        run = run_status()
        return run if run["state"] == "running" and int(run["iteration"]) >= iteration else None

    def scaled(size: int) -> None:  # acknowledged at once, applied as soon as the run can
        said = solrl(env, "scale", job, "--address", address, "--rollout", str(size)).stdout.strip()
        assert said in (f"rollout: {size} workers", f"rollout: {size} workers requested; pending until the run can apply it (`solrl status` shows it)"), said
        _wait_for(lambda: {p["name"]: p["size"] for p in run_status()["pools"]}.get("rollout") == size, 300, f"status at {size} rollout workers")

    # scaled while the run still starts its workers and evaluates the base model
    assert int(starting["iteration"]) == 0, starting
    scaled(3)
    run = _wait_for(lambda: running_at(1), 300, "the run's first iteration")
    assert {p["name"]: p["size"] for p in run["pools"]} == {"rollout": 3, "regen": 1}
    assert run["out"] == str(out) and not run.get("pending")
    # checkpoints are written on a thread after their row: status names one once it is whole on disk
    checkpointed = _wait_for(lambda: (r := run_status())["last_checkpoint"] and r, 300, "status naming the first checkpoint")
    assert pathlib.Path(checkpointed["last_checkpoint"]).parent == out / "checkpoints", checkpointed["last_checkpoint"]

    # 5 rollout workers do not fit the head's 2 CPUs: two wait for room while the run goes on
    for size in (5, 1):
        seen = len(_rows(out))  # rows from here on may show the new size
        scaled(size)
        if size == 5:
            room = lambda lines: [w for w in lines if re.fullmatch(r"rollout-\d+: waiting for resources \{CPU: 0.5\} for \d+ s", w)]
            _wait_for(lambda: len(room(run_status()["waiting_for"])) == 2, 120, "two rollout workers waiting for room")
            waiting = _status(address, env, job)["run"]["waiting_for"]  # and `solrl status` says so
            assert len(room(waiting)) == 2, waiting
        row = _wait_for(lambda s=seen, n=size: [r for r in _rows(out)[s:] if r["workers"]["rollout"] == n], 300, f"a metrics row at {size} rollout workers")
        assert row[0]["workers"]["rollout"] == size

    # the control service wants the token: none, or a wrong one, is refused
    for bad_token in ("", "wrong"):
        with pytest.raises(grpc.RpcError) as err:
            ControlClient(endpoint, token=bad_token, timeout_s=10).scale("rollout", 5)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    bad = solrl(env, "scale", job, "--address", address, "--learner", "2", check=False)
    assert bad.returncode == 2 and "unrecognized arguments: --learner" in bad.stderr

    stopped = solrl(env, "stop", job, "--address", address, "--timeout", "300")
    assert f"{job}: SUCCEEDED" in stopped.stdout
    done = len(_rows(out))
    assert 3 <= done < 400, done
    logs = solrl(env, "logs", job, "--address", address).stdout
    # the worker the first scale-up started says what its start-up waited on, stage by stage
    assert re.search(r"rollout-\d+ is ready [\d.]+ s after it was spawned \((waiting for resources|importing and building its model) ", logs), logs[-3000:]
    assert "a stop was requested" in logs and f"Prometheus metrics at http://127.0.0.1:{metrics_port}/metrics" in logs
    return out


def _resume_and_audit(head, out: pathlib.Path) -> None:
    address, env = head
    done = len(_rows(out))
    again = solrl(env, "submit", "--address", address, "--resume", str(out), "--set", f"train.iterations={done + 1}").stdout.strip()
    _wait_for(lambda: _status(address, env, again)["status"] in ("SUCCEEDED", "FAILED", "STOPPED"), 300, "the resumed run to end", every=3)
    assert _status(address, env, again)["status"] == "SUCCEEDED", solrl(env, "logs", again, "--address", address).stdout[-3000:]
    rows = _rows(out)
    assert [r["iteration"] for r in rows] == list(range(done + 1))
    # the shipped max_policy_lag=1: the next iteration explores while the learners train, one version behind
    assert rows[0]["policy_lag"] == 0 and {r["policy_lag"] for r in rows[1:]} <= {0, 1} and any(r["policy_lag"] == 1 for r in rows)
    assert all(not r["dropped"] for r in rows)
    audit = audit_log(out / "candidates", done + 1, 3, 4)
    assert audit["lost"] == 0 and audit["duplicated"] == 0 and audit["trained"] + audit["dropped"] == 3 * (done + 1), audit


def test_verbs_without_a_cluster_say_how_to_name_one(monkeypatch, capsys):
    """In-process (solrl.cli.main): the subprocess adds nothing these errors depend on."""
    from solrl.cli import main

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert main(["status", "solrl-x"]) == 1
    assert "pass --address http://HEAD:8265 or set RAY_ADDRESS" in capsys.readouterr().err
    assert main(["submit", "--address", "http://127.0.0.1:1", "--set", "train.iterations=zero"]) == 2
    assert "train.iterations" in capsys.readouterr().err


def _dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of the checked-in dashboard, with Grafana's variables
    given the values Grafana would: all runs, and a rate window of a few scrapes."""
    board = json.loads((DEPLOY / "grafana" / "solrl.json").read_text())
    return [
        (panel["title"], target["expr"].replace("$instance", ".*").replace("$__rate_interval", "10s"))
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]


def _prometheus_api(port: int, path: str, **params) -> dict:
    url = f"http://127.0.0.1:{port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]


@contextlib.contextmanager
def _prometheus(tmp_path: pathlib.Path, metrics_port: int, token: str):
    """A real Prometheus on loopback with deploy/prometheus's config, its solrl target pointed at
    `metrics_port` with `token`; yields its port, or None when the binary is absent."""
    if shutil.which("prometheus") is None:
        yield None
        return
    config_dir = tmp_path / "prometheus"
    shutil.copytree(DEPLOY / "prometheus", config_dir)
    (config_dir / "targets" / "solrl.json").write_text(json.dumps([{"targets": [f"127.0.0.1:{metrics_port}"], "labels": {"run": "test"}}]))
    (config_dir / "metrics-token").write_text(token)
    config = yaml.safe_load((config_dir / "prometheus.yml").read_text())
    config["global"] |= {"scrape_interval": "1s", "evaluation_interval": "1s"}  # the only change: seconds, not minutes, of run
    (config_dir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={config_dir / 'prometheus.yml'}", f"--web.listen-address=127.0.0.1:{port}", f"--storage.tsdb.path={tmp_path / 'tsdb'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        _wait_for(lambda: _dashboard_up(port), 60, "Prometheus to listen")
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def _check_dashboard_queries(port: int, start: float, end: float, rows: list[dict]) -> None:
    """Both jobs were scraped, every query of the checked-in Grafana dashboard returns data over
    the run, and the pool-size series shows the resizes the run made."""
    up = _prometheus_api(port, "query_range", query="max by (job) (max_over_time(up[1m]))", start=start, end=end, step="5s")["result"]
    assert {series["metric"]["job"] for series in up if any(v == "1" for _, v in series["values"])} == {"solrl", "ray"}, up
    queries = _dashboard_queries()
    assert len(queries) >= 20
    empty = [(title, expr) for title, expr in queries if not _prometheus_api(port, "query_range", query=expr, start=start, end=end, step="1s")["result"]]
    assert not empty, f"dashboard queries without data: {empty}"
    sizes = _prometheus_api(port, "query_range", query='solrl_pool_workers{pool="rollout"}', start=start, end=end, step="1s")["result"][0]["values"]
    seen = [int(float(v)) for _, v in sizes]
    assert [n for i, n in enumerate(seen) if i == 0 or n != seen[i - 1]] == [2, 3, 5, 1]
    iterations = _prometheus_api(port, "query", query="max_over_time(solrl_iteration[1h])", time=end)["result"]
    assert int(float(iterations[0]["value"][1])) == len(rows)


def test_submit_waits_for_the_job_agent_of_a_fresh_cluster(monkeypatch):
    """Just after `ray start --head` the job server can answer 'No available agent to submit job,
    please try again later' (seen in CI): submit tries again until the agent is there; any other
    error goes straight to the user. The client below stands in for Ray's job server only."""
    from solrl.cluster import jobs

    class Server:
        def __init__(self, errors):
            self.errors, self.calls = list(errors), 0

        def submit_job(self, **_):
            self.calls += 1
            if self.errors:
                raise RuntimeError(self.errors.pop(0))
            return "solrl-x"

    monkeypatch.setattr(jobs.time, "sleep", lambda _: None)
    agent = "Request failed with status code 500: No available agent to submit job, please try again later.."
    fresh = Server([agent, agent])
    assert jobs.submit(fresh, "solrl train", "solrl-x", None, None, None) == "solrl-x" and fresh.calls == 3
    with pytest.raises(RuntimeError, match="status code 400"):
        jobs.submit(Server(["Request failed with status code 400: bad runtime_env"]), "solrl train", "solrl-x", None, None, None)
