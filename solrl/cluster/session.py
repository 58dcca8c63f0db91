"""What a distributed run holds around its scheduling: the control service (its GetStatus answered
from the status published here; Scale and Checkpoint requests queued until the driver takes them
between tasks), the Prometheus endpoint, the live terminal view, and the log line they share."""

from __future__ import annotations

import pathlib
import time
from collections.abc import Callable

from solrl.cluster.control import Control, serve_control
from solrl.cluster.startup import advance
from solrl.cluster.telemetry import Telemetry
from solrl.cluster.v1.control_pb2 import RunStatus
from solrl.cluster.view import LiveView
from solrl.config import RunConfig
from solrl.metrics import MetricsServer, RunMetrics


class Session:
    def __init__(
        self,
        config: RunConfig,
        out: pathlib.Path,
        log: Callable[[str], None],
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
        metrics_token: str | None = None,
        live: bool = False,
    ):
        self.config, self.out, self.print, self.live = config, out, log, live
        self.metrics = RunMetrics()
        pools = {pool: n for pool, (n, _) in config.cluster.demands().items()}
        control = config.rollout.precision_control
        ladder = (control.ladder, config.rollout.explore_precision) if control is not None else ((), "")
        self.metrics.prime(pools, config.rollout.max_policy_lag, {"rollout": config.cluster.spare_rollout_workers}, *ladder)
        self.server = MetricsServer(self.metrics, metrics_port, metrics_host, metrics_token) if metrics_port is not None else None
        pools = ("rollout", "regen", "reward") if config.cluster.reward_workers else ("rollout", "regen")
        self.control, self.control_server = Control(pools), None
        self.view: LiveView | None = None
        self.status_at = 0.0  # time.monotonic() of the newest status
        self.last_checkpoint = ""  # the newest checkpoint's folder

    def open(self) -> None:
        if self.config.cluster.control_port is not None:
            self.control_server = serve_control(self.control, self.config.cluster)
            self.print(self.control_server.announcement)
        if self.server is not None:
            host = self.server.server.server_address[0]
            self.print(f"Prometheus metrics at http://{f'[{host}]' if ':' in host else host}:{self.server.port}/metrics")

    def starting_up(self, waiting_for: list[str]) -> None:
        """The status while the workers start: what they still wait for."""
        self.control.publish(RunStatus(state="starting", out=str(self.out), iterations=self.config.train.iterations, waiting_for=waiting_for))

    def close(self) -> None:
        self.control.close("the run has ended")
        if self.control_server is not None:
            self.control_server.stop()
        if self.view is not None:
            self.view.close()
        if self.server is not None:
            self.server.close()

    def log(self, message: str) -> None:
        (self.view.write if self.view is not None else self.print)(message)

    def show(self, total: int, first: int) -> None:
        """Draw the live view from iteration `first` on (when the run was asked for one)."""
        if self.live:
            self.view = LiveView(total, first)

    def stage(self, state, queues: dict, pools: dict) -> None:
        """The live view's progress of the oldest iteration in flight (an IterationState or None)."""
        if self.view is not None and state is not None:
            workers = {name: pool.size for name, pool in pools.items()}
            self.view.stage(len(state.candidates), len(state.regenerated) + state.dropped, len(state.groups), queues, workers)

    @property
    def stopping(self) -> bool:
        return self.control.stop_requested.is_set()

    def publish_status(self, telemetry: Telemetry, pools: dict, queues: dict, restarts: dict, version: int, first: int, every_s: float = 0.0) -> None:
        """The control service's answer to GetStatus, as of now (unless one was made less than
        `every_s` wall-clock seconds ago: it walks every worker)."""
        if time.monotonic() - self.status_at < every_s:
            return
        self.status_at = time.monotonic()
        waiting = advance(pools, self.log)
        for pool, lines in waiting.items():
            self.metrics.starting.labels(pool).set(len(lines))
        fields = {
            "state": "stopping" if self.stopping else "running", "iteration": telemetry.last.get("iteration", first - 1) + 1, "version": version,
            "iterations": self.config.train.iterations, "out": str(self.out), "last_checkpoint": self.last_checkpoint,
            "waiting_for": [line for lines in waiting.values() for line in lines],
        }  # fmt: skip
        self.control.publish(telemetry.status(pools, queues, restarts, **fields))

    def checkpointed(self, path: pathlib.Path, iteration: int) -> None:
        self.last_checkpoint = str(path)
        self.control.checkpointed(str(path), iteration)
