"""What `deterministic: true` needs beyond seeded noise.

CPU attention, norms and reductions sum in an order that depends on the thread count, and NVFP4
or BF16 rounding turns those last-bit differences into visible ones; so deterministic runs sample,
merge and train on one thread, wherever they run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def single_threaded(enabled: bool = True) -> Iterator[None]:
    """Run torch ops on one thread inside the block (when enabled), then restore."""
    if not enabled:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
