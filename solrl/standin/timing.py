"""How long a stand-in call takes: the model calls the run already prices (solrl/cost.py) times
GPU-seconds per BF16 call, from a per-model table calibrated on the Sol-RL paper's iteration times.

Calibration (one point per model). The paper's Sol-RL iteration on one node of 8 B200 (48 prompts x
96 seeds explored in NVFP4 at 6 steps, 24 kept and regenerated in BF16 at 10 steps, 6 training
times a sample) takes, per iteration, rollout / end to end: FLUX.1 79 / 169 s, SD3.5-L 187 / 427 s,
SANA 46 / 76 s. Rollout prices 48 x 96 x 6 NVFP4 calls + 48 x 24 x 10 BF16 calls in BF16 calls
(cost.per_call), so one BF16 sampling call on one sample costs 8 x rollout / those calls
GPU-seconds; training is the rest of the iteration (learner step, weight sync) over 48 x 24 x 6
sample-times x cost.train_per_sample_time training calls. The table holds these at the shipped
configs' resolutions (512 px for FLUX.1 and SD3.5-L, 1024 px for SANA); other resolutions scale
with the latent pixel count. Other GPUs scale by dense BF16 throughput (B200 2.25 PFLOP/s, H100 and
H200 0.989; Hopper has no FP4 tensor cores, so an NVFP4 explore there is priced as if it had).
A reward call is 0.5 ms of B200 per image (PickScore's ViT-H/14 and text tower, about 0.38 TFLOP,
at 40 % of peak), and applying a weight update reads the adapter at 25 GB/s (host to device).

`cluster.stand_in.speedup` divides every duration so a benchmark fits minutes (each result states
it); `jitter` spreads each call uniformly by up to that fraction, from a seed per worker.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from solrl.cost import CostConfig, rung_calls, train_times
from solrl.model_dims import StandInModel
from solrl.precision_control import rung_parts

PAPER_SECONDS = {"flux1": (79.0, 169.0), "sd35": (187.0, 427.0), "sana": (46.0, 76.0)}  # rollout, end to end
PAPER_GPUS, PAPER_PROMPTS, PAPER_N, PAPER_K, PAPER_EXPLORE_STEPS, PAPER_STEPS, PAPER_TRAIN_TIMES = 8, 48, 96, 24, 6, 10, 6
CALIBRATED_RESOLUTION = {"flux1": 512, "sd35": 512, "sana": 1024}
GPU_SLOWDOWN = {"b200": 1.0, "h100": 2250 / 989, "h200": 2250 / 989}
REWARD_SECONDS_PER_IMAGE = 0.0005
HOST_TO_DEVICE_BYTES_PER_S = 25e9


@dataclass(frozen=True)
class CallSeconds:
    """GPU-seconds of one BF16 model call on one sample, sampling and training."""

    sample: float
    train: float


def calibrate(model: StandInModel, cost: CostConfig) -> CallSeconds:
    """The table row of `model` from the paper's iteration times, priced with `cost`."""
    rollout, end_to_end = PAPER_SECONDS[model]
    explore = PAPER_PROMPTS * PAPER_N * PAPER_EXPLORE_STEPS * cost.price("nvfp4")
    regenerate = PAPER_PROMPTS * PAPER_K * PAPER_STEPS * cost.price("bf16")
    train = PAPER_PROMPTS * PAPER_K * PAPER_TRAIN_TIMES * cost.train_per_sample_time
    return CallSeconds(PAPER_GPUS * rollout / (explore + regenerate), PAPER_GPUS * (end_to_end - rollout) / train)


class Clock:
    """The modeled durations of one stand-in worker's calls (config: a RunConfig with cluster.stand_in)."""

    def __init__(self, config, worker: str, virtual: bool = False):
        self.config, spec = config, config.cluster.stand_in
        self.virtual, self.elapsed = virtual, 0.0  # a virtual clock sleeps nothing: its seconds add up
        self.per_call = calibrate(spec.model, config.cost)
        res = config.model.resolution or CALIBRATED_RESOLUTION[spec.model]
        self.pixels = (res / CALIBRATED_RESOLUTION[spec.model]) ** 2  # model calls scale with the latent's size
        pool = worker.rpartition("-")[0]  # workers are named POOL-N; a lent worker runs on its learner rank's GPU
        self.gpu = spec.pools.get("learner" if pool == "lent" else pool, spec.gpu)
        self.scale = GPU_SLOWDOWN[self.gpu] / spec.speedup
        self.jitter = spec.jitter
        self.rng = random.Random(f"{config.seed}:{worker}")

    def _wait(self, gpu_seconds: float) -> float:
        seconds = max(0.0, gpu_seconds * self.scale * (1 + self.jitter * self.rng.uniform(-1, 1)))
        if self.virtual:
            self.elapsed += seconds
        else:
            time.sleep(seconds)
        return seconds

    def now(self) -> float:
        """This worker's clock: the wall clock, or the modeled seconds so far."""
        return self.elapsed if self.virtual else time.perf_counter()

    def sample(self, images: int, sampling, precision: str) -> float:
        """Sleep as long as drawing `images` with `sampling` at `precision` (a ladder rung: at its
        step count where it names one) takes; the seconds."""
        return self._wait(images * rung_calls(precision, sampling) * self.config.cost.price(rung_parts(precision)[0]) * self.per_call.sample * self.pixels)

    def train(self, samples: int) -> float:
        return self._wait(samples * train_times(self.config) * self.config.cost.train_per_sample_time * self.per_call.train * self.pixels)

    def reward(self, images: int) -> float:
        return self._wait(images * REWARD_SECONDS_PER_IMAGE)

    def apply(self, nbytes: int) -> float:
        return self._wait(nbytes / HOST_TO_DEVICE_BYTES_PER_S)
