"""The users' verbs on a real Ray cluster: `ray start --head` with token authentication, started
here as a subprocess on loopback and torn down after. A short shapes run is submitted through
the job server, its rollout pool scaled 2 -> 3 -> 1 while it runs, stopped with a checkpoint and
resumed; the candidate log then shows every (iteration, group) trained exactly once. Control
calls without the token are refused, and a run the cluster has no room for fails with the
resources it waited for."""

import json
import os
import pathlib
import secrets
import signal
import socket
import subprocess
import sys
import time

import grpc
import pytest

pytest.importorskip("ray.job_submission", reason="the cluster verbs need ray[default] (pip install 'solrl[cluster]')")

from solrl.cluster.control import ControlClient, parse_announcement
from solrl.workers.store import audit_log
from tiny_runs import TINY_RUN

TINY = [*TINY_RUN, "train.iterations=400", "eval.grid_rows=0", "eval.best_of=0", "cluster.learner_ranks=1"]


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
    cmd = [
        sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--num-cpus=2",
        f"--port={port}", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        _wait_for(lambda: _dashboard_up(dashboard), 120, "the Ray head's job server to start")
        yield address, env
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # --block: the head takes its processes down with it
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # it waits on its workers' graceful exit; nothing here needs that
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        _wait_for(lambda: not _dashboard_up(port), 30, "the head's GCS to go")


def _dashboard_up(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
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
    address, env = head
    out = tmp_path / "run"
    sets = [a for s in [*TINY, _one_eval_caption(tmp_path)] for a in ("--set", s)]
    job = solrl(env, "submit", "--address", address, "--out", str(out), *sets).stdout.strip()
    assert job.startswith("solrl-")

    def running_at(iteration):
        run = _status(address, env, job)["run"]
        return run if run and run["state"] == "running" and int(run["iteration"]) >= iteration else None

    run = _wait_for(lambda: running_at(1), 300, "the run's first iteration")
    assert {p["name"]: p["size"] for p in run["pools"]} == {"rollout": 2, "regen": 1}
    assert run["out"] == str(out) and run["last_checkpoint"]

    # 8 rollout workers do not fit the head's 2 CPUs: two wait for room while the run goes on
    for size in (3, 8, 1):
        seen = len(_rows(out))  # rows from here on may show the new size
        assert solrl(env, "scale", job, "--address", address, "--rollout", str(size)).stdout.strip() == f"rollout: {size} workers"
        run = _status(address, env, job)["run"]
        assert {p["name"]: p["size"] for p in run["pools"]}["rollout"] == size
        if size == 8:
            _wait_for(lambda: len(_status(address, env, job)["run"]["waiting_for"]) == 2, 120, "two rollout workers waiting for room")
            assert all(w.startswith("waiting for {CPU: 0.25} for rollout-") for w in _status(address, env, job)["run"]["waiting_for"])
        row = _wait_for(lambda s=seen, n=size: [r for r in _rows(out)[s:] if r["workers"]["rollout"] == n], 300, f"a metrics row at {size} rollout workers")
        assert row[0]["workers"]["rollout"] == size

    # the control service wants the token: none, or a wrong one, is refused
    endpoint = parse_announcement(solrl(env, "logs", job, "--address", address).stdout)["address"]
    for token in ("", "wrong"):
        with pytest.raises(grpc.RpcError) as err:
            ControlClient(endpoint, token=token, timeout_s=10).scale("rollout", 5)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    bad = solrl(env, "scale", job, "--address", address, "--learner", "2", check=False)
    assert bad.returncode == 2 and "unrecognized arguments: --learner" in bad.stderr

    stopped = solrl(env, "stop", job, "--address", address, "--timeout", "300")
    assert f"{job}: SUCCEEDED" in stopped.stdout
    done = len(_rows(out))
    assert 3 <= done < 400, done
    assert "a stop was requested" in solrl(env, "logs", job, "--address", address).stdout

    again = solrl(env, "submit", "--address", address, "--resume", str(out), "--set", f"train.iterations={done + 1}").stdout.strip()
    _wait_for(lambda: _status(address, env, again)["status"] in ("SUCCEEDED", "FAILED", "STOPPED"), 300, "the resumed run to end")
    assert _status(address, env, again)["status"] == "SUCCEEDED", solrl(env, "logs", again, "--address", address).stdout[-3000:]
    rows = _rows(out)
    assert [r["iteration"] for r in rows] == list(range(done + 1))
    # the shipped max_policy_lag=1: the next iteration explores while the learners train, one version behind
    assert rows[0]["policy_lag"] == 0 and {r["policy_lag"] for r in rows[1:]} <= {0, 1} and any(r["policy_lag"] == 1 for r in rows)
    assert all(not r["dropped"] for r in rows)
    audit = audit_log(out / "candidates", done + 1, 3, 4)
    assert audit["lost"] == 0 and audit["duplicated"] == 0 and audit["trained"] + audit["dropped"] == 3 * (done + 1), audit


def test_a_run_the_cluster_has_no_room_for_fails_naming_what_it_waited_for(head, tmp_path):
    address, env = head
    sets = [a for s in [*TINY, _one_eval_caption(tmp_path), "cluster.cpus_per_worker=1", "cluster.startup_timeout_s=10"] for a in ("--set", s)]
    job = solrl(env, "submit", "--address", address, *sets).stdout.strip()
    _wait_for(lambda: _status(address, env, job)["status"] in ("SUCCEEDED", "FAILED", "STOPPED"), 240, "the job to give up")
    assert _status(address, env, job)["status"] == "FAILED"
    logs = solrl(env, "logs", job, "--address", address, "--follow", timeout=60).stdout  # returns once the job has ended
    assert "this run reserves {CPU: 4}" in logs and "missing {CPU: 2}" in logs
    assert "did not start within cluster.startup_timeout_s=10" in logs and "waiting for {CPU: 1} for" in logs


def test_verbs_without_a_cluster_say_how_to_name_one(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = solrl(env, "status", "solrl-x", check=False)
    assert out.returncode == 1 and "pass --address http://HEAD:8265 or set RAY_ADDRESS" in out.stderr
    bad = solrl(env, "submit", "--address", "http://127.0.0.1:1", "--set", "train.iterations=zero", check=False)
    assert bad.returncode == 2 and "train.iterations" in bad.stderr
