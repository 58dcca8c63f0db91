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
# (format, device type, dtype) -> whether the compiled function gave the eager bits on a probe
_verified: dict[tuple[str, str, torch.dtype], bool] = {}


def _probe(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Values across twelve decades, exact ties of the FP4 grid and a zero row."""
    x = torch.randn(37, 64, generator=torch.Generator().manual_seed(0)) * torch.logspace(-6, 6, 64)
    x[0, :8] = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0])
    x[1] = 0
    return x.to(device, dtype)


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
        key = (fmt, x.device.type, x.dtype)
        if key not in _verified:
            # torch 2.11's inductor dropped the bf16 round trip on CPU despite the option (seen on
            # the GPU machine's image): check the bits once per format, device and dtype
            probe = _probe(x.device, x.dtype)
            _verified[key] = torch.equal(fn(probe), fake_quant(probe, fmt))
            if not _verified[key]:
                warnings.warn(f"fused fake-quant of {fmt} on {x.device.type} {x.dtype} differs from the eager one under torch "
                              f"{torch.__version__}; using the eager one there", stacklevel=2)
        return fn(x) if _verified[key] else fake_quant(x, fmt)
    except Exception as exc:  # a missing compiler or an unsupported platform: stay correct, go slow
        _broken.append(f"{type(exc).__name__}: {exc}")
        warnings.warn(f"fused fake-quant unavailable ({_broken[0][:200]}); using the eager one (set quant.fused=false to silence)", stacklevel=2)
        return fake_quant(x, fmt)
