"""RemoteReward: a reward scored by a reward service over gRPC (solrl.rewards.service).

Failure policy. Each request has a deadline (`timeout_s`). UNAVAILABLE (server down or
restarting) and ABORTED are retried `retries` times with exponential backoff: the request did not
reach a working reward. A request past its deadline is not sent again: the server may still be
scoring it (a reward is not interrupted mid-chunk), and a resend would queue behind it and pile
work onto a server that is already too slow. Anything else (a malformed or oversized request, a
wrong token, a crash in the reward) is not retried either. When a request fails:
- on_failure="raise" (default): RemoteRewardError. The sampler's task fails and nothing it scored
  is used; the run stops with the error and can be resumed from its last checkpoint.
- on_failure="nan": the images of that request score NaN. The selector quarantines non-finite
  rewards (counted in the run's `excluded_rewards`), so a flaky service costs samples, not the run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Literal

import grpc
import torch

from solrl.grpc_auth import bearer, client_channel
from solrl.rewards.service import TOKEN_ENV
from solrl.rewards.v1 import reward_pb2, reward_pb2_grpc
from solrl.rewards.wire import Encoding, encode_images

RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED}


class RemoteRewardError(RuntimeError):
    """The reward service could not score a request; the message says why and what to check."""


class RemoteReward:
    """Scores images through a reward service; see the module docstring for the failure policy."""

    def __init__(
        self,
        address: str,
        token: str | None = None,
        timeout_s: float = 30.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        on_failure: Literal["raise", "nan"] = "raise",
        encoding: Encoding = "raw",
        batch_size: int = 64,
        max_request_bytes: int = 256 * 1024 * 1024,
        tls_root_cert: str | None = None,
    ):
        if on_failure not in ("raise", "nan"):
            raise ValueError(f"on_failure={on_failure!r} is unknown; choose 'raise' or 'nan'")
        self.address, self.timeout_s, self.retries, self.backoff_s = address, timeout_s, retries, backoff_s
        self.on_failure, self.encoding, self.batch_size = on_failure, encoding, batch_size
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        self.metadata = bearer(token)
        self.channel = client_channel(address, tls_root_cert, [("grpc.max_send_message_length", max_request_bytes)])
        self.stub = reward_pb2_grpc.RewardServiceStub(self.channel)
        self.failed = 0  # images scored NaN under on_failure="nan"
        self.name = f"remote({address})"

    def info(self) -> reward_pb2.InfoResponse:
        """The server's reward name and limits."""
        return self._call(self.stub.Info, reward_pb2.InfoRequest())

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        if len(images) != len(prompts):
            raise ValueError(f"got {len(images)} images but {len(prompts)} prompts; pass one prompt per image")
        parts = []
        for start in range(0, len(images), self.batch_size):
            chunk, texts = images[start : start + self.batch_size], list(prompts[start : start + self.batch_size])
            request = reward_pb2.ScoreRequest(images=encode_images(chunk, self.encoding), prompts=texts)
            try:
                response = self._call(self.stub.Score, request)
            except RemoteRewardError:
                if self.on_failure == "raise":
                    raise
                self.failed += len(texts)
                parts.append(torch.full((len(texts),), float("nan")))
                continue
            if len(response.scores) != len(texts):
                raise RemoteRewardError(f"reward service at {self.address} returned {len(response.scores)} scores for {len(texts)} images")
            parts.append(torch.tensor(list(response.scores), dtype=torch.float32))
        return torch.cat(parts) if parts else torch.empty(0)

    def _call(self, method, request):
        last: grpc.RpcError | None = None
        for attempt in range(self.retries + 1):
            try:
                return method(request, timeout=self.timeout_s, metadata=self.metadata)
            except grpc.RpcError as exc:
                last = exc
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise RemoteRewardError(
                        f"reward service at {self.address} did not answer within timeout_s={self.timeout_s}; not resent, "
                        "since the server may still be working on it: raise timeout_s or add reward servers"
                    ) from None
                if exc.code() not in RETRYABLE:
                    raise RemoteRewardError(
                        f"reward service at {self.address} refused the request: {exc.code().name}: {exc.details()}"
                    ) from None
                if attempt < self.retries:
                    time.sleep(self.backoff_s * 2**attempt)
        raise RemoteRewardError(
            f"reward service at {self.address} failed {self.retries + 1} attempts (last: {last.code().name}: {last.details()}); "
            f"check that it is running and reachable, or raise timeout_s={self.timeout_s} / retries={self.retries}"
        )

    def close(self) -> None:
        self.channel.close()
