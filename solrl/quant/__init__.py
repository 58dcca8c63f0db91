"""Number formats (NVFP4, FP8 E4M3) and quantized execution of a model's GEMMs."""

from solrl.quant.formats import (
    NVFP4Quantized,
    fake_quant,
    fake_quant_ste,
    fp8_e4m3_dequantize,
    fp8_e4m3_fake_quant,
    fp8_e4m3_quantize,
    nvfp4_dequantize,
    nvfp4_fake_quant,
    nvfp4_quantize,
)
from solrl.quant.linear import QuantLinear, QuantRecipe, QuantReport, SkipRules, quantize_model, requantize_model

__all__ = [
    "NVFP4Quantized",
    "QuantLinear",
    "QuantRecipe",
    "QuantReport",
    "SkipRules",
    "fake_quant",
    "fake_quant_ste",
    "fp8_e4m3_dequantize",
    "fp8_e4m3_fake_quant",
    "fp8_e4m3_quantize",
    "nvfp4_dequantize",
    "nvfp4_fake_quant",
    "nvfp4_quantize",
    "quantize_model",
    "requantize_model",
]
