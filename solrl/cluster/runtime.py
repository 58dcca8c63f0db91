"""Where the distributed run executes: an embedded local Ray cluster by default, or an existing
cluster given by address. Ray's token authentication is turned on here (RAY_AUTH_MODE=token),
not left to a version default: an embedded cluster gets a generated token, an existing one needs
the token its operator set up (RAY_AUTH_TOKEN or ~/.ray/auth_token).

Ray 2.60 cannot keep an embedded cluster on loopback: ray.init resolves 127.0.0.1 to the node's
address (services.resolve_ip_for_localhost) and the GCS, raylet and workers listen on all
interfaces. The token is what guards them (tests/test_cluster_processes.py records the listeners).

RayRuntime is the scheduler's runtime seam (solrl.cluster.seam) on that cluster."""

from __future__ import annotations

import os
import time

import ray
from ray.exceptions import GetTimeoutError, ObjectLostError, RayActorError, RayTaskError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from solrl.cluster.seam import HelperDied, InputLost, WorkerDied
from solrl.config import RunConfig


def token_auth() -> None:
    """RAY_AUTH_MODE=token for this process and every Ray process it starts. Ray caches its
    config when it loads, so after changing the variable the cache is refreshed, the way Ray's own
    default-enabling code does it (ray._private.authentication)."""
    if os.environ.get("RAY_AUTH_MODE") == "token":
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    from ray._raylet import Config  # private, hence ray pinned below 3 in pyproject.toml

    Config.initialize("")


def start(config: RunConfig, address: str | None = None, object_store_bytes: int = 512 * 1024**2) -> bool:
    """Connect to `address`, or start an embedded cluster sized for the run (with an object store of
    `object_store_bytes`; what does not fit spills to disk). Returns whether this call started Ray
    (and so should shut it down)."""
    if ray.is_initialized():
        return False
    token_auth()
    if address:
        ray.init(address=address, log_to_driver=True)
        return True
    # Logical CPUs may exceed the machine's: the workers then share its cores, which is how the
    # default layout (2 rollout, 1 regeneration, 2 learner ranks) runs on a 2-core laptop.
    cpus = max(config.cluster.resources()["CPU"], os.cpu_count() or 1)
    ray.init(
        address="local",  # always a new cluster: never join one that happens to run on this machine
        num_cpus=int(cpus + 0.999),
        include_dashboard=False,
        log_to_driver=True,
        object_store_memory=object_store_bytes,
    )
    return True


def stop(started: bool) -> None:
    """Shut Ray down if this process started it; nothing a run starts outlives it."""
    if started and ray.is_initialized():
        ray.shutdown()


class RayRuntime:
    """The runtime seam (solrl.cluster.seam) on Ray: workers are actors, refs are ObjectRefs, a
    reservation is a placement group. Ray's errors come back as the seam's."""

    virtual = False
    calls = 0  # calls started, for a driver's CPU per task

    def now(self) -> float:
        return time.perf_counter()

    def spawn(self, cls: type, options: dict, *args, slot: tuple | None = None):
        if slot is not None:
            reservation, index = slot
            options = options | {"scheduling_strategy": PlacementGroupSchedulingStrategy(reservation, index)}
        return ray.remote(cls).options(**options).remote(*args)

    def call(self, worker, method: str, *args, returns: int = 1):
        self.calls += 1
        refs = getattr(worker, method).options(num_returns=returns).remote(*args)
        return tuple(refs) if returns > 1 else refs

    def wait(self, refs, num_returns: int = 1, timeout: float | None = None) -> tuple[list, list]:
        return ray.wait(list(refs), num_returns=num_returns, timeout=timeout)

    def get(self, refs, timeout: float | None = None):
        try:
            return ray.get(refs, timeout=timeout)
        except RayTaskError as exc:
            if isinstance(exc, RayActorError):  # the call failed because an actor it used died
                raise HelperDied(str(exc)) from exc
            raise
        except RayActorError as exc:
            raise WorkerDied(str(exc)) from exc
        except ObjectLostError as exc:
            raise InputLost(str(exc)) from exc
        except GetTimeoutError as exc:
            raise TimeoutError(str(exc)) from exc

    def put(self, value):
        return ray.put(value)

    def kill(self, worker) -> None:
        ray.kill(worker, no_restart=True)

    def reserve(self, bundles: list[dict]):
        return placement_group(bundles, strategy="PACK")

    def rendezvous(self, reservation) -> tuple[str, int]:
        return tuple(ray.get(_rendezvous.options(scheduling_strategy=PlacementGroupSchedulingStrategy(reservation, 0)).remote()))

    def release(self, reservation) -> None:
        remove_placement_group(reservation)

    def resources(self) -> tuple[dict[str, float], dict[str, float]]:
        return ray.cluster_resources(), ray.available_resources()

    def placed(self, workers) -> list[bool | None]:
        # The GCS's actor table: an actor still being created has a process id once it holds its
        # resources and a worker process. Private (hence ray pinned below 3); unknown if it moves.
        try:
            from ray._private.state import actors

            pending = actors(actor_state_name="PENDING_CREATION")
            unplaced = {actor_id for actor_id, entry in pending.items() if not entry.get("Pid")}
            return [w._actor_id.hex() not in unplaced for w in workers]
        except Exception:  # noqa: BLE001 (a status detail: never fail the run for it)
            return [None] * len(workers)


@ray.remote(num_cpus=0)
def _rendezvous() -> tuple[str, int]:
    """An address and free port on the node that will host rank 0."""
    from solrl.learner.rendezvous import free_port

    host = ray.util.get_node_ip_address()
    return host, free_port(host)
