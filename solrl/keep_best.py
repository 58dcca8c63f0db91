"""train.keep_best: the run keeps the adapters of its best periodic eval, judged by the mean of the
run's own reward on eval.validation's prompts, never on the held-out eval prompts whose figures the
final eval reports (solrl.evaluation.validation_prompts checks they share none). lora/ then holds
the kept adapters and lora/last/ the last ones; the final eval reports the kept ones.

The best so far travels in every checkpoint, so a resumed run keeps choosing among all its evals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

PREFIX = "kept/"  # checkpoint tensor keys: kept/<adapter>/<parameter>


@dataclass
class Kept:
    iteration: int  # 0-based: the iteration after which its eval ran
    reward: float  # mean reward on the validation prompts
    version: int  # the policy version of its adapters
    states: dict[str, dict[str, torch.Tensor]]  # 'policy', 'old', 'ema'

    def describe(self) -> str:
        return f"iteration {self.iteration + 1}'s adapters (validation reward {self.reward:.4f})"


class KeepBest:
    def __init__(self, on: bool, log: Callable[[str], None]):
        self.on, self.log = on, log
        self.best: Kept | None = None

    def offer(self, iteration: int, validation: dict, states: Callable[[], tuple[dict, int]]) -> bool:
        """Keep an eval's adapters if its validation reward beats the best so far; `states`
        fetches them (and their version) only then. Returns whether they were kept."""
        reward = validation["reward"]
        if self.best is not None and reward <= self.best.reward:
            return False
        adapters, version = states()
        self.best = Kept(iteration, reward, version, {k: {n: t.detach().clone() for n, t in v.items()} for k, v in adapters.items()})
        self.log(f"keeping {self.best.describe()}")
        return True

    # -- in checkpoints ---------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        b = self.best
        return {f"{PREFIX}{adapter}/{name}": t for adapter, state in b.states.items() for name, t in state.items()} if b else {}

    def state(self) -> dict | None:
        return {"iteration": self.best.iteration, "reward": self.best.reward, "version": self.best.version} if self.best else None

    def restore(self, tensors: dict[str, torch.Tensor], state: dict | None) -> dict[str, torch.Tensor]:
        """Take the kept adapters out of a checkpoint's tensors; returns the rest."""
        states: dict[str, dict[str, torch.Tensor]] = {}
        for key, t in tensors.items():
            if key.startswith(PREFIX):
                adapter, _, name = key[len(PREFIX) :].partition("/")
                states.setdefault(adapter, {})[name] = t
        if state is not None:
            self.best = Kept(state["iteration"], state["reward"], state["version"], states)
        return {k: t for k, t in tensors.items() if not k.startswith(PREFIX)}
