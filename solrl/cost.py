"""Modeled GPU cost: the model calls a run makes, by purpose and precision, priced in BF16 calls.

A CPU run cannot show what NVFP4 saves on a GPU (emulated NVFP4 is slower than fp32 here), so a
run also accounts what it did in GPU terms: each sample through the model once is one call, priced
by the precision it ran at (CostConfig: BF16 = 1, NVFP4 = 1/2.16 from the paper's SD3.5-L B200
rollout times, FP8 = 1/1.6 for H100), and each trained sample-time as `train_per_sample_time`
BF16 calls: NFTTrainer's old and reference velocities (no gradient), the policy's, and its backward
at about two forwards, 5 in all (`TRAIN_FORWARDS` is counted against the trainer in
tests/test_cost.py, as `calls_per_image` is against the solvers). The unit is "BF16 calls": multiply by a
measured seconds-per-call of a GPU to get GPU seconds. fp32 is priced as BF16, since the CPU's
fp32 stands in for a GPU's BF16.

Counts come from what the run did (explored candidates, regenerated and trained samples, eval
images) and each sampler's calls per image; `calls_per_image` is checked against the solvers'
actual model calls in tests/test_cost.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from solrl.precision_control import rung_parts

if TYPE_CHECKING:  # the metrics endpoint and the cluster verbs import this module; they need no torch
    from solrl.sampling.loop import SamplingConfig

PURPOSES = ("explore", "regenerate", "train", "eval")
TRAIN_FORWARDS = 3  # model calls per trained sample-time: the old policy, the reference (base), the policy
BACKWARD_IN_FORWARDS = 2.0  # a backward pass costs about two forward passes


class CostConfig(BaseModel):
    """What one model call costs, in BF16 calls, by precision."""

    model_config = ConfigDict(extra="forbid")
    per_call: dict[str, float] = Field(
        default_factory=lambda: {"bf16": 1.0, "fp32": 1.0, "fp8_e4m3": 1 / 1.6, "nvfp4": 1 / 2.16},
        description="Cost of one model call per precision, in BF16 calls (nvfp4 1/2.16: the paper's SD3.5-L B200 rollouts; "
        "fp8 1/1.6: H100). Replace with ratios measured by benchmarks/gpu_rollout.py where you have them.",
    )
    train_per_sample_time: float = Field(
        default=TRAIN_FORWARDS + BACKWARD_IN_FORWARDS,
        gt=0,
        description="BF16 calls per trained sample-time: the old and reference forwards (no gradient), the policy's forward and its backward (about two forwards).",
    )

    def price(self, precision: str) -> float:
        if precision not in self.per_call:
            raise ValueError(f"cost.per_call has no price for precision {precision!r}; add it, e.g. cost.per_call.{precision}=0.5")
        return self.per_call[precision]


def calls_per_image(sampling: SamplingConfig) -> int:
    """Model calls to draw one image: euler and dpm2 (multistep) both call the model once per step."""
    return sampling.steps


def rung_calls(rung: str, sampling: SamplingConfig) -> int:
    """Model calls per image of an explore ladder rung: at its own step count where it names one."""
    steps = rung_parts(rung)[1]
    return calls_per_image(sampling) if steps is None else steps


def train_times(config) -> int:
    """Training times per sample: the share `nft.timestep_fraction` of the regeneration grid's steps."""
    return max(1, round(config.train.nft.timestep_fraction * config.rollout.regenerate.steps))


class CostMeter:
    """The run's cumulative modeled cost; `iteration(row)` prices one metrics row (and any eval
    since the last row), `eval(result)` records an eval's images (best-of seeds included)."""

    def __init__(self, config, total: dict[str, float] | None = None):
        self.config, self.cost = config, config.cost
        self.total = {purpose: float((total or {}).get(purpose, 0.0)) for purpose in PURPOSES}  # a saved total's "all" is derived
        self.pending_eval = 0.0

    def eval(self, result: dict) -> None:
        self.pending_eval += result["images"] * calls_per_image(self.config.eval.sampling) * self.cost.price(self.config.eval.precision)

    def iteration(self, row: dict) -> dict[str, float]:
        rollout = self.config.rollout
        trained = row["regenerated"]  # in direct mode: the explored samples trained on
        audit = row.get("audit", {})  # rollout.precision_control: the precision explore ran at, and what the audit drew
        regenerate_calls = calls_per_image(rollout.regenerate)
        # images explored at each rung: the distributed run's audit counts them (a move can fall inside an iteration)
        explored = audit.get("explored") or {audit.get("precision", rollout.explore_precision): row["candidates"]}
        spent = {
            "explore": sum(self.explore_price(rung, n) for rung, n in explored.items()),
            "regenerate": 0.0 if rollout.mode == "direct" else (trained + audit.get("regenerated", 0)) * regenerate_calls * self.cost.price(rollout.regenerate_precision),
            "train": trained * train_times(self.config) * self.cost.train_per_sample_time,
            "eval": self.pending_eval,
        }
        previewed = audit.get("previewed_at") or ({audit["cheaper"]: audit["previewed"]} if "previewed" in audit else {})
        for rung, n in previewed.items():  # the audit's previews at the rungs it probed
            spent["explore"] += self.explore_price(rung, n)
        self.pending_eval = 0.0
        for purpose, value in spent.items():
            self.total[purpose] += value
        return {k: round(v, 3) for k, v in spent.items()}

    def explore_price(self, rung: str, images: int) -> float:
        """Modeled cost of `images` explored at a ladder rung (or at rollout.explore_precision)."""
        return images * rung_calls(rung, self.config.rollout.explore) * self.cost.price(rung_parts(rung)[0])

    def flush(self) -> dict[str, float]:
        """Evals recorded since the last row (the final evals) join the total."""
        self.total["eval"] += self.pending_eval
        self.pending_eval = 0.0
        return self.totals()

    def totals(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.total.items()} | {"all": round(sum(self.total.values()), 3)}
