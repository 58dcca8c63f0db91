"""The GPU precision backends. On any machine: torchao's quantized weights carry exactly the
emulated backend's numbers. On the hardware (skipped elsewhere, with the reason): each backend's
real GEMM agrees with the emulated one, and an in-place weight merge is picked up."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from solrl.quant.formats import fake_quant
from solrl.quant.linear import QuantLinear, QuantRecipe, quantize_model


def _capability() -> tuple[int, int] | None:
    return torch.cuda.get_device_capability() if torch.cuda.is_available() else None


def _need(minimum: tuple[int, int], what: str, package: str):
    cap = _capability()
    if importlib.util.find_spec(package) is None:
        return pytest.mark.skip(reason=f"{package} is not installed")
    if cap is None or cap < minimum:
        return pytest.mark.skip(reason=f"{what} needs an NVIDIA GPU of compute capability >= {minimum[0]}.{minimum[1]}; "
                                       f"this machine has {'no CUDA GPU' if cap is None else f'{cap[0]}.{cap[1]}'}")
    return lambda test: test


@pytest.mark.parametrize("fmt", ["nvfp4", "fp8_e4m3"])
def test_torchao_weights_match_emulated_numerics(fmt):
    from solrl.quant.backends.torchao_backend import quantize_weight

    w = torch.randn(64, 128, generator=torch.Generator().manual_seed(0))
    q = quantize_weight(w, fmt, quantize_activations=True)
    torch.testing.assert_close(q.dequantize(torch.float32), fake_quant(w, fmt), atol=0, rtol=0)


def _parity(backend: str, fmt: str, device: str = "cuda"):
    torch.manual_seed(0)
    layer = nn.Linear(256, 512, device=device, dtype=torch.bfloat16)
    x = torch.randn(64, 256, device=device, dtype=torch.bfloat16)
    reference = QuantLinear(nn.Linear(256, 512), fmt).to(device, torch.bfloat16)
    reference.weight, reference.bias = layer.weight, layer.bias
    if device == "cuda":
        model = nn.Sequential(layer)
        report = quantize_model(model, QuantRecipe(format=fmt, backend=backend))
        assert report.quantized == ["0"]
    else:  # the backend's own check wants a GPU; its layer runs wherever torch._scaled_mm does
        from solrl.quant.backends.torchao_backend import TorchAOLinear

        model = TorchAOLinear(layer, fmt)
    for _ in range(2):
        with torch.no_grad():
            got, want = model(x).float(), reference(x).float()
        rel = ((got - want).norm() / want.norm()).item()
        assert rel < 2e-2, f"{backend} {fmt}: relative difference {rel:.2e} from the emulated backend"
        with torch.no_grad():
            layer.weight.mul_(-0.5)  # an in-place merge must be seen on the next call


@_need((10, 0), "NVFP4 GEMMs", "torchao")
def test_torchao_nvfp4_gemm_parity():
    _parity("torchao", "nvfp4")


@_need((8, 9), "FP8 GEMMs", "torchao")
def test_torchao_fp8_gemm_parity():
    _parity("torchao", "fp8_e4m3")


def test_torchao_fp8_gemm_path_runs_on_cpu():
    """The FP8 layer's whole GEMM path (torchao's dispatch to torch._scaled_mm), on any machine
    where torch has a CPU _scaled_mm: on a GPU this path once failed on a weight built without an
    mm_config, which comparing dequantized weights alone could not see."""
    pytest.importorskip("torchao")
    a = torch.ones(16, 16, dtype=torch.float8_e4m3fn)
    try:
        torch._scaled_mm(a, a.t(), scale_a=torch.tensor(1.0), scale_b=torch.tensor(1.0), out_dtype=torch.bfloat16)
    except (RuntimeError, NotImplementedError) as exc:
        pytest.skip(f"this torch {torch.__version__} has no CPU torch._scaled_mm: {str(exc)[:80]}")
    _parity("torchao", "fp8_e4m3", device="cpu")


@_need((10, 0), "NVFP4 GEMMs", "transformer_engine")
def test_transformer_engine_nvfp4_gemm_parity():
    _parity("transformer_engine", "nvfp4")


@_need((8, 9), "FP8 GEMMs", "transformer_engine")
def test_transformer_engine_fp8_gemm_parity():
    _parity("transformer_engine", "fp8_e4m3")
