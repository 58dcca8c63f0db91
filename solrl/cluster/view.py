"""The live terminal view of a distributed run: one progress bar over iterations whose status
line shows the current iteration's explore / regenerate progress, queue depths, throughput,
reward and policy lag, refreshed as results arrive."""

from __future__ import annotations

from tqdm import tqdm


class LiveView:
    """A tqdm bar; `stage` updates the status line, `iteration_done` advances the bar."""

    def __init__(self, total: int, start: int = 0, enabled: bool = True):
        self.bar = tqdm(total=total, initial=start, desc="solrl", unit="it", disable=not enabled, dynamic_ncols=True)
        self.last: dict = {}

    def stage(self, explored: int, regenerated: int, groups: int, queues: dict[str, int], workers: dict[str, int]) -> None:
        self.bar.set_postfix(
            explored=f"{explored}/{groups}",
            regen=f"{regenerated}/{groups}",
            q="/".join(str(depth) for depth in queues.values()),
            workers="+".join(str(n) for n in workers.values()),
            **self.last,
            refresh=True,
        )

    def iteration_done(self, row: dict) -> None:
        explore = row["seconds"].get("explore") or 0
        self.last = {
            "reward": f"{row['bf16_reward_mean']:.3f}",
            "rho": f"{row['spearman']:.2f}",
            "cand/s": f"{row['candidates'] / explore:.0f}" if explore else "-",
            "lag": row["policy_lag"],
        }
        self.bar.update(1)

    def write(self, message: str) -> None:
        """Print above the bar without breaking it."""
        self.bar.write(message)

    def close(self) -> None:
        self.bar.close()
