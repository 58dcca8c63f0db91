"""The runtime seam: the few things the scheduler asks of whatever executes its workers.

The driver, its dispatcher, pools, weight publisher and learner group decide what runs next, on
which worker, when a result is complete and what a death means; they start and watch work only
through a Runtime. Ray implements it for real runs (solrl.cluster.runtime.RayRuntime); the
virtual-clock runtime (solrl.cluster.virtual) runs the same scheduler with stand-in workers
whose calls "take" their modeled time and nothing sleeps, so 1024 workers or a fault in every
phase are a fast test. A runtime hands out opaque worker handles and result refs; errors come
back as the three below, whatever the runtime.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class WorkerDied(RuntimeError):
    """The worker a call ran on is dead (killed, out of memory, its node lost)."""


class InputLost(RuntimeError):
    """A call's inputs were lost with the node that held them: the work must be redone."""


class HelperDied(RuntimeError):
    """A call failed because an actor it called (not the worker running it) died."""


class Runtime(Protocol):
    virtual: bool  # whether workers run on the virtual clock (stand-in workers only)

    def now(self) -> float:
        """Seconds on the runtime's clock (wall clock, or the virtual one)."""

    def spawn(self, cls: type, options: dict, *args, slot: tuple | None = None) -> Any:
        """Start a worker of `cls` (constructed with `args`; `options`: its resources); with
        `slot` = (reservation, index), in that bundle of a reservation. Returns its handle."""

    def call(self, worker: Any, method: str, *args, returns: int = 1) -> Any:
        """Start `method` on `worker` (calls to one worker run in the order made); a ref, or a
        tuple of `returns` refs. Refs among `args` are passed as their values."""

    def wait(self, refs: Sequence, num_returns: int = 1, timeout: float | None = None) -> tuple[list, list]:
        """(ready, not ready): blocks until `num_returns` are ready or `timeout` seconds pass."""

    def get(self, refs, timeout: float | None = None) -> Any:
        """A ref's value (or a list's), blocking; raises WorkerDied, InputLost, HelperDied,
        TimeoutError, or the exception the call itself raised."""

    def put(self, value) -> Any:
        """A ref holding `value`."""

    def kill(self, worker: Any) -> None:
        """End a worker; calls on it fail with WorkerDied."""

    def reserve(self, bundles: list[dict]) -> Any:
        """Ask for resource bundles placed together (a learner group's ranks); the returned
        reservation's `ready()` is a ref that resolves once they are granted."""

    def rendezvous(self, reservation) -> tuple[str, int]:
        """An address and free port on the host of a reservation's first bundle (rank 0)."""

    def release(self, reservation) -> None:
        """Give a reservation's resources back."""

    def resources(self) -> tuple[dict[str, float], dict[str, float]]:
        """The cluster's (total, available) resources."""

    def placed(self, workers: Sequence) -> list[bool | None]:
        """For each worker not started yet: whether it has its resources and a process (False:
        it waits for resources; None: the runtime cannot tell)."""
