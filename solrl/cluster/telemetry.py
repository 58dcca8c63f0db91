"""The distributed run's metrics row: the shared iteration row plus what only pools have —
stage spans, worker busy ratios, queue depths, policy lag, weight-sync bytes and the drops and
restarts since the previous row. `bytes` holds what crossed between processes since the previous row, by kind (solrl.cluster.traffic).
The row goes out as one per-iteration event to metrics.jsonl,
Prometheus, the live view and any other subscriber (solrl.run)."""

from __future__ import annotations

import math
from collections.abc import Callable

from solrl.cluster.ledger import IterationState
from solrl.cluster.pools import WorkerPool
from solrl.cluster.traffic import Traffic
from solrl.cluster.v1 import control_pb2
from solrl.runs import STEP_STATS, IterationRow, iteration_row



class Telemetry:
    def __init__(self, traffic: Traffic, clock: Callable[[], float]):
        self.traffic, self.clock = traffic, clock
        self.last_row_at: float | None = None
        self.seen: dict[str, dict[str, int]] = {}
        self.last: dict = {}  # the newest row, with its candidates per second

    def row(
        self,
        it: int,
        version: int,
        state: IterationState,
        pools: dict[str, WorkerPool],
        queues: dict[str, int],
        timing: dict[str, float],
        stats: dict | None,
        trained_at: int,
        dropped: dict[str, int],
        restarts: dict[str, int],
    ) -> IterationRow:
        """`timing`: regen_done (when the iteration's last group was regenerated), learn and
        sync seconds; `trained_at`: the version the step trained from."""
        keys = list(state.regenerated)
        selections = [state.selections[k] for k in keys]
        bf16 = [list(state.regenerated[k].rewards) for k in keys]
        versions = [state.regenerated[k].version for k in keys]
        explore_end = state.explore_done or timing["regen_done"]
        seconds = {
            "explore": explore_end - state.started,
            "regenerate": max(0.0, timing["regen_done"] - explore_end),
            "learn": timing["learn"],
            "sync": timing["sync"],
        }
        now = self.clock()
        # Busy seconds accumulate between rows; with overlapping iterations that interval is
        # shorter than the iteration's own span, so utilization is measured over it.
        interval = now - max(state.started, self.last_row_at or state.started)
        self.last_row_at = now
        row = iteration_row(it, version, list(state.candidates.values()), selections, bf16, seconds, stats or dict.fromkeys(STEP_STATS, float("nan")))
        busy = {}
        for pool in pools.values():
            for w in pool.workers.values():
                if not w.spare:  # a spare takes no task: its idling is by design
                    busy[w.name] = round(min(1.0, w.busy_seconds / interval), 3) if interval > 0 else 0.0
                w.busy_seconds = 0.0
        row.update(
            iteration_seconds=round(now - state.started, 3),
            busy=busy,
            queues=queues,
            policy_lag=max((trained_at - v for v in versions), default=0),
            sync_bytes=int(stats.get("update_bytes", 0)) if stats else 0,
            dropped=self.delta("dropped", dropped),
            restarts=self.delta("restarts", restarts),
            workers={name: pool.size for name, pool in pools.items()},
            spares={name: pool.spare_count for name, pool in pools.items() if pool.spares},
            bytes=self.traffic.delta(),
        )
        self.last = row | {"candidates_per_second": row["candidates"] / interval if interval > 0 else 0.0}
        return row

    def status(self, pools: dict[str, WorkerPool], queues: dict[str, int], restarts: dict[str, int], **fields) -> control_pb2.RunStatus:
        """The control service's RunStatus; `fields`: state, iteration, iterations, version, out,
        last_checkpoint, waiting_for. The rest comes from the newest row."""
        last, queue_of = self.last, {"rollout": "explore", "regen": "regenerate", "lent": "regenerate", "reward": "score"}
        pool_status = []
        for name, pool in pools.items():
            busy = [last.get("busy", {}).get(w) for w in pool.workers]
            busy = [b for b in busy if b is not None]
            pool_status.append(
                control_pb2.PoolStatus(
                    name=name, size=pool.size, busy=sum(busy) / len(busy) if busy else 0.0, restarts=restarts.get(name, 0), queued=queues.get(queue_of[name], 0),
                    spares=pool.spare_count,
                )
            )
        spearman = last.get("spearman", math.nan)
        return control_pb2.RunStatus(
            pools=pool_status,
            candidates_per_second=last.get("candidates_per_second", 0.0),
            policy_lag=last.get("policy_lag", 0),
            spearman=spearman if spearman is not None else math.nan,
            learner_restarts=restarts.get("learner", 0),
            **fields,
        )

    def delta(self, name: str, totals: dict[str, int]) -> dict[str, int]:
        """Counts since the last row (rows carry per-iteration increments)."""
        seen = self.seen.setdefault(name, {})
        out = {k: v - seen.get(k, 0) for k, v in totals.items() if v - seen.get(k, 0)}
        seen.update(totals)
        return out
