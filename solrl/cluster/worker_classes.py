"""The seam every model-bearing worker is built from: the actor classes of a run's pools and
learner group, the real ones (solrl/cluster/{sampler,reward,learner}_actor.py) or, with `cluster.stand_in`, stand-ins
of a real model's sizes and timings (solrl/standin/actors.py). Imported only here, so a stand-in
run's processes never load a model stack."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerClasses:
    sampler: type
    reward: type
    learner: type


def worker_classes(config, virtual: bool = False) -> WorkerClasses:
    """The run's actor classes; `virtual`: the stand-ins that run on a virtual clock
    (solrl.cluster.virtual), which need cluster.stand_in."""
    if virtual:
        from solrl.standin.actors import VirtualLearner, VirtualReward, VirtualSampler

        return WorkerClasses(VirtualSampler, VirtualReward, VirtualLearner)
    if config.cluster.stand_in is not None:
        from solrl.standin.actors import StandInLearner, StandInReward, StandInSampler

        return WorkerClasses(StandInSampler, StandInReward, StandInLearner)
    from solrl.cluster.learner_actor import LearnerActor
    from solrl.cluster.reward_actor import RewardActor
    from solrl.cluster.sampler_actor import SamplerActor

    return WorkerClasses(SamplerActor, RewardActor, LearnerActor)
