"""Deterministic ODE solvers for flow matching: dx/dt = v(x, t), integrated from t = 1 to t = 0.

Both take one velocity evaluation per step, so a step count costs the same under either.
`dpm2` is DPM-Solver++(2M): a second-order multistep exponential integrator on the x0
prediction x0 = x - t v, with lambda = log((1 - t) / t). Where a neighbouring lambda is
infinite (a step that starts at t = 1 or ends at t = 0, and the step after t = 1) it falls
back to first order, which for flow matching is exactly an Euler step.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

VelocityFn = Callable[[torch.Tensor, float], torch.Tensor]
SOLVERS = ("euler", "dpm2")


def _lam(t: float) -> float:
    """log-SNR of the flow path; -inf at t = 1, +inf at t = 0."""
    if t >= 1.0:
        return -math.inf
    if t <= 0.0:
        return math.inf
    return math.log((1.0 - t) / t)


def euler(velocity: VelocityFn, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """x_{i+1} = x_i + (t_{i+1} - t_i) v(x_i, t_i)."""
    ts = grid.tolist()
    for t, t_next in zip(ts[:-1], ts[1:]):
        x = x + (t_next - t) * velocity(x, t)
    return x


def dpm2(velocity: VelocityFn, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """DPM-Solver++(2M) on the x0 prediction; see the module docstring."""
    ts = grid.tolist()
    prev_x0, prev_h = None, math.inf
    for t, t_next in zip(ts[:-1], ts[1:]):
        x0 = x - t * velocity(x, t)
        h = _lam(t_next) - _lam(t)
        d = x0
        if prev_x0 is not None and math.isfinite(h) and math.isfinite(prev_h):
            c = 0.5 * h / prev_h  # = 1 / (2r), r = h_prev / h
            d = (1.0 + c) * x0 - c * prev_x0
        ratio = t_next / t
        x = ratio * x + (1.0 - ratio) * d
        prev_x0, prev_h = x0, h
    return x


def solve(velocity: VelocityFn, x: torch.Tensor, grid: torch.Tensor, solver: str = "euler") -> torch.Tensor:
    """Integrate from grid[0] (noise) to grid[-1] (clean) with the named solver."""
    if solver == "euler":
        return euler(velocity, x, grid)
    if solver == "dpm2":
        return dpm2(velocity, x, grid)
    raise ValueError(f"sampling.solver {solver!r} is unknown; choose one of {list(SOLVERS)}")
