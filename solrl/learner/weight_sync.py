"""Versioned, checksummed weight updates from the learner to the samplers.

The learner builds one WeightUpdate per optimizer version and publishes it once; each sampler
verifies the checksum before merging, so a corrupted or mismatched update is an error, never a
silently wrong policy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch


class WeightSyncError(RuntimeError):
    """A weight update failed verification, or a sampler serves a version it was not sent."""


def state_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and raw bytes, in sorted name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        # the raw bytes through a same-width integer view (numpy has no bfloat16), hashed in place
        h.update(t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b"")
    return h.hexdigest()


@dataclass(frozen=True)
class WeightUpdate:
    """The rollout policy's adapter at one version, with its checksum."""

    version: int
    tensors: dict[str, torch.Tensor]
    sha256: str

    @classmethod
    def build(cls, version: int, tensors: dict[str, torch.Tensor]) -> WeightUpdate:
        """Detach and copy `tensors` to CPU and checksum them."""
        cpu = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
        return cls(version, cpu, state_digest(cpu))

    @property
    def nbytes(self) -> int:
        """Payload size in bytes."""
        return int(sum(t.numel() * t.element_size() for t in self.tensors.values()))

    def verify(self) -> dict[str, torch.Tensor]:
        """The tensors, after checking they hash to `sha256`; raises WeightSyncError otherwise."""
        actual = state_digest(self.tensors)
        if actual != self.sha256:
            raise WeightSyncError(
                f"weight update v{self.version} fails its checksum (expected {self.sha256[:12]}..., got {actual[:12]}...); "
                "the payload was corrupted in transit: republish it"
            )
        return self.tensors


def check_served(worker: str, served: int, expected: int) -> None:
    """Raise if a sampler reports serving a version other than the one just published."""
    if served != expected:
        raise WeightSyncError(f"sampler {worker} serves policy version {served}, expected {expected}")

