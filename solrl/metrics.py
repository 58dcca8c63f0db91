"""Every Prometheus metric of a run, defined once, and the endpoint that serves them.

The driver fills them from the same per-iteration row it writes to metrics.jsonl
(`RunMetrics.observe_iteration`), so the dashboard and the run directory never disagree.
The endpoint binds to loopback by default and demands a bearer token when bound elsewhere.
"""

from __future__ import annotations

import hmac
import socket
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from solrl.cost import PURPOSES
from solrl.nbytes import KINDS as BYTE_KINDS

LOOPBACK = ("127.0.0.1", "localhost", "::1")
TOKEN_ENV = "SOLRL_METRICS_TOKEN"
# why a record leaves a run untrained: a group older than rollout.max_policy_lag, a group still in
# flight when the run ended, an image whose reward was NaN or infinite
DROP_REASONS = ("stale", "run_ended", "non_finite_reward")


class RunMetrics:
    """The run's metrics in their own registry (several runs may share a process, e.g. tests)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = r = registry or CollectorRegistry()
        self.iteration = Gauge("solrl_iteration", "Iterations completed", registry=r)
        self.policy_version = Gauge("solrl_policy_version", "Policy version the learner has published", registry=r)
        self.candidates = Counter("solrl_candidates", "Candidates explored (proxy-scored seeds)", registry=r)
        self.regenerated = Counter("solrl_regenerated", "Samples regenerated at full precision", registry=r)
        self.stage_seconds = Gauge("solrl_stage_seconds", "Seconds spent in each stage in the last iteration", ["stage"], registry=r)
        self.iteration_seconds = Gauge("solrl_iteration_seconds", "End-to-end seconds of the last iteration", registry=r)
        self.busy_ratio = Gauge("solrl_worker_busy_ratio", "Fraction of the last iteration a worker spent working", ["worker"], registry=r)
        self.queue_depth = Gauge("solrl_queue_depth", "Items waiting in a driver queue", ["queue"], registry=r)
        self.policy_lag = Gauge("solrl_policy_lag", "Largest version lag among samples trained in the last iteration", registry=r)
        self.policy_lag_bound = Gauge("solrl_policy_lag_bound", "rollout.max_policy_lag: the lag the run allows", registry=r)
        self.sync_seconds = Gauge("solrl_weight_sync_seconds", "Seconds to publish and apply the last weight update", registry=r)
        self.sync_bytes = Counter("solrl_weight_sync_bytes", "Bytes of weight updates published", registry=r)
        self.spearman = Gauge("solrl_proxy_spearman", "Proxy vs BF16 reward Spearman rho, last iteration", registry=r)
        self.kendall = Gauge("solrl_proxy_kendall", "Proxy vs BF16 reward Kendall tau, last iteration", registry=r)
        self.reward = Gauge("solrl_reward", "Reward statistics of the last iteration", ["source", "stat"], registry=r)
        self.loss = Gauge("solrl_loss", "DiffusionNFT loss of the last iteration", registry=r)
        self.learner = Gauge(
            "solrl_learner",
            "The learner's last step: kl (to the base model), kl_weight (train.nft.kl_target adapts it), lr (train.optim.schedule), grad_norm (before clipping)",
            ["stat"],
            registry=r,
        )
        self.dropped = Counter("solrl_dropped_records", "Records dropped and why", ["reason"], registry=r)
        self.restarts = Counter("solrl_worker_restarts", "Workers replaced after dying", ["pool"], registry=r)
        self.starting = Gauge("solrl_workers_starting", "Workers starting: waiting for resources, importing and building their model, or receiving weights", ["pool"], registry=r)
        self.pool_workers = Gauge("solrl_pool_workers", "Workers serving in each pool at the end of the last iteration", ["pool"], registry=r)
        self.pool_spares = Gauge("solrl_pool_spare_workers", "Spare workers kept started beside each pool (cluster.spare_rollout_workers)", ["pool"], registry=r)
        self.modeled_cost = Counter(
            "solrl_modeled_cost_bf16_calls", "Modeled GPU cost of the model calls made, in BF16 calls (solrl/cost.py)", ["purpose"], registry=r
        )
        self.bytes_moved = Counter("solrl_bytes_moved", "Bytes that crossed between processes, by kind (docs/architecture.md)", ["kind"], registry=r)
        self.autoscale = Counter("solrl_autoscale_decisions", "Pool resizes made by cluster.autoscale", ["pool", "direction"], registry=r)
        # rollout.precision_control
        self.audit_spearman = Gauge(
            "solrl_explore_audit_spearman", "Audited Spearman of explore previews against BF16 on random seeds, last iteration", ["rung"], registry=r
        )
        self.audit_sentinel = Gauge(
            "solrl_explore_audit_sentinel",
            "The selected seeds' preview Spearman averaged over precision_control.sentinel_window iterations: audits run while it is below the sentinel",
            registry=r,
        )
        self.audited = Counter("solrl_explore_audited_iterations", "Iterations the explore audit checked (each costs its regenerations and previews)", registry=r)
        self.explore_precision = Gauge("solrl_explore_precision", "1 for the precision explore runs at (rollout.precision_control)", ["precision"], registry=r)
        self.precision_switches = Counter("solrl_explore_precision_switches", "Moves of the explore precision along its ladder", ["source", "target"], registry=r)

    def prime(self, pools: dict[str, int], max_policy_lag: int, spares: dict[str, int] | None = None, ladder: Sequence[str] = (), start: str = "") -> None:
        """Export every known label set before the first iteration (pool sizes and spares as
        configured, counts at zero), so a dashboard or an alert sees "no restarts yet" as 0, not as
        a missing series; with rollout.precision_control, its `ladder` and the `start` rung."""
        self.policy_lag_bound.set(max_policy_lag)
        for precision in ladder:
            self.explore_precision.labels(precision).set(1 if precision == start else 0)
            for other in ladder:
                if other != precision:
                    self.precision_switches.labels(precision, other)
        for pool, size in pools.items():
            self.restarts.labels(pool)
            self.starting.labels(pool)
            self.pool_workers.labels(pool).set(size)
            self.pool_spares.labels(pool).set((spares or {}).get(pool, 0))
        for reason in DROP_REASONS:
            self.dropped.labels(reason)
        for direction in ("up", "down"):
            self.autoscale.labels("rollout", direction)
        for purpose in PURPOSES:
            self.modeled_cost.labels(purpose)
        for kind in BYTE_KINDS:
            self.bytes_moved.labels(kind)

    def observe_iteration(self, row: dict) -> None:
        """Update every per-iteration metric from one metrics.jsonl row."""
        seconds = row.get("seconds", {})
        total = float(row.get("iteration_seconds") or sum(seconds.values()) or 0.0)
        self.iteration.set(row["iteration"] + 1)
        self.policy_version.set(row["version"])
        self.candidates.inc(row["candidates"])
        self.regenerated.inc(row["regenerated"])
        for stage, s in seconds.items():
            self.stage_seconds.labels(stage).set(s)
        self.iteration_seconds.set(total)
        for worker, ratio in row.get("busy", {}).items():
            self.busy_ratio.labels(worker).set(ratio)
        for queue, depth in row.get("queues", {}).items():
            self.queue_depth.labels(queue).set(depth)
        self.policy_lag.set(row.get("policy_lag", 0))
        if "sync" in seconds:
            self.sync_seconds.set(seconds["sync"])
        self.sync_bytes.inc(row.get("sync_bytes", 0))
        self.spearman.set(row["spearman"])
        self.kendall.set(row["kendall"])
        for source in ("proxy", "bf16"):
            for stat in ("mean", "max", "std"):
                key = f"{source}_reward_{stat}"
                if key in row:
                    self.reward.labels(source, stat).set(row[key])
        self.loss.set(row["loss"])
        for stat in ("kl", "kl_weight", "lr", "grad_norm"):
            if stat in row:
                self.learner.labels(stat).set(row[stat])
        for reason, n in row.get("dropped", {}).items():
            self.dropped.labels(reason).inc(n)
        if row.get("excluded_rewards"):
            self.dropped.labels("non_finite_reward").inc(row["excluded_rewards"])
        for pool, n in row.get("restarts", {}).items():
            self.restarts.labels(pool).inc(n)
        for pool, n in row.get("workers", {}).items():
            self.pool_workers.labels(pool).set(n)
        for pool, n in row.get("spares", {}).items():
            self.pool_spares.labels(pool).set(n)
        for purpose, cost in row.get("modeled_cost", {}).items():
            self.modeled_cost.labels(purpose).inc(cost)
        for kind, n in row.get("bytes", {}).items():
            self.bytes_moved.labels(kind).inc(n)
        for pool, change in row.get("autoscale", {}).items():
            self.autoscale.labels(pool, "up" if change > 0 else "down").inc()
        if "audit" in row:
            self._observe_audit(row["audit"])

    def _observe_audit(self, audit: dict) -> None:
        for rung, key in (("explore", "spearman"), ("cheaper", "cheaper_spearman"), ("safer", "safer_spearman")):
            if key in audit:
                self.audit_spearman.labels(rung).set(audit[key])
        if audit.get("sentinel") is not None:
            self.audit_sentinel.set(audit["sentinel"])
        if "spearman" in audit:
            self.audited.inc()
        switch = audit.get("switch")
        if switch is not None:
            self.precision_switches.labels(switch["from"], switch["to"]).inc()
            self.explore_precision.labels(switch["from"]).set(0)
        self.explore_precision.labels(switch["to"] if switch else audit["precision"]).set(1)

    def render(self) -> bytes:
        """The exposition text Prometheus scrapes."""
        return generate_latest(self.registry)


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class MetricsServer:
    """Serves /metrics over HTTP in a daemon thread; a token is required off loopback."""

    def __init__(self, metrics: RunMetrics, port: int, host: str = "127.0.0.1", token: str | None = None, idle_timeout: float = 10.0):
        if host not in LOOPBACK and not token:
            raise ValueError(
                f"metrics host {host!r} is not loopback and no token is set; pass a token "
                "(SOLRL_METRICS_TOKEN) or bind to 127.0.0.1"
            )
        expected = f"Bearer {token}".encode() if token else None

        class Handler(BaseHTTPRequestHandler):
            timeout = idle_timeout  # a connection that sends nothing is closed, not held open

            def do_GET(self):  # noqa: N802 (http.server's naming)
                if expected is not None and not hmac.compare_digest(self.headers.get("Authorization", "").encode(), expected):
                    self.send_error(401, "missing or wrong bearer token")
                    return
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics is served")
                    return
                body = metrics.render()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # scrapes every few seconds would flood the console
                pass

        server_class = _IPv6Server if ":" in host else ThreadingHTTPServer
        self.server = server_class((host, port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="solrl-metrics", daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop serving and release the port."""
        self.server.shutdown()
        self.server.server_close()
