"""The embedded Ray cluster's processes: a pooled reward scores as the reward itself, each worker
role loads only its own modules, token authentication is on, set by us, and (xfail, strict) what
Ray 2.60 still listens on beyond loopback. Fault specs are refused by form."""

import os

import pytest
import ray
import torch
from tiny_runs import TINY_RUN

from solrl.config import ConfigError, load_config


@pytest.fixture(scope="module")
def cluster(ray_cluster):
    """The tiny run's config, on the session's Ray cluster (tests/conftest.py)."""
    return load_config(overrides=TINY_RUN)


def test_a_fault_spec_names_its_form():
    with pytest.raises(ConfigError, match="WORKER:POINT:K"):
        load_config(overrides=["cluster.faults=[rollout-0:explode:1]"])


def test_a_pooled_reward_scores_as_the_reward_itself(cluster):
    """The callable a reward-less sampler evaluates with asks a RewardActor, and gets the numbers
    the reward computes in-process."""
    from solrl.cluster.reward_actor import RewardActor
    from solrl.cluster.sampler_actor import _PooledReward
    from solrl.toy.captions import parse_caption
    from solrl.toy.render import render_batch
    from solrl.workers.reward import reward_worker_from_config

    prompts = ["a red circle", "two squares", "a circle"]
    images = render_batch([parse_caption(p) for p in prompts], seed=3)
    actor = ray.remote(RewardActor).options(num_cpus=0.25).remote(cluster, "reward-test")
    try:
        pooled = _PooledReward(actor)(images, prompts)
    finally:
        ray.kill(actor)
    expected = reward_worker_from_config(cluster).score(images, prompts)
    assert pooled.dtype == torch.float32 and torch.equal(pooled, expected) and expected.max() > 0


def test_each_role_imports_only_what_it_uses(cluster):
    """A worker process loads its own role's modules: the reward worker no diffusion stack, a
    sampler no trainer, a learner rank no sampler or eval code (transformers itself loads FSDP,
    so a sampler has that)."""
    import socket

    from solrl.cluster.learner_actor import LearnerActor
    from solrl.cluster.reward_actor import RewardActor
    from solrl.cluster.sampler_actor import SamplerActor

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    spawn = lambda cls, *args: ray.remote(cls).options(num_cpus=0.25).remote(*args)  # noqa: E731
    actors = {
        "reward": spawn(RewardActor, cluster, "reward-test"),
        "sampler": spawn(SamplerActor, cluster, "explore", "rollout-test"),
        "learner": spawn(LearnerActor, cluster, 0, 1, "127.0.0.1", port),
    }
    try:
        loaded = dict(zip(actors, ray.get([a.info.remote() for a in actors.values()])))
    finally:
        for actor in actors.values():
            ray.kill(actor)
    loaded = {role: set(info["heavy_modules"]) for role, info in loaded.items()}
    assert loaded["reward"] == set(), loaded
    assert {"diffusers", "peft", "solrl.workers.sampler", "solrl.evaluation"} <= loaded["sampler"], loaded
    assert not {"solrl.learner.rank", "solrl.learner.nft_trainer"} & loaded["sampler"], loaded
    assert {"diffusers", "peft", "torch.distributed.fsdp", "solrl.learner.rank"} <= loaded["learner"], loaded
    assert not {"solrl.workers.sampler", "solrl.evaluation"} & loaded["learner"], loaded


def test_the_embedded_cluster_runs_with_token_auth_set_by_us(cluster):
    assert os.environ["RAY_AUTH_MODE"] == "token"
    assert ray.get(ray.remote(num_cpus=0.1)(lambda: os.environ.get("RAY_AUTH_MODE")).remote()) == "token"


@pytest.mark.xfail(
    strict=True,
    reason="Ray 2.60 resolves a loopback node address to the node's own and its GCS, raylet and workers listen on all "
    "interfaces; token auth guards them. Strict: this fails loudly once Ray can bind loopback only.",
)
def test_the_embedded_cluster_listens_on_loopback_only(cluster):
    """Run last in the module, when the cluster's processes include the workers its tests (and test_cluster.py's runs) started."""
    import psutil

    me = psutil.Process()  # the driver; the cluster's processes (GCS, raylet, workers) descend from it
    ray_pids = {me.pid} | {p.pid for p in me.children(recursive=True)}
    listening = [c for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN and c.pid in ray_pids]
    assert listening, "found none of the cluster's sockets"
    exposed = [(c.laddr.ip, c.laddr.port, c.pid) for c in listening if c.laddr.ip not in ("127.0.0.1", "::1")]
    assert not exposed, f"Ray listens off loopback: {exposed}"
