"""The control service of a running distributed run (protos/solrl/cluster/v1/control.proto).

The driver's loop is single-threaded; the gRPC server's threads never touch its pools. A call
queues a request that the driver takes between tasks (`Control.take`), and GetStatus answers
from the snapshot the driver last published, plus the requests still pending. So a Scale is
applied where the driver would resize anyway, a Checkpoint is written after the iteration in
progress, and a Stop ends the run the way train.max_seconds does, with a checkpoint of its last
iteration. Every call is answered within ACK_S, whatever the driver is doing (starting its
workers, evaluating): with the result if the driver got to it by then, else as accepted and
pending; a request that cannot be applied (an unknown pool) is refused at once.

Every call needs the bearer token: SOLRL_CONTROL_TOKEN, or, unset, the Ray cluster's own auth
token, which anyone allowed to submit jobs to the cluster already holds.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import grpc

from solrl.cluster.v1 import control_pb2, control_pb2_grpc
from solrl.grpc_auth import SecureServer, bearer, client_channel

TOKEN_ENV = "SOLRL_CONTROL_TOKEN"
SERVICE = "solrl.cluster.v1.ControlService"
ENDPOINT_TAG = "SOLRL_CONTROL"  # the run's log line a client reads the endpoint from
ACK_S = 1.0  # how long a call waits for the driver before answering "accepted, pending"


def control_token() -> str | None:
    """SOLRL_CONTROL_TOKEN, else the Ray auth token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
    ~/.ray/auth_token, found as Ray finds it)."""
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    from ray._raylet import AuthenticationTokenLoader  # private API; ray is pinned below 3

    loader = AuthenticationTokenLoader.instance()
    loader.reset_cache()
    return loader.get_raw_token(ignore_auth_mode=True) if loader.has_token(ignore_auth_mode=True) else None


@dataclass(frozen=True)
class Request:
    kind: str  # scale | checkpoint
    args: tuple
    reply: Future
    label: str  # how RunStatus.pending shows it


class Control:
    """What the service and the driver share: queued requests, the stop flag, the last status.
    `pools`: the pools a Scale may name."""

    def __init__(self, pools: tuple[str, ...] = ("rollout", "regen")):
        self.pools = pools
        self._requests: queue.SimpleQueue[Request] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._status = control_pb2.RunStatus(state="starting")
        self._pending: list[Request] = []  # accepted, not applied yet
        self.stop_requested = threading.Event()
        self.checkpoints: list[Request] = []  # requests waiting for the next checkpoint

    def ask(self, kind: str, *args) -> Future:
        """Queue a request (refused at once if it cannot be applied); its reply comes once applied."""
        if kind == "scale":
            pool, size = args
            if pool not in self.pools:
                raise ValueError(f"pool {pool!r} is unknown; use one of {sorted(self.pools)}")
            if size < 1:
                raise ValueError(f"a {pool} pool needs at least 1 worker, got {size}")
        request = Request(kind, args, Future(), f"scale {args[0]} to {args[1]}" if kind == "scale" else "checkpoint")
        with self._lock:
            self._pending.append(request)
        request.reply.add_done_callback(lambda _: self._applied(request))
        self._requests.put(request)
        return request.reply

    def _applied(self, request: Request) -> None:
        with self._lock:
            self._pending = [r for r in self._pending if r is not request]

    def take(self) -> list[Request]:
        """The requests queued since the last call (the driver's thread calls this)."""
        taken = []
        while True:
            try:
                taken.append(self._requests.get_nowait())
            except queue.Empty:
                return taken

    def answer(self, scale: Callable[[str, int], None]) -> None:
        """Apply the queued Scale requests; Checkpoint requests wait for the next checkpoint."""
        for request in self.take():
            if request.kind == "checkpoint":
                with self._lock:
                    self.checkpoints.append(request)
                continue
            try:
                scale(*request.args)
                request.reply.set_result(request.args[1])
            except ValueError as exc:
                request.reply.set_exception(exc)

    def checkpointed(self, path: str, iteration: int) -> None:
        """A checkpoint is on disk (called from the thread that wrote it)."""
        with self._lock:
            answered, self.checkpoints = self.checkpoints, []
        for request in answered:
            request.reply.set_result((path, iteration))

    def close(self, reason: str) -> None:
        """The run is over: fail whatever still waits."""
        with self._lock:
            left, self.checkpoints = [*self.take(), *self.checkpoints], []
        for request in left:
            request.reply.set_exception(RuntimeError(reason))

    def publish(self, status: control_pb2.RunStatus) -> None:
        with self._lock:
            self._status = status

    def status(self) -> control_pb2.RunStatus:
        with self._lock:
            status = control_pb2.RunStatus.FromString(self._status.SerializeToString())
            status.pending.extend(r.label for r in self._pending)
            return status


class _Servicer(control_pb2_grpc.ControlServiceServicer):
    def __init__(self, control: Control):
        self.control = control

    def GetStatus(self, request, context):
        return self.control.status()

    def Scale(self, request, context):
        pending = control_pb2.ScaleResponse(pool=request.pool, size=request.size, applied=False)
        return self._answer(context, lambda: self.control.ask("scale", request.pool, request.size), lambda r: control_pb2.ScaleResponse(pool=request.pool, size=r, applied=True), pending)

    def Checkpoint(self, request, context):
        done = lambda r: control_pb2.CheckpointResponse(path=r[0], iteration=r[1], written=True)
        return self._answer(context, lambda: self.control.ask("checkpoint"), done, control_pb2.CheckpointResponse(written=False))

    def Stop(self, request, context):
        self.control.stop_requested.set()
        return control_pb2.StopResponse(state="stopping")

    @staticmethod
    def _answer(context, ask: Callable[[], Future], respond, pending):
        """The result if the driver applies the request within ACK_S (or the caller's deadline),
        else `pending`: accepted, applied as soon as the run can."""
        try:
            reply = ask()
            result = reply.result(timeout=min(ACK_S, context.time_remaining() or ACK_S))
        except ValueError as exc:  # it cannot be applied, e.g. an unknown pool
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except TimeoutError:
            return pending
        except RuntimeError as exc:  # the run ended first
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return respond(result)


class ControlServer:
    """The running service; `announcement` is the log line clients find it by."""

    def __init__(self, control: Control, host: str, port: int, token: str | None, tls_cert: str | None, tls_key: str | None, advertise: str):
        if not token:
            raise ValueError(f"the control service needs a token: set {TOKEN_ENV}, or give Ray a token (RAY_AUTH_TOKEN or ~/.ray/auth_token)")
        self.secure = SecureServer(
            "control service",
            lambda server: control_pb2_grpc.add_ControlServiceServicer_to_server(_Servicer(control), server),
            [SERVICE],
            host,
            port,
            token,
            tls_cert,
            tls_key,
            f"set {TOKEN_ENV} or the Ray token",
        )
        self.address = f"{advertise}:{self.secure.port}"
        self.announcement = f"{ENDPOINT_TAG} " + json.dumps({"address": self.address, "tls": self.secure.tls})

    def stop(self) -> None:
        self.secure.stop(0)


def serve_control(control: Control, cluster) -> ControlServer:
    """Start the control service for a run laid out as `cluster` (a ClusterConfig)."""
    host = cluster.control_host
    advertise = _node_ip() if host in ("0.0.0.0", "::", "[::]") else host  # a wildcard bind: say the node's address
    return ControlServer(control, host, cluster.control_port, control_token(), cluster.control_tls_cert, cluster.control_tls_key, advertise)


def _node_ip() -> str:
    import ray

    return ray.util.get_node_ip_address()


def parse_announcement(text: str) -> dict | None:
    """The last control endpoint announced in a run's log, or None."""
    found = None
    for line in text.splitlines():
        if line.startswith(ENDPOINT_TAG + " "):
            found = json.loads(line[len(ENDPOINT_TAG) + 1 :])
    return found


class ControlClient:
    """Calls a run's control service; `tls_root_cert` when it serves TLS."""

    def __init__(self, address: str, token: str | None = None, tls_root_cert: str | None = None, timeout_s: float = 60.0):
        self.address = address
        self.channel = client_channel(address, tls_root_cert)
        self.stub = control_pb2_grpc.ControlServiceStub(self.channel)
        self.metadata, self.timeout_s = bearer(token if token is not None else control_token()), timeout_s

    def status(self) -> control_pb2.RunStatus:
        return self.stub.GetStatus(control_pb2.GetStatusRequest(), timeout=self.timeout_s, metadata=self.metadata)

    def scale(self, pool: str, size: int) -> control_pb2.ScaleResponse:
        return self.stub.Scale(control_pb2.ScaleRequest(pool=pool, size=size), timeout=self.timeout_s, metadata=self.metadata)

    def checkpoint(self) -> control_pb2.CheckpointResponse:
        return self.stub.Checkpoint(control_pb2.CheckpointRequest(), timeout=self.timeout_s, metadata=self.metadata)

    def stop(self) -> str:
        return self.stub.Stop(control_pb2.StopRequest(), timeout=self.timeout_s, metadata=self.metadata).state

    def close(self) -> None:
        self.channel.close()
