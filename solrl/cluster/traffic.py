"""Bytes that cross a process boundary, by kind, counted by the driver as it hands payloads on.

A payload counts once for every process that receives it: a prompt's conditioning sent to two
learner ranks counts twice, a weight update fetched by six samplers six times. A learner-state
snapshot kept in the object store for recovery counts once when it is taken (no process reads it
unless a rank dies). Collectives inside the learner group (FSDP's all-gathers, reductions) are
not counted: they stay on the group's own links. The kinds, and the minimum each iteration must
move, are in docs/architecture.md.
"""

from __future__ import annotations

from solrl.nbytes import KINDS, payload_bytes


class Traffic:
    def __init__(self):
        self.total = dict.fromkeys(KINDS, 0)
        self._reported = dict.fromkeys(KINDS, 0)

    def add(self, kind: str, nbytes: int, receivers: int = 1) -> None:
        if kind not in self.total:
            raise ValueError(f"traffic kind {kind!r} is unknown; use one of {KINDS}")
        self.total[kind] += int(nbytes) * receivers

    def add_payload(self, kind: str, obj, receivers: int = 1) -> None:
        """Count a payload the driver sends or receives by value."""
        self.add(kind, payload_bytes(obj), receivers)

    def add_sizes(self, sizes: dict[str, int], receivers: int = 1) -> None:
        """Count outputs a worker left in the object store, by the sizes it reported."""
        for kind, nbytes in sizes.items():
            self.add(kind, nbytes, receivers)

    def delta(self) -> dict[str, int]:
        """Bytes by kind since the previous call (a metrics row's share)."""
        out = {k: v - self._reported[k] for k, v in self.total.items()}
        self._reported = dict(self.total)
        return out
