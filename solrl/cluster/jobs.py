"""Runs as Ray jobs: `solrl train` submitted to a cluster's job server, and the way back to a
running job's control service.

The job server speaks HTTP (Ray's dashboard port, 8265); with token authentication on, Ray's
client sends the cluster's token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token). A run
announces its control service in its log (solrl.cluster.control.ENDPOINT_TAG), which the job
server keeps: clients read the endpoint from there, so nobody copies addresses around.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import secrets
import shlex
import time
import tempfile

import yaml

from solrl.cluster.control import ControlClient, parse_announcement
from solrl.cluster.runtime import token_auth
from solrl.config import RunConfig, dump_config

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class JobError(RuntimeError):
    """A job verb could not do what was asked; the message says why and what to do."""


def job_client(address: str | None):
    """Ray's JobSubmissionClient for `address` (or RAY_ADDRESS), with token auth on."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise JobError("no cluster given: pass --address http://HEAD:8265 or set RAY_ADDRESS")
    token_auth()
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as exc:  # the job server client comes with ray[default]
        raise JobError(f"the cluster verbs need Ray's job client ({exc}); install it with pip install 'solrl[cluster]'") from None
    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError) as exc:
        raise JobError(f"cannot reach the Ray job server at {address}: {exc}") from None


def new_job_id() -> str:
    return f"solrl-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def entrypoint(
    config: RunConfig | None,
    config_path: str | None,
    sets: list[str],
    out: str | None,
    resume: str | None,
    metrics_port: int | None,
    working_dir: str | None,
    metrics_host: str = "127.0.0.1",
) -> tuple[str, str | None]:
    """(the job's command line, the working dir to upload). Without a working dir of the user's,
    the resolved config travels alone in a temporary one, as run.yaml."""
    cmd = ["solrl", "train", "--address", "auto"]
    upload = working_dir
    if resume:
        cmd += ["--resume", resume]
        cmd += [a for s in sets for a in ("--set", s)]
    elif working_dir:
        cmd += ([config_path] if config_path else []) + [a for s in sets for a in ("--set", s)]
    else:
        upload = tempfile.mkdtemp(prefix="solrl-submit-")
        (pathlib.Path(upload) / "run.yaml").write_text(dump_config(config))
        cmd.append("run.yaml")
    if out:
        cmd += ["--out", out]
    if metrics_port is not None:
        cmd += ["--metrics-port", str(metrics_port), "--metrics-host", metrics_host]
    return " ".join(shlex.quote(a) for a in cmd), upload


AGENT_WAIT_S = 60.0  # how long submit waits for a job agent on a freshly started cluster


def submit(
    client, command: str, job_id: str, out: str | None, working_dir: str | None, runtime_env_file: str | None, env_vars: dict[str, str] | None = None
) -> str:
    """Submit the job; `env_vars` (e.g. the metrics token) join the runtime env's, where anyone
    holding the cluster's token can read them, as they can everything else of the job."""
    env = yaml.safe_load(pathlib.Path(runtime_env_file).read_text()) if runtime_env_file else {}
    if not isinstance(env, dict):
        raise JobError(f"--runtime-env {runtime_env_file} must hold a mapping (e.g. env_vars, pip), got {type(env).__name__}")
    if env_vars:
        env["env_vars"] = {**env.get("env_vars", {}), **env_vars}
    if working_dir:
        env["working_dir"] = working_dir
    metadata = {"solrl_out": out or ""}
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            return client.submit_job(entrypoint=command, submission_id=job_id, runtime_env=env or None, metadata=metadata)
        except RuntimeError as exc:
            # Just after `ray start --head` the job server answers before its node's agent has
            # registered; Ray says to try again later, which a user should not have to do by hand.
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def job_status(client, job_id: str) -> str:
    try:
        return str(client.get_job_status(job_id).value)
    except RuntimeError as exc:
        raise JobError(f"job {job_id!r} is unknown to the cluster ({exc}); `ray job list` shows the jobs") from None


def control_of(client, job_id: str, token: str | None = None, tls_root_cert: str | None = None) -> ControlClient:
    """A client of the job's control service, found from the endpoint the run announced."""
    status = job_status(client, job_id)
    found = parse_announcement(client.get_job_logs(job_id))
    if found is None or status in TERMINAL:
        raise JobError(f"job {job_id} ({status}) has no control service running" + ("" if status in TERMINAL else " yet; try again once the run has started"))
    if found["tls"] and not tls_root_cert:
        raise JobError(f"job {job_id}'s control service at {found['address']} serves TLS: pass --tls-root-cert with its certificate or CA")
    return ControlClient(found["address"], token=token, tls_root_cert=tls_root_cert)


def unreachable(address: str, detail: str) -> JobError:
    hint = ""
    if address.startswith(("127.", "localhost", "[::1]")):
        hint = (
            "; it binds to loopback on the head node: run this there, or start the run with "
            "cluster.control_host=0.0.0.0 and cluster.control_tls_cert/key"
        )
    return JobError(f"cannot reach the run's control service at {address}: {detail}{hint}")


def not_answering(address: str, detail: str) -> JobError:
    return JobError(f"the run's control service at {address} is reachable but did not answer in time ({detail}); the run may be overloaded: try again, or see `solrl logs`")


def status_dict(status) -> dict:
    """A RunStatus as plain JSON-able data."""
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(status, always_print_fields_with_no_presence=True, preserving_proto_field_name=True)


def describe_status(job_id: str, job: str, run: dict | None) -> str:
    """What `solrl status` prints for people."""
    lines = [f"job {job_id}: {job}"]
    if run is None:
        return "\n".join(lines)
    lines.append(f"run: {run['state']}, iteration {run['iteration']}/{run['iterations']}, policy version {run['version']}, out {run['out']}")
    spares = lambda p: f" + {p['spares']} spare" if p.get("spares") else ""
    pools = [f"{p['name']} {p['size']}{spares(p)} (busy {p['busy']:.2f}, queued {p['queued']}, restarts {p['restarts']})" for p in run["pools"]]
    lines.append("pools: " + ", ".join(pools) + f", learner restarts {run['learner_restarts']}")
    lines.append(
        f"candidates/s {run['candidates_per_second']:.2f}, policy lag {run['policy_lag']}, proxy Spearman {run['spearman']}, "
        f"last checkpoint {run['last_checkpoint'] or 'none yet'}"
    )
    lines += [f"  {w}" for w in run["waiting_for"]]
    lines += [f"  pending: {r}" for r in run.get("pending", [])]
    return "\n".join(lines)


def dumps(data: dict) -> str:
    return json.dumps(data, sort_keys=True)
