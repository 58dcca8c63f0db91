"""The control service of a running distributed run (protos/solrl/cluster/v1/control.proto).

The driver's loop is single-threaded; the gRPC server's threads never touch its pools. A call
queues a request that the driver takes between tasks (`Control.take`), and GetStatus answers
from the snapshot the driver last published. So a Scale is applied where the driver would
resize anyway, a Checkpoint is written after the iteration in progress, and a Stop ends the run
the way train.max_seconds does, with a checkpoint of its last iteration.

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


class Control:
    """What the service and the driver share: queued requests, the stop flag, the last status."""

    def __init__(self):
        self._requests: queue.SimpleQueue[Request] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._status = control_pb2.RunStatus(state="starting")
        self.stop_requested = threading.Event()
        self.checkpoints: list[Future] = []  # replies waiting for the next checkpoint

    def ask(self, kind: str, *args) -> Future:
        reply: Future = Future()
        self._requests.put(Request(kind, args, reply))
        return reply

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
                self.checkpoints.append(request.reply)
                continue
            try:
                scale(*request.args)
                request.reply.set_result(request.args[1])
            except ValueError as exc:
                request.reply.set_exception(exc)

    def checkpointed(self, path: str, iteration: int) -> None:
        for reply in self.checkpoints:
            reply.set_result((path, iteration))
        self.checkpoints = []

    def close(self, reason: str) -> None:
        """The run is over: fail whatever still waits."""
        for request in self.take():
            request.reply.set_exception(RuntimeError(reason))
        for reply in self.checkpoints:
            reply.set_exception(RuntimeError(reason))
        self.checkpoints = []

    def publish(self, status: control_pb2.RunStatus) -> None:
        with self._lock:
            self._status = status

    def status(self) -> control_pb2.RunStatus:
        with self._lock:
            return control_pb2.RunStatus.FromString(self._status.SerializeToString())


class _Servicer(control_pb2_grpc.ControlServiceServicer):
    def __init__(self, control: Control):
        self.control = control

    def GetStatus(self, request, context):
        return self.control.status()

    def Scale(self, request, context):
        return self._wait(context, self.control.ask("scale", request.pool, request.size), lambda r: control_pb2.ScaleResponse(pool=request.pool, size=r))

    def Checkpoint(self, request, context):
        return self._wait(context, self.control.ask("checkpoint"), lambda r: control_pb2.CheckpointResponse(path=r[0], iteration=r[1]))

    def Stop(self, request, context):
        self.control.stop_requested.set()
        return control_pb2.StopResponse(state="stopping")

    @staticmethod
    def _wait(context, reply: Future, respond):
        try:
            result = reply.result(timeout=context.time_remaining())
        except ValueError as exc:  # the driver refused it, e.g. an unknown pool
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except TimeoutError:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the driver did not take the request in time; it is still queued")
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

    def scale(self, pool: str, size: int) -> int:
        return self.stub.Scale(control_pb2.ScaleRequest(pool=pool, size=size), timeout=self.timeout_s, metadata=self.metadata).size

    def checkpoint(self) -> control_pb2.CheckpointResponse:
        return self.stub.Checkpoint(control_pb2.CheckpointRequest(), timeout=self.timeout_s, metadata=self.metadata)

    def stop(self) -> str:
        return self.stub.Stop(control_pb2.StopRequest(), timeout=self.timeout_s, metadata=self.metadata).state

    def close(self) -> None:
        self.channel.close()
