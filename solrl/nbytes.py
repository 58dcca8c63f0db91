"""How many bytes a record carries: the payload a process receives when the record crosses to it
(tensor and array data, strings, numbers), not the wire encoding around it."""

from __future__ import annotations

import dataclasses
from typing import Any

SCALAR = 8  # an int, float or bool, as Python and the records keep them
# what crosses between a run's processes (solrl/cluster/traffic.py; docs/architecture.md)
SCORER_BYTES = "scorer_bytes"  # an eval measure: what a sampler exchanged with a reward worker while measuring
KINDS = ("control", "explore_results", "images", "rewards", "conditioning", "samples", "weight_update", "learner_state", "eval", "checkpoint")


def payload_bytes(obj: Any) -> int:
    """Bytes of data in `obj`: tensors and arrays by their buffers, containers and dataclasses by
    their contents, images by their pixels."""
    if obj is None:
        return 0
    nbytes = getattr(obj, "nbytes", None)  # numpy arrays and torch tensors (element_size x numel)
    if isinstance(nbytes, int):
        return nbytes
    if hasattr(obj, "element_size") and hasattr(obj, "numel"):
        return obj.element_size() * obj.numel()
    if isinstance(obj, (bool, int, float)):
        return SCALAR
    if isinstance(obj, (str, bytes, bytearray)):
        return len(obj)
    if isinstance(obj, dict):
        return sum(payload_bytes(k) + payload_bytes(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return sum(payload_bytes(v) for v in obj)
    if dataclasses.is_dataclass(obj):
        return sum(payload_bytes(getattr(obj, f.name)) for f in dataclasses.fields(obj))
    if hasattr(obj, "tobytes") and hasattr(obj, "size") and hasattr(obj, "mode"):  # a PIL image
        return len(obj.tobytes())
    if hasattr(obj, "tensors") and isinstance(obj.tensors, dict):  # Conditioning
        return payload_bytes(obj.tensors)
    raise TypeError(f"payload_bytes cannot size a {type(obj).__name__}; give it tensors, arrays, containers or dataclasses")



def tensor_bytes(tensors: dict) -> int:
    """Bytes of a dict of tensors' data, their names left out (as WeightUpdate.nbytes counts)."""
    return sum(payload_bytes(t) for t in tensors.values())
