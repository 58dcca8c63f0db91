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

import threading

import grpc
import torch

from solrl.grpc_auth import SecureServer
from solrl.rewards.v1 import reward_pb2, reward_pb2_grpc
from solrl.rewards.wire import MalformedImage, TooManyPixels, decode_images

TOKEN_ENV = "SOLRL_REWARD_TOKEN"
SERVICE = "solrl.v1.RewardService"
MAX_PIXELS = 256 * 1024 * 1024  # decoded pixels per request: 256 images of 1024x1024
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
        options = [("grpc.max_receive_message_length", max_request_bytes), ("grpc.max_send_message_length", max_request_bytes)]
        self.servicer = RewardServicer(reward, name, max_batch, max_side, max_request_bytes, max_pixels)
        self.secure = SecureServer(
            "reward service",
            lambda server: reward_pb2_grpc.add_RewardServiceServicer_to_server(self.servicer, server),
            [SERVICE],
            host,
            port,
            token,
            tls_cert,
            tls_key,
            f"set {TOKEN_ENV} (clients send it as a bearer token)",
            workers,
            options,
        )
        self.server, self.health, self.port, self.address = self.secure.server, self.secure.health, self.secure.port, self.secure.address

    def stop(self, grace: float | None = 1.0) -> None:
        self.secure.stop(grace)

    def wait(self) -> None:
        self.secure.wait()
