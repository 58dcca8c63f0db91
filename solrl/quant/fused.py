"""Fused fake-quant for emulated GEMM activations: the formats' fake-quant compiled once per
process by torch.compile (dynamic shapes), which fuses its dozen elementwise passes into a few
loops. The result is bit for bit the eager one (tests/test_quant_formats.py checks); where
compilation is unavailable (no C++ compiler) it falls back to the eager function, with a warning."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from solrl.quant.formats import FAKE_QUANT, fake_quant

_compiled: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
_broken: list[str] = []  # why compilation failed, once it has


def fused_fake_quant(x: torch.Tensor, fmt: str) -> torch.Tensor:
    """fake_quant(x, fmt), compiled."""
    if _broken or fmt not in FAKE_QUANT:
        return fake_quant(x, fmt)
    fn = _compiled.get(fmt)
    if fn is None:
        # emulate_precision_casts: inductor would otherwise drop an fp32 -> bf16 -> fp32 round trip
        # as a no-op, which is the whole of the bf16 fake-quant
        fn = _compiled[fmt] = torch.compile(FAKE_QUANT[fmt], dynamic=True, options={"emulate_precision_casts": True})
    try:
        return fn(x)
    except Exception as exc:  # a missing compiler or an unsupported platform: stay correct, go slow
        _broken.append(f"{type(exc).__name__}: {exc}")
        warnings.warn(f"fused fake-quant unavailable ({_broken[0][:200]}); using the eager one (set quant.fused=false to silence)", stacklevel=2)
        return fake_quant(x, fmt)
