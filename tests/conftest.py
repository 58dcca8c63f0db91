"""Fixtures shared across test modules."""

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    """One embedded Ray cluster for every test that only needs a cluster (tests/test_cluster.py, test_cluster_processes.py,
    tests/test_standin.py): started with token authentication by solrl.cluster.runtime on first
    use, shut down when the session ends. Its logical CPUs are the machine's (workers reserve a
    quarter CPU in these tests) and its object store holds 2 GB, for FLUX.1-size payloads. The
    cluster verbs' tests start a `ray start --head` cluster of their own (tests/test_jobs.py)."""
    pytest.importorskip("ray")
    from solrl.cluster import runtime
    from solrl.config import load_config

    started = runtime.start(load_config(overrides=["cluster.cpus_per_worker=0.25"]), object_store_bytes=2 * 1024**3)
    yield
    runtime.stop(started)
