"""Run checkpoints: every tensor of the learner in one safetensors file, the rest of the run's
state as JSON, and a manifest of sha256 digests so a corrupt checkpoint is detected, not loaded.

Layout: RUN/checkpoints/step-000012/{learner.safetensors, state.json, manifest.json}. The
manifest is written last and renamed into place, so a checkpoint without one is incomplete.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import pathlib
import random
import shutil

import numpy as np
import torch
from safetensors.torch import load_file, save_file

TENSORS, STATE, MANIFEST = "learner.safetensors", "state.json", "manifest.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or corrupt."""


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def rng_state() -> dict:
    """Python, numpy and torch CPU generator states, as JSON-able values."""
    return {
        "python": repr(random.getstate()),
        "numpy": [v.tolist() if isinstance(v, np.ndarray) else v for v in np.random.get_state()],
        "torch": torch.get_rng_state().tolist(),
    }


def set_rng_state(state: dict) -> None:
    """Restore what rng_state returned."""
    version, internal, gauss = ast.literal_eval(state["python"])
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))


def save_checkpoint(run_dir: str | pathlib.Path, step: int, tensors: dict[str, torch.Tensor], state: dict, keep: int = 2) -> pathlib.Path:
    """Write checkpoint `step` under run_dir/checkpoints and keep only the newest `keep`."""
    root = pathlib.Path(run_dir) / "checkpoints"
    final = root / f"step-{step:06d}"
    tmp = root / f".step-{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / TENSORS))
    (tmp / STATE).write_text(json.dumps({**state, "step": step}, indent=1) + "\n")
    manifest = {name: _sha256(tmp / name) for name in (TENSORS, STATE)}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in sorted(root.glob("step-*"))[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: str | pathlib.Path) -> pathlib.Path | None:
    """The newest complete checkpoint of a run, or None."""
    found = sorted(p for p in (pathlib.Path(run_dir) / "checkpoints").glob("step-*") if (p / MANIFEST).is_file())
    return found[-1] if found else None


def load_checkpoint(path: str | pathlib.Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, state) of a checkpoint after checking every file against its manifest.

    `path` may be a checkpoint folder or a run folder (its newest checkpoint is taken).
    """
    path = pathlib.Path(path)
    if not (path / MANIFEST).is_file():
        newest = latest_checkpoint(path)
        if newest is None:
            raise CheckpointError(f"{path} holds no complete checkpoint (no {MANIFEST}); pass a run folder or a checkpoints/step-* folder")
        path = newest
    manifest = json.loads((path / MANIFEST).read_text())
    for name, digest in manifest.items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint {path} lacks {name}; it is incomplete, resume from an earlier one")
        actual = _sha256(file)
        if actual != digest:
            raise CheckpointError(
                f"checkpoint {path}: {name} has sha256 {actual[:12]}..., the manifest says {digest[:12]}...; "
                "the file is corrupt, resume from an earlier checkpoint"
            )
    return load_file(str(path / TENSORS)), json.loads((path / STATE).read_text())
