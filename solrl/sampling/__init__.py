"""Flow-matching time grids, deterministic ODE solvers, seed -> noise, and the sampling loop."""

from solrl.sampling.loop import SamplingConfig, sample, sample_images
from solrl.sampling.noise import batch_noise, derive_seeds, seed_noise
from solrl.sampling.schedules import shift_time, time_grid
from solrl.sampling.solvers import SOLVERS, dpm2, euler, solve

__all__ = [
    "SOLVERS",
    "SamplingConfig",
    "batch_noise",
    "derive_seeds",
    "dpm2",
    "euler",
    "sample",
    "sample_images",
    "seed_noise",
    "shift_time",
    "solve",
    "time_grid",
]
