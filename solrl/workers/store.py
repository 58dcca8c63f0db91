"""CandidateStore: explore results per prompt group as Arrow tables, and a Parquet log of every
candidate the run ever scored.

A group is open from the moment its candidates arrive until it is closed as trained or dropped;
closing appends its rows (with BF16 rewards for the seeds that were regenerated) to the log. A
group's candidates arriving twice (a re-queued group whose first worker was only slow) is
ignored and counted, so nothing is trained twice.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from solrl.types import Candidates, Selection

GroupKey = tuple[int, int]  # (iteration, prompt id)

CANDIDATE_SCHEMA = pa.schema(
    [
        ("iteration", pa.int64()),
        ("prompt_id", pa.int64()),
        ("seed", pa.int64()),
        ("proxy_reward", pa.float64()),
        ("bf16_reward", pa.float64()),  # null unless the seed was regenerated
        ("policy_version", pa.int64()),  # the version the exploring sampler served
        ("explore_worker", pa.string()),
        ("regen_worker", pa.string()),
        ("explore_seconds", pa.float64()),  # the group's explore time per candidate
        ("status", pa.string()),  # trained | dropped
    ]
)


def group_key(c: Candidates | Selection) -> GroupKey:
    return (c.group.iteration, c.group.prompt_id)


class CandidateStore:
    """Open groups in memory; closed groups appended to `log_dir`/part-NNNNN.parquet."""

    def __init__(self, log_dir: str | pathlib.Path | None = None):
        self.log_dir = pathlib.Path(log_dir) if log_dir is not None else None
        self.open: dict[GroupKey, pa.Table] = {}
        self.closed: set[GroupKey] = set()
        self.pending: list[pa.Table] = []
        self.duplicates = 0
        self.parts = 0

    def add(self, candidates: Candidates, worker: str | Sequence[str]) -> bool:
        """Store one group's explore results (`worker`: the explore worker, or each seed's when its
        seeds were shared out); False (and counted) if the group is already known."""
        key = group_key(candidates)
        if key in self.open or key in self.closed:
            self.duplicates += 1
            return False
        n = len(candidates.group.seeds)
        if len(candidates.proxy_rewards) != n:
            raise ValueError(f"group {key} has {n} seeds but {len(candidates.proxy_rewards)} rewards")
        per_candidate = candidates.seconds / max(1, n)
        self.open[key] = pa.table(
            {
                "iteration": [key[0]] * n,
                "prompt_id": [key[1]] * n,
                "seed": list(candidates.group.seeds),
                "proxy_reward": list(candidates.proxy_rewards),
                "bf16_reward": pa.nulls(n, pa.float64()),
                "policy_version": [candidates.version] * n,
                "explore_worker": [worker] * n if isinstance(worker, str) else list(worker),
                "regen_worker": pa.nulls(n, pa.string()),
                "explore_seconds": [per_candidate] * n,
                "status": pa.nulls(n, pa.string()),
            },
            schema=CANDIDATE_SCHEMA,
        )
        return True

    def table(self, key: GroupKey) -> pa.Table:
        """The Arrow table of an open group."""
        return self.open[key]

    def record_regenerated(self, selection: Selection, bf16_rewards: Sequence[float], worker: str) -> None:
        """Fill in the BF16 rewards of a group's regenerated seeds."""
        key = group_key(selection)
        table = self.open[key]
        by_seed = dict(zip(selection.seeds, bf16_rewards, strict=True))
        seeds = table.column("seed").to_pylist()
        bf16 = [by_seed.get(s) for s in seeds]
        regen = [worker if s in by_seed else None for s in seeds]
        table = table.set_column(table.schema.get_field_index("bf16_reward"), "bf16_reward", pa.array(bf16, pa.float64()))
        self.open[key] = table.set_column(table.schema.get_field_index("regen_worker"), "regen_worker", pa.array(regen, pa.string()))

    def close(self, key: GroupKey, status: str) -> None:
        """Mark an open group trained or dropped and queue its rows for the log."""
        if status not in ("trained", "dropped"):
            raise ValueError(f"status {status!r} is unknown; use 'trained' or 'dropped'")
        table = self.open.pop(key)
        self.closed.add(key)
        self.pending.append(table.set_column(table.schema.get_field_index("status"), "status", pa.array([status] * len(table), pa.string())))

    def flush(self) -> pathlib.Path | None:
        """Write the closed groups not yet logged as one Parquet part file."""
        if not self.pending or self.log_dir is None:
            return None
        self.log_dir.mkdir(parents=True, exist_ok=True)
        path = self.log_dir / f"part-{self.parts:05d}.parquet"
        tmp = path.with_suffix(".tmp")  # renamed into place whole: a killed run leaves no torn part
        pq.write_table(pa.concat_tables(self.pending), tmp)
        os.replace(tmp, path)
        self.pending, self.parts = [], self.parts + 1
        return path

    def truncate(self, parts: int) -> None:
        """Continue a log after its first `parts` part files (a resumed run's checkpoint count):
        parts written after that checkpoint belong to iterations the run will redo."""
        self.parts = parts
        for path in pathlib.Path(self.log_dir).glob("part-*") if self.log_dir is not None else ():
            if path.suffix == ".tmp" or int(path.stem.removeprefix("part-")) >= parts:
                path.unlink()


def read_log(log_dir: str | pathlib.Path) -> pa.Table:
    """Every logged candidate of a run, in write order."""
    parts = sorted(pathlib.Path(log_dir).glob("part-*.parquet"))
    if not parts:
        return CANDIDATE_SCHEMA.empty_table()
    return pa.concat_tables([pq.read_table(p, schema=CANDIDATE_SCHEMA) for p in parts])


def audit_log(log_dir: str | pathlib.Path, iterations: int, groups_per_iteration: int, candidates: int) -> dict[str, int]:
    """How a run's first `iterations` iterations ended, from its candidate log: groups trained,
    dropped (stale, counted by the run), lost (drawn but in neither state) and duplicated (rows
    beyond one group's candidates, e.g. a group trained twice)."""
    log = read_log(log_dir)
    rows: dict[tuple[int, int], list[str]] = {}
    for it, prompt, status in zip(log["iteration"].to_pylist(), log["prompt_id"].to_pylist(), log["status"].to_pylist()):
        if it < iterations:
            rows.setdefault((it, prompt), []).append(status)
    first = {key: statuses[0] for key, statuses in rows.items()}
    return {
        "trained": sum(s == "trained" for s in first.values()),
        "dropped": sum(s == "dropped" for s in first.values()),
        "lost": iterations * groups_per_iteration - len(rows),
        "duplicated": sum(len(s) - candidates for s in rows.values() if len(s) > candidates),
    }
