"""The users' verbs for runs on a Ray cluster: submit, status, logs, scale, stop.

Each takes --address http://HEAD:8265 or reads RAY_ADDRESS, as `ray job` does. Errors are one
line on stderr with exit status 2 (bad input, nothing sent) or 1 (the cluster or run said no).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

import grpc

from solrl.metrics import LOOPBACK, TOKEN_ENV


def _fail(message: str, code: int = 1) -> int:
    print(f"solrl: {message}", file=sys.stderr)
    return code


def _submit(args: argparse.Namespace) -> int:
    from solrl.cluster import jobs
    from solrl.config import ConfigError, load_config

    config = None
    if not args.resume:
        try:
            base = None if args.config is None else (f"{args.working_dir}/{args.config}" if args.working_dir else args.config)
            config = load_config(base, args.set)
        except ConfigError as exc:
            return _fail(str(exc), 2)
    token = os.environ.get(TOKEN_ENV)
    if args.metrics_port is not None and args.metrics_host not in LOOPBACK and not token:
        return _fail(f"--metrics-host {args.metrics_host} is not loopback and {TOKEN_ENV} is not set; set a token or bind 127.0.0.1", 2)
    try:
        client = jobs.job_client(args.address)
        job_id = args.job_id or jobs.new_job_id()
        out = args.out or (None if args.resume else f"~/solrl-runs/{job_id}")
        command, upload = jobs.entrypoint(config, args.config, args.set, out, args.resume, args.metrics_port, args.working_dir, args.metrics_host)
        jobs.submit(client, command, job_id, out or args.resume, upload, args.runtime_env, {TOKEN_ENV: token} if token else None)
    except jobs.JobError as exc:
        return _fail(str(exc))
    print(job_id)
    print(f"solrl: submitted `{command}`; follow it with `solrl logs {job_id} --follow`", file=sys.stderr)
    return 0


def _status(args: argparse.Namespace) -> int:
    from solrl.cluster import jobs

    try:
        client = jobs.job_client(args.address)
        state = jobs.job_status(client, args.job)
        run, problem = None, None
        if state not in jobs.TERMINAL:
            try:
                control = jobs.control_of(client, args.job, tls_root_cert=args.tls_root_cert)
            except jobs.JobError:
                control = None  # not started far enough to serve status
            if control is not None:
                try:
                    run = jobs.status_dict(control.status())
                except grpc.RpcError as exc:  # e.g. the run is shutting down, or binds where we cannot reach
                    problem = str(_control_error(jobs, control.address, exc))
                finally:
                    control.close()
    except jobs.JobError as exc:
        return _fail(str(exc))
    if args.json:
        print(jobs.dumps({"job": args.job, "status": state, "run": run} | ({"control": problem} if problem else {})))
    else:
        print(jobs.describe_status(args.job, state, run) + (f"\n{problem}" if problem else ""))
    return 0


def _logs(args: argparse.Namespace) -> int:
    from solrl.cluster import jobs

    try:
        client = jobs.job_client(args.address)
        jobs.job_status(client, args.job)
    except jobs.JobError as exc:
        return _fail(str(exc))
    if not args.follow:
        print(client.get_job_logs(args.job), end="")
        return 0

    async def follow() -> None:
        async for lines in client.tail_job_logs(args.job):
            print(lines, end="", flush=True)

    asyncio.run(follow())
    return 0


def _control_error(jobs, address: str, exc: grpc.RpcError):
    """Not reachable (nothing answers at the address) told apart from reachable but not answering."""
    detail = f"{exc.code().name}: {exc.details()}"
    return jobs.not_answering(address, detail) if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED else jobs.unreachable(address, detail)


def _with_control(args: argparse.Namespace, act) -> int:
    from solrl.cluster import jobs

    try:
        client = jobs.job_client(args.address)
        control = jobs.control_of(client, args.job, tls_root_cert=args.tls_root_cert)
        try:
            return act(client, control)
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.FAILED_PRECONDITION):
                return _fail(f"the run refused: {exc.code().name}: {exc.details()}")
            raise _control_error(jobs, control.address, exc) from None
        finally:
            control.close()
    except jobs.JobError as exc:
        return _fail(str(exc))


def _scale(args: argparse.Namespace) -> int:
    sizes = {pool: n for pool, n in (("rollout", args.rollout), ("regen", args.regen), ("reward", args.reward)) if n is not None}
    if not sizes:
        return _fail("solrl scale: give at least one of --rollout N, --regen N, --reward N", 2)
    if any(n < 1 for n in sizes.values()):
        return _fail(f"solrl scale: pool sizes must be at least 1, got {sizes}", 2)

    def act(client, control) -> int:
        for pool, n in sizes.items():
            reply = control.scale(pool, n)
            print(f"{pool}: {reply.size} workers" if reply.applied else f"{pool}: {reply.size} workers requested; pending until the run can apply it (`solrl status` shows it)")
        return 0

    return _with_control(args, act)


def _stop(args: argparse.Namespace) -> int:
    from solrl.cluster import jobs

    if args.force:
        try:
            client = jobs.job_client(args.address)
            jobs.job_status(client, args.job)
            client.stop_job(args.job)
        except jobs.JobError as exc:
            return _fail(str(exc))
        print(f"{args.job}: stopped without a final checkpoint (resume starts from the last periodic one)")
        return 0

    def act(client, control) -> int:
        control.stop()
        print(f"{args.job}: stopping after the iteration in progress, with a checkpoint", file=sys.stderr)
        deadline = time.monotonic() + args.timeout
        while (state := jobs.job_status(client, args.job)) not in jobs.TERMINAL:
            if time.monotonic() > deadline:
                return _fail(f"{args.job} is still {state} after --timeout {args.timeout:g}s; it stops once its iteration ends")
            time.sleep(1)
        print(f"{args.job}: {state}")
        return 0 if state in ("SUCCEEDED", "STOPPED") else 1

    return _with_control(args, act)


def add_commands(sub) -> None:
    """Register the cluster verbs on the `solrl` parser's subcommands."""

    def verb(name: str, help: str, func, job: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        if job:
            p.add_argument("job", help="the job id `solrl submit` printed")
        p.add_argument("--address", help="the cluster's job server, http://HEAD:8265 (default: RAY_ADDRESS)")
        p.set_defaults(func=func)
        return p

    submit = verb("submit", "submit `solrl train` to a Ray cluster as a job; prints the job id", _submit, job=False)
    submit.add_argument("config", nargs="?", help="YAML run config (default: the shipped shapes.yaml)")
    submit.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    submit.add_argument("--working-dir", help="folder uploaded as the job's working dir (CONFIG is then relative to it)")
    submit.add_argument("--runtime-env", help="YAML/JSON file of Ray runtime_env settings (env_vars, pip, ...)")
    submit.add_argument("--out", help="run folder on the head node (default: ~/solrl-runs/JOB)")
    submit.add_argument("--resume", metavar="DIR", help="continue the run in this folder on the head node")
    submit.add_argument("--metrics-port", type=int, help="serve the run's Prometheus metrics on PORT")
    submit.add_argument(
        "--metrics-host", default="127.0.0.1", help="address the metrics endpoint binds on the driver's node (any but loopback needs SOLRL_METRICS_TOKEN, which is passed to the job)"
    )
    submit.add_argument("--job-id", help="the job id to use (default: solrl-<time>-<random>)")

    status = verb("status", "a job's state and its run's iteration, pools, throughput, lag and fidelity", _status)
    status.add_argument("--json", action="store_true", help="one JSON object instead of text")
    logs = verb("logs", "a job's log", _logs)
    logs.add_argument("--follow", action="store_true", help="keep printing until the job ends")
    scale = verb("scale", "resize a running job's worker pools", _scale)
    for pool in ("rollout", "regen", "reward"):
        scale.add_argument(f"--{pool}", type=int, metavar="N", help=f"{pool} workers")
    stop = verb("stop", "end a job after its iteration in progress, with a checkpoint (`solrl submit --resume` continues it)", _stop)
    stop.add_argument("--force", action="store_true", help="stop the job at once, without the final checkpoint")
    stop.add_argument("--timeout", type=float, default=600, help="seconds to wait for the job to end")
    for p in (status, scale, stop):
        p.add_argument("--tls-root-cert", help="PEM certificate (or CA) of a control service that serves TLS")
