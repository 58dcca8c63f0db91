"""The reward service: one reward model behind gRPC (protos/solrl/rewards/v1/reward.proto).

Binds to loopback by default. Bound anywhere else it refuses to start without a token and TLS
(`tls_cert` / `tls_key`, PEM), and then every call but the health check must carry
`authorization: Bearer <token>` over the encrypted channel. Requests are proto
messages only (PNG or raw RGB bytes and strings), never pickles. Limits on images per request,
pixels per side, decoded pixels and bytes per request keep one client from exhausting the server;
violations get INVALID_ARGUMENT / RESOURCE_EXHAUSTED with a message naming the limit. Bad prompts
(a caption the reward cannot read) are INVALID_ARGUMENT too.
"""

from __future__ import annotations

import hmac
import ipaddress
import pathlib
import threading
from concurrent import futures

import grpc
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from solrl.rewards.wire import MalformedImage, TooManyPixels, decode_images
from solrl.rewards.v1 import reward_pb2, reward_pb2_grpc

TOKEN_ENV = "SOLRL_REWARD_TOKEN"
SERVICE = "solrl.v1.RewardService"
MAX_PIXELS = 256 * 1024 * 1024  # decoded pixels per request: 256 images of 1024x1024
_HEALTH_PREFIX = "/grpc.health.v1.Health/"


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only (localhost, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


SCORE_CHUNK = 32  # images scored between checks that the client still waits


class RewardServicer(reward_pb2_grpc.RewardServiceServicer):
    """Scores requests with `reward`, one batch at a time (reward models are not thread-safe).
    Work stops once the client's deadline has passed or it cancelled: no request waiting for the
    lock, or being scored, runs on for a client that has gone."""

    def __init__(self, reward, name: str, max_batch: int, max_side: int, max_request_bytes: int, max_pixels: int | None = None):
        self.reward, self.name = reward, name
        self.max_batch, self.max_side, self.max_request_bytes, self.max_pixels = max_batch, max_side, max_request_bytes, max_pixels
        self.lock = threading.Lock()
        self.requests = 0  # Score requests received, for operators and tests
        self.scored = 0  # images scored
        self.abandoned = 0  # requests stopped because their client had gone

    def Score(self, request, context):
        self.requests += 1
        n = len(request.images)
        if n != len(request.prompts):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"got {n} images but {len(request.prompts)} prompts; send one prompt per image")
        if n > self.max_batch:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{n} images exceed this server's max_batch={self.max_batch}; split the request")
        try:
            images = decode_images(request.images, self.max_side, self.max_pixels)
        except TooManyPixels as exc:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except MalformedImage as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if n == 0:
            return reward_pb2.ScoreResponse(scores=[], reward=self.name)
        prompts, scores = list(request.prompts), []
        with self.lock, torch.no_grad():
            for start in range(0, n, SCORE_CHUNK):
                if not context.is_active():  # deadline passed or cancelled, perhaps while waiting for the lock
                    self.abandoned += 1
                    context.abort(grpc.StatusCode.CANCELLED, "the client is gone; the rest of its request was not scored")
                try:
                    scores.append(self.reward(images[start : start + SCORE_CHUNK], prompts[start : start + SCORE_CHUNK]).float().cpu())
                except ValueError as exc:  # e.g. a caption the shapes reward cannot parse
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
                self.scored += len(scores[-1])
        return reward_pb2.ScoreResponse(scores=torch.cat(scores).tolist(), reward=self.name)

    def Info(self, request, context):
        return reward_pb2.InfoResponse(reward=self.name, max_batch=self.max_batch, max_request_bytes=self.max_request_bytes, max_side=self.max_side)


def _bearer(value: str) -> bytes:
    """'Bearer <token>' -> b'bearer <token>' (the scheme is case-insensitive, the token exact)."""
    scheme, _, token = value.partition(" ")
    return b"bearer " + token.encode() if scheme.lower() == "bearer" else b""


class _TokenCheck(grpc.ServerInterceptor):
    """Rejects calls without the bearer token (health checks excepted, so probes need no secret)."""

    def __init__(self, token: str):
        self.expected = b"bearer " + token.encode()

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token: send metadata 'authorization: Bearer <token>'")

        self.deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method.startswith(_HEALTH_PREFIX):
            return continuation(handler_call_details)
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization" and hmac.compare_digest(_bearer(value), self.expected):
                return continuation(handler_call_details)
        return self.deny


class RewardServer:
    """A running reward service; `stop()` shuts it down."""

    def __init__(
        self,
        reward,
        name: str,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        max_batch: int = 256,
        max_side: int = 4096,
        max_request_bytes: int = 256 * 1024 * 1024,
        workers: int = 4,
        max_pixels: int = MAX_PIXELS,
        tls_cert: str | None = None,
        tls_key: str | None = None,
    ):
        if not is_loopback(host) and not (token and tls_cert):
            raise ValueError(
                f"reward service bound to {host!r} needs a token and TLS: set {TOKEN_ENV} (clients send it as a bearer token) "
                f"and pass --tls-cert/--tls-key, or bind to 127.0.0.1"
            )
        if bool(tls_cert) != bool(tls_key):
            raise ValueError("--tls-cert and --tls-key go together: pass the PEM certificate and its private key")
        options = [("grpc.max_receive_message_length", max_request_bytes), ("grpc.max_send_message_length", max_request_bytes)]
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), interceptors=[_TokenCheck(token)] if token else [], options=options)
        self.servicer = RewardServicer(reward, name, max_batch, max_side, max_request_bytes, max_pixels)
        reward_pb2_grpc.add_RewardServiceServicer_to_server(self.servicer, self.server)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if tls_cert:
            credentials = grpc.ssl_server_credentials([(pathlib.Path(tls_key).read_bytes(), pathlib.Path(tls_cert).read_bytes())])
            self.port = self.server.add_secure_port(f"{host}:{port}", credentials)
        else:
            self.port = self.server.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise OSError(f"could not bind the reward service to {host}:{port}; is the port free?")
        self.address = f"{host}:{self.port}"
        self.server.start()
        for service in ("", SERVICE):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float | None = 1.0) -> None:
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()

    def wait(self) -> None:
        self.server.wait_for_termination()
