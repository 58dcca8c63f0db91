"""Where the distributed run executes: an embedded local Ray cluster by default, or an existing
cluster given by address. Ray's token authentication is turned on here (RAY_AUTH_MODE=token),
not left to a version default: an embedded cluster gets a generated token, an existing one needs
the token its operator set up (RAY_AUTH_TOKEN or ~/.ray/auth_token).

Ray 2.60 cannot keep an embedded cluster on loopback: ray.init resolves 127.0.0.1 to the node's
address (services.resolve_ip_for_localhost) and the GCS, raylet and workers listen on all
interfaces. The token is what guards them (tests/test_cluster.py records the listeners)."""

from __future__ import annotations

import os

import ray

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
