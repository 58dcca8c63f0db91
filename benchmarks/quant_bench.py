"""NVFP4 quantize and fake-quant throughput (elements/s) and error, solrl's emulated backend next
to torchao's NVFP4Tensor (per-tensor scale), on the current device.

    python benchmarks/quant_bench.py [--sizes 1024 4096] [--repeats 5]
"""

from __future__ import annotations

import argparse
import warnings

import torch

from common import append_results, median_seconds, table
from solrl.quant.formats import nvfp4_fake_quant, nvfp4_quantize


def _torchao():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torchao.prototype.mx_formats.nvfp4_tensor import NVFP4Tensor, per_tensor_amax_to_scale
    except ImportError:
        return None

    def quantize(x):
        return NVFP4Tensor.to_nvfp4(x, per_tensor_scale=per_tensor_amax_to_scale(x.abs().max()))

    return quantize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ao_quantize = _torchao()
    rows = []
    for n in args.sizes:
        for dtype in (torch.float32, torch.bfloat16):
            x = torch.randn(n, n, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype)
            elements = x.numel()
            fq = nvfp4_fake_quant(x)
            err = float((fq.float() - x.float()).norm() / x.float().norm())
            q_s = median_seconds(lambda: nvfp4_quantize(x), args.repeats)
            fq_s = median_seconds(lambda: nvfp4_fake_quant(x), args.repeats)
            row = [f"{n}x{n}", str(dtype).replace("torch.", ""), f"{elements / q_s:.3g}", f"{elements / fq_s:.3g}", f"{err:.4f}"]
            if ao_quantize is not None:
                ref = ao_quantize(x).dequantize(dtype)
                ao_err = float((ref.float() - x.float()).norm() / x.float().norm())
                ao_q = median_seconds(lambda: ao_quantize(x), args.repeats)
                ao_fq = median_seconds(lambda: ao_quantize(x).dequantize(dtype), args.repeats)
                same = torch.equal(ref, fq)
                row += [f"{elements / ao_q:.3g}", f"{elements / ao_fq:.3g}", f"{ao_err:.4f}", "yes" if same else "NO"]
            else:
                row += ["-", "-", "-", "torchao not installed"]
            rows.append(row)
    headers = [
        "shape", "dtype", "solrl quantize el/s", "solrl fake-quant el/s", "solrl rel. error",
        "torchao quantize el/s", "torchao fake-quant el/s", "torchao rel. error", "bit-identical",
    ]
    append_results(
        f"NVFP4 quantize / fake-quant throughput on {device}",
        table(headers, rows),
        "median of repeats; fake-quant = quantize + dequantize; relative Frobenius error on randn",
    )


if __name__ == "__main__":
    main()
