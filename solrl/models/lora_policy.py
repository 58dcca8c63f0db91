"""A PolicyModel over any diffusers transformer: peft LoRA adapters "policy" and "old" on one
frozen base, and merged inference copies that re-merge and re-quantize in place on update."""

from __future__ import annotations

import copy
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import torch
from peft import LoraConfig
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from solrl.models.base import OLD, POLICY, PRECISIONS, Adapter, Conditioning, LoraSpec, Precision
from solrl.quant.linear import QuantRecipe, QuantReport, quantize_model

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
ComputeDtype = Literal["auto", "fp32", "bf16"]


def resolve_compute_dtype(compute: ComputeDtype, device: torch.device) -> torch.dtype:
    """'auto' is bf16 on CUDA and fp32 elsewhere: CPUs without bf16 units run bf16 several times
    slower than fp32, and rounding GEMM operands then multiplying in fp32 gives the same products."""
    if compute == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if compute not in _DTYPES:
        raise ValueError(f"compute_dtype {compute!r} is unknown; choose 'auto', 'fp32' or 'bf16'")
    return _DTYPES[compute]


def lora_delta(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """B A, shaped as the base weight: Linear (out, in); Conv2d (out, in, kh, kw), where peft's
    lora_A is a kh x kw conv to the rank and lora_B a 1x1 conv from it."""
    if a.dim() == 2:
        return b @ a
    if a.shape[-2:] == (1, 1):
        return (b.flatten(1) @ a.flatten(1))[:, :, None, None]
    return torch.nn.functional.conv2d(a.permute(1, 0, 2, 3), b).permute(1, 0, 2, 3)


def _adapter_key(param_name: str, adapter: str) -> str | None:
    """'blocks.0.attn.to_q.lora_A.policy.weight' -> 'blocks.0.attn.to_q.lora_A.weight'."""
    token = f".{adapter}."
    if ".lora_" not in param_name or token not in param_name:
        return None
    return param_name.replace(token, ".", 1)


class DiffusersPolicy(nn.Module, ABC):
    """Base class: subclasses set `transformer`, `sample_shape`, and implement `encode_prompts`,
    `_forward(transformer, x_t, t, cond)` and `decode`."""

    sample_shape: tuple[int, ...]
    transformer: nn.Module
    lora: LoraSpec
    # Skip rules for quantizing this model's GEMMs (docs/method.md: embedders, final layer stay high precision).
    quant_skip_patterns: tuple[str, ...] = ()

    # -- what subclasses provide ---------------------------------------------------------------
    @abstractmethod
    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        """Conditioning for each prompt, batch-first."""

    @abstractmethod
    def _forward(self, transformer: nn.Module, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """Run `transformer` (the policy's, or an inference copy's) at flow time t in [0, 1]."""

    @abstractmethod
    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Clean samples to RGB images in [0, 1]."""

    # -- adapters ------------------------------------------------------------------------------
    def attach_lora(self, spec: LoraSpec) -> None:
        """Add the "policy" and "old" adapters; both start equal (B = 0, so the model is unchanged)."""
        self.lora = spec
        for p in self.transformer.parameters():
            p.requires_grad_(False)
        for name in (POLICY, OLD):
            config = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, target_modules=list(spec.target_modules))
            with warnings.catch_warnings():
                # Two adapters on one model is the point here; peft warns about it on the second.
                warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                self.transformer.add_adapter(config, adapter_name=name)
        self.load_adapter_state(self.adapter_state(POLICY), OLD)
        self.transformer.set_adapter(POLICY)

    @contextmanager
    def _active(self, adapter: Adapter) -> Iterator[None]:
        # peft's set_adapter also flips requires_grad; always come back to the policy adapter.
        if adapter == POLICY:
            yield
            return
        try:
            if adapter is None:
                self.transformer.disable_adapters()
            else:
                self.transformer.set_adapter(adapter)
            yield
        finally:
            if adapter is None:
                self.transformer.enable_adapters()
            self.transformer.set_adapter(POLICY)

    @property
    def device(self) -> torch.device:
        """Where the transformer lives (and where velocity wants its inputs)."""
        return next(self.transformer.parameters()).device

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning, adapter: Adapter = POLICY) -> torch.Tensor:
        """Velocity under the named adapter (None = reference model), in x_t's dtype."""
        if adapter not in (POLICY, OLD, None):
            raise ValueError(f"adapter {adapter!r} is unknown; use 'policy', 'old' or None (reference)")
        dtype = self.transformer.dtype  # bf16 base weights on GPU take bf16 inputs
        with self._active(adapter):
            return self._forward(self.transformer, x_t.to(dtype), t, cond.to(dtype=dtype)).to(x_t.dtype)

    def adapter_parameters(self, adapter: str = POLICY) -> dict[str, nn.Parameter]:
        """Live LoRA parameters of one adapter, keyed without the adapter name."""
        params = {}
        for name, p in self.transformer.named_parameters():
            key = _adapter_key(name, adapter)
            if key is not None:
                params[key] = p
        if not params:
            raise KeyError(f"adapter {adapter!r} has no parameters; call attach_lora first")
        return params

    def adapter_state(self, adapter: str = POLICY) -> dict[str, torch.Tensor]:
        """A detached fp32 CPU copy of one adapter's weights."""
        return {k: p.detach().float().cpu().clone() for k, p in self.adapter_parameters(adapter).items()}

    @torch.no_grad()
    def load_adapter_state(self, state: dict[str, torch.Tensor], adapter: str = POLICY) -> None:
        """Copy `state` into the adapter in place; the key sets must match exactly."""
        params = self.adapter_parameters(adapter)
        if set(state) != set(params):
            missing, extra = sorted(set(params) - set(state)), sorted(set(state) - set(params))
            raise KeyError(f"adapter state does not match adapter {adapter!r}: missing {missing[:3]}, unexpected {extra[:3]}")
        for k, p in params.items():
            p.copy_(state[k])

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the optimizer updates: the policy adapter."""
        return list(self.adapter_parameters(POLICY).values())

    # -- inference copies ----------------------------------------------------------------------
    def inference_copy(
        self,
        precision: Precision = "bf16",
        adapter: Adapter = OLD,
        quant: QuantRecipe | None = None,
        compute_dtype: ComputeDtype = "auto",
    ) -> InferenceModel:
        """A frozen copy with `adapter` merged and its GEMMs in `precision`."""
        return InferenceModel(self, precision, adapter, quant, compute_dtype)


def _strip_lora(module: nn.Module) -> list[str]:
    """Replace every peft LoRA layer in `module` by its base layer; return their paths."""
    paths = []
    for name, child in list(module.named_modules()):
        if isinstance(child, BaseTunerLayer) and name:
            parent_name, _, attr = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            setattr(parent, attr, child.get_base_layer())
            paths.append(name)
    return paths


class InferenceModel(nn.Module):
    """A sampler's copy of a policy: base weights with one adapter merged, its GEMMs in `precision`.

    The model runs in `compute_dtype`. A precision below it is applied to the GEMM operands by the
    quant backend: nvfp4 / fp8 follow the skip rules; bf16 in fp32 compute rounds every GEMM's
    operands to bf16 (an emulated BF16 GEMM: exact products, fp32 accumulation).
    `update_adapter` re-merges in place (W = W_base + scale * B A); quantized layers notice the
    weight change and re-quantize once, on their next call.
    """

    def __init__(
        self,
        policy: DiffusersPolicy,
        precision: Precision,
        adapter: Adapter,
        quant: QuantRecipe | None,
        compute_dtype: ComputeDtype = "auto",
    ):
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} is unknown; choose one of {list(PRECISIONS)}")
        # Borrowed for encode_prompts / decode / _forward, not registered as a submodule: the
        # copy's state and device moves must not drag the trainable policy along.
        object.__setattr__(self, "policy", policy)
        self.precision = precision
        self.sample_shape = policy.sample_shape
        device = next(policy.transformer.parameters()).device
        self.dtype = torch.float32 if precision == "fp32" else resolve_compute_dtype(compute_dtype, device)
        self.version: int | None = None
        with torch.no_grad():
            transformer = copy.deepcopy(policy.transformer)
            lora_paths = _strip_lora(transformer)
            transformer.requires_grad_(False)
            # fp32 base weights of the adapted layers, the starting point of every merge.
            self._base = {p: transformer.get_submodule(p).weight.detach().float().clone() for p in lora_paths}
            # nn.Module.to, not diffusers' override, which warns about fp32-pinned modules SD3 lacks.
            self.transformer = nn.Module.to(transformer, self.dtype)
        self.scaling = policy.lora.scaling if lora_paths else 0.0
        self.quant_report: QuantReport | None = None
        if precision in ("nvfp4", "fp8_e4m3"):
            recipe = (quant or QuantRecipe()).model_copy(deep=True, update={"format": precision})
            if not recipe.skip.name_patterns and policy.quant_skip_patterns:
                recipe.skip.name_patterns = list(policy.quant_skip_patterns)
            self.quant_report = quantize_model(self.transformer, recipe)
        elif precision == "bf16" and self.dtype == torch.float32:
            self.quant_report = quantize_model(self.transformer, QuantRecipe(format="bf16"))
        if adapter is not None:
            self.update_adapter(policy.adapter_state(adapter))

    @torch.no_grad()
    def update_adapter(self, state: dict[str, torch.Tensor], version: int | None = None) -> None:
        """Merge a new adapter state (keys as in adapter_state) into the base weights."""
        for path, base in self._base.items():
            a, b = state.get(f"{path}.lora_A.weight"), state.get(f"{path}.lora_B.weight")
            if a is None or b is None:
                raise KeyError(f"adapter state lacks {path}.lora_A/B.weight; it does not belong to this model")
            weight = self.transformer.get_submodule(path).weight
            merged = base.to(weight.device) + self.scaling * lora_delta(a.float().to(weight.device), b.float().to(weight.device))
            weight.copy_(merged.to(weight.dtype))
        self.version = version

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        return self.policy.encode_prompts(prompts)

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        v = self.policy._forward(self.transformer, x_t.to(self.dtype), t, cond.to(dtype=self.dtype))
        return v.to(x_t.dtype)

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        return self.policy.decode(x0)
