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


def inspect_checkpoint(path: str | pathlib.Path) -> tuple[pathlib.Path, dict]:
    """(folder, state) of a checkpoint whose every file matches its manifest, without loading
    the tensors. `path` may be a checkpoint folder or a run folder (its newest checkpoint).

    The manifest must be a JSON object of file name -> sha256 listing exactly the files present,
    and the folder's name must match the step stored in state.json; anything else is a
    CheckpointError naming what is wrong."""
    path = pathlib.Path(path)
    if not (path / MANIFEST).is_file():
        newest = latest_checkpoint(path)
        if newest is None:
            raise CheckpointError(f"{path} holds no complete checkpoint (no {MANIFEST}); pass a run folder or a checkpoints/step-* folder")
        path = newest
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint {path}: {MANIFEST} is not JSON ({exc}); resume from an earlier checkpoint") from None
    if not isinstance(manifest, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in manifest.items()):
        raise CheckpointError(f"checkpoint {path}: {MANIFEST} must map file names to sha256 digests; resume from an earlier checkpoint")
    present = {p.name for p in path.iterdir()} - {MANIFEST}
    if set(manifest) != {TENSORS, STATE} or present != set(manifest):
        raise CheckpointError(
            f"checkpoint {path}: its manifest lists {sorted(manifest)}, the folder holds {sorted(present)} besides it, and both must be "
            f"exactly {[STATE, TENSORS]}; it is incomplete or was altered, resume from an earlier one"
        )
    for name, digest in manifest.items():
        actual = _sha256(path / name)
        if actual != digest:
            raise CheckpointError(
                f"checkpoint {path}: {name} has sha256 {actual[:12]}..., the manifest says {digest[:12]}...; "
                "the file is corrupt, resume from an earlier checkpoint"
            )
    state = json.loads((path / STATE).read_text())
    if path.name != f"step-{state.get('step', -1):06d}":
        raise CheckpointError(f"checkpoint folder {path.name} holds step {state.get('step')}; a checkpoint folder is named step-NNNNNN after its step")
    return path, state


def load_checkpoint(path: str | pathlib.Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, state) of a checkpoint after inspect_checkpoint's checks."""
    path, state = inspect_checkpoint(path)
    return load_file(str(path / TENSORS)), state
