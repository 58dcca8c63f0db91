"""The run's layout on a Ray cluster: pool sizes, what each worker reserves, restarts, the control
service and fault injection (the `cluster` section of a run config; --local ignores it)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from solrl.autoscale import AutoscaleConfig
from solrl.faults import parse_fault
from solrl.model_dims import StandInConfig


def _describe(text: str, **constraints) -> Any:
    return Field(description=text, **constraints)


class ClusterConfig(BaseModel):
    """How the distributed run is laid out (ignored by --local)."""

    model_config = ConfigDict(extra="forbid")

    rollout_workers: int = _describe("NVFP4 explore workers.", default=2, ge=1)
    spare_rollout_workers: int = _describe(
        "Rollout workers kept started and idle beside the pool, holding the current weights: a scale-up, or the replacement of a "
        "dead rollout worker, takes one and it works at once instead of waiting for a process to start (0: none). Each reserves "
        "resources like any rollout worker.",
        default=0,
        ge=0,
    )
    regen_workers: int = _describe("BF16 regeneration workers.", default=1, ge=1)
    reward_workers: int = _describe(
        "0: every sampler scores its own images. N > 0: the reward lives only in a pool of N reward workers, "
        "for reward models too big to sit beside every sampler.",
        default=0,
        ge=0,
    )
    learner_ranks: int = _describe("FSDP2 learner ranks.", default=2, ge=1)
    lend_learners: bool = _describe(
        "Start a BF16 regeneration worker beside each learner rank, in its bundle and on its GPU (each takes half of the "
        "learner's GPU reservation), that takes regeneration tasks only while the learner group has no step to run; a step "
        "waits for the lent tasks running when it becomes launchable. Learners that would wait for regenerated groups make "
        "them instead; each learner GPU holds a second, unsharded BF16 copy of the model.",
        default=False,
    )
    cpus_per_worker: float = _describe("Logical CPUs each worker reserves.", default=1, gt=0)
    gpus_per_worker: float = _describe("GPUs each worker reserves.", default=0, ge=0)
    groups_per_task: int = _describe("Prompt groups a rollout worker takes at a time.", default=1, ge=1)
    explore_split: int = _describe(
        "Explore tasks each prompt group's seeds are shared out over; the selector ranks their union (0: chosen from the rollout "
        "pool's size, at least 16 tasks a worker an iteration and 24 seeds a task).",
        default=0,
        ge=0,
    )
    checkpoint_every: int = _describe("Iterations between checkpoints (0: only at the end).", default=1, ge=0)
    snapshot_every: int = _describe(
        "Learner steps between snapshots of the learner group's state a restarted group begins at (the steps since are redone "
        "from their inputs, kept in the object store meanwhile). 0: at checkpoints (checkpoint_every), or every 10 steps without them.",
        default=0,
        ge=0,
    )
    max_restarts: int = _describe("Worker replacements per pool before the run gives up.", default=10, ge=0)
    pool_resources: dict[Literal["rollout", "regen", "reward", "learner"], dict[str, float]] = _describe(
        "Custom Ray resources each worker of a pool also reserves, e.g. {rollout: {nvfp4: 1}} to put explore workers on "
        "nodes started with --resources='{\"nvfp4\": 8}'; CPU or GPU here replace cpus_per_worker / gpus_per_worker for that pool.",
        default_factory=dict,
    )
    startup_timeout_s: float = _describe(
        "Seconds the run waits for its workers to start (for resources to appear, e.g. nodes an autoscaler adds) before it fails.",
        default=600,
        gt=0,
    )
    autoscale: AutoscaleConfig | None = Field(
        default=None, description="Grow and shrink the rollout pool by policy, e.g. {rollout: {min: 1, max: 4}} (solrl/autoscale.py); null: off."
    )
    control_port: int | None = _describe("Port of the run's control service (0: any free port; null: no control service).", default=0, ge=0, le=65535)
    control_host: str = _describe("Address the control service binds; anything but loopback needs control_tls_cert/key.", default="127.0.0.1")
    control_tls_cert: str | None = _describe("PEM certificate the control service serves TLS with.", default=None)
    control_tls_key: str | None = _describe("PEM private key of control_tls_cert.", default=None)
    stand_in: StandInConfig | None = Field(
        default=None,
        description="Replace the model-bearing workers by stand-ins that carry a real model's payloads and take its modeled GPU time, "
        "e.g. {model: flux1, speedup: 20} (solrl/standin/; benchmarks/real_sizes.py); null: the real workers.",
    )
    faults: list[str] = _describe(
        "Fault injection for tests: 'WORKER:POINT:K' SIGKILLs WORKER at POINT of its K-th task (solrl/faults.py).",
        default_factory=list,
    )

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any) -> Any:
        if isinstance(data, dict) and "max_policy_lag" in data:
            raise ValueError("cluster.max_policy_lag moved to rollout.max_policy_lag (it changes the algorithm, not the layout); set that instead")
        return data

    @model_validator(mode="after")
    def _within_bounds(self) -> ClusterConfig:
        bounds = self.autoscale.rollout if self.autoscale else None
        if bounds and not bounds.min <= self.rollout_workers <= bounds.max:
            raise ValueError(f"rollout_workers={self.rollout_workers} is outside autoscale.rollout [{bounds.min}, {bounds.max}]; start within the bounds")
        return self

    @field_validator("faults")
    @classmethod
    def _faults(cls, value: list[str]) -> list[str]:
        for spec in value:
            parse_fault(spec)
        return value

    @property
    def workers(self) -> int:
        """Actors the run starts: samplers of both pools, reward workers, learner ranks and the workers lent beside them."""
        return self.rollout_workers + self.regen_workers + self.reward_workers + self.learner_ranks * (1 + self.lend_learners)

    def worker_resources(self, pool: str) -> dict[str, float]:
        """What one worker of `pool` (rollout, regen, reward, learner or lent) reserves. A lent
        regeneration worker and its learner rank share the rank's bundle and halve its GPUs."""
        if pool == "lent":
            return {"CPU": self.cpus_per_worker, "GPU": self.worker_resources("learner")["GPU"]}
        each = {"CPU": self.cpus_per_worker, "GPU": self.gpus_per_worker} | self.pool_resources.get(pool, {})
        return each | {"GPU": each["GPU"] / 2} if pool == "learner" and self.lend_learners else each

    def learner_bundle(self) -> dict[str, float]:
        """One learner rank's placement-group bundle: the rank's resources, and its lent worker's."""
        bundle = dict(self.worker_resources("learner"))
        for key, value in self.worker_resources("lent").items() if self.lend_learners else ():
            bundle[key] = bundle.get(key, 0.0) + value
        return bundle

    def actor_options(self, pool: str) -> dict:
        """Ray actor options of one worker of `pool`: CPU and GPU as num_cpus / num_gpus (a pool may
        override them in pool_resources), anything else as custom resources."""
        each = self.worker_resources(pool)
        custom = {k: v for k, v in each.items() if k not in ("CPU", "GPU")}
        return {"num_cpus": each["CPU"], "num_gpus": each["GPU"]} | ({"resources": custom} if custom else {})

    def demands(self) -> dict[str, tuple[int, dict[str, float]]]:
        """pool -> (workers, what each reserves)."""
        counts = {"rollout": self.rollout_workers, "regen": self.regen_workers, "reward": self.reward_workers, "learner": self.learner_ranks}
        counts["lent"] = self.learner_ranks if self.lend_learners else 0
        return {pool: (n, self.worker_resources(pool)) for pool, n in counts.items() if n}

    def resources(self) -> dict[str, float]:
        """Logical CPUs, GPUs and custom resources the run's actors reserve."""
        total: dict[str, float] = {"CPU": 0.0, "GPU": 0.0}
        for pool, (n, each) in self.demands().items():
            for key, value in each.items():
                total[key] = total.get(key, 0.0) + (n + (self.spare_rollout_workers if pool == "rollout" else 0)) * value
        return total
