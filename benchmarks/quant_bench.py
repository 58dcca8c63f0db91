"""NVFP4 emulation cost, two tables:

1. model calls: one velocity call of the shapes model (its real layer shapes) in fp32, and with
   its GEMMs in NVFP4 under the shipped skip rule, the activation fake-quant eager or fused
   (torch.compile), at the explore batch sizes; the ratio to fp32 is the bar (<= 1.5);
2. elementwise: NVFP4 quantize / fake-quant throughput and error next to torchao's NVFP4Tensor.

    python benchmarks/quant_bench.py [--batches 32 256] [--sizes 1024 4096] [--repeats 5]
"""

from __future__ import annotations

import argparse
import warnings

import torch

from common import append_results, median_seconds, table
from solrl.config import load_config
from solrl.models.shapes import ShapesModel
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


def model_calls(batches: list[int], repeats: int) -> None:
    """Seconds per velocity call of the shipped shapes model, fp32 vs NVFP4 (shapes.yaml's rule)."""
    recipe = load_config().rollout.quant
    policy = ShapesModel.from_pretrained()
    copies = {
        "fp32": policy.inference_copy("fp32", adapter=None),
        "bf16 (emulated)": policy.inference_copy("bf16", adapter=None),
        "nvfp4, eager fake-quant": policy.inference_copy("nvfp4", adapter=None, quant=recipe.model_copy(update={"fused": False})),
        "nvfp4, fused fake-quant": policy.inference_copy("nvfp4", adapter=None, quant=recipe.model_copy(update={"fused": True})),
    }
    quantized = len(copies["nvfp4, fused fake-quant"].quant_report.quantized)
    rows = []
    for batch in batches:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch, *policy.sample_shape, generator=g)
        t = torch.rand(batch, generator=g)
        cond = policy.encode_prompts(["a red circle and a blue square"] * batch)
        times = {}
        for name, model in copies.items():
            with torch.no_grad():
                times[name] = median_seconds(lambda m=model: m.velocity(x, t, cond), repeats, warmup=2)
        for name, seconds in times.items():
            rows.append([batch, name, f"{1e3 * seconds:.1f}", f"{seconds / times['fp32']:.2f}"])
    append_results(
        f"Emulated NVFP4 model-call cost on the shapes model ({quantized} GEMMs in NVFP4 under shapes.yaml's rule) on {'cuda' if torch.cuda.is_available() else 'cpu'}",
        table(["batch", "copy", "ms per velocity call", "x fp32"], rows),
        f"median of {repeats} calls after 2 warm-up calls (the first fused call compiles); weights quantized once per weight change, activations per call",
    )


def elementwise(sizes: list[int], repeats: int) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ao_quantize = _torchao()
    rows = []
    for n in sizes:
        for dtype in (torch.float32, torch.bfloat16):
            x = torch.randn(n, n, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype)
            elements = x.numel()
            fq = nvfp4_fake_quant(x)
            err = float((fq.float() - x.float()).norm() / x.float().norm())
            q_s = median_seconds(lambda: nvfp4_quantize(x), repeats)
            fq_s = median_seconds(lambda: nvfp4_fake_quant(x), repeats)
            row = [f"{n}x{n}", str(dtype).replace("torch.", ""), f"{elements / q_s:.3g}", f"{elements / fq_s:.3g}", f"{err:.4f}"]
            if ao_quantize is not None:
                ref = ao_quantize(x).dequantize(dtype)
                ao_err = float((ref.float() - x.float()).norm() / x.float().norm())
                ao_q = median_seconds(lambda: ao_quantize(x), repeats)
                ao_fq = median_seconds(lambda: ao_quantize(x).dequantize(dtype), repeats)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="*", default=[32, 256], help="model-call batch sizes (none: skip the table)")
    parser.add_argument("--sizes", type=int, nargs="*", default=[1024, 4096], help="elementwise matrix sides (none: skip the table)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.batches:
        model_calls(args.batches, args.repeats)
    if args.sizes:
        elementwise(args.sizes, args.repeats)


if __name__ == "__main__":
    main()
