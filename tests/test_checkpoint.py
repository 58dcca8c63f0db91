"""Checkpoints: round trip, newest-first discovery, and corruption detected rather than loaded."""

import json
import random
import shutil

import numpy as np
import pytest
import torch

from solrl.learner.checkpoint import (
    MANIFEST,
    CheckpointError,
    inspect_checkpoint,
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def test_round_trip_keeps_the_newest_and_restores_rng(tmp_path):
    tensors = {"policy.a": torch.randn(3, 4), "optim.a.step": torch.tensor(5.0)}
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, tensors, {"order_position": 8 * step, "rng": rng_state()}, keep=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000002", "step-000003"]
    assert latest_checkpoint(tmp_path).name == "step-000003"
    loaded, state = load_checkpoint(tmp_path)
    assert torch.equal(loaded["policy.a"], tensors["policy.a"]) and state["step"] == 3 and state["order_position"] == 24

    draws = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    set_rng_state(state["rng"])  # read back from state.json: the state taken before those draws
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == draws


def test_corrupt_or_incomplete_checkpoints_are_refused(tmp_path):
    path = save_checkpoint(tmp_path, 7, {"x": torch.zeros(100)}, {})
    data = bytearray((path / "learner.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (path / "learner.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="learner.safetensors has sha256 .* corrupt"):
        load_checkpoint(path)
    data[-1] ^= 0xFF
    (path / "learner.safetensors").write_bytes(bytes(data))
    (path / "state.json").unlink()
    with pytest.raises(CheckpointError, match=r"the folder holds \['learner.safetensors'\] besides it"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        load_checkpoint(tmp_path / "elsewhere")


def _altered(tmp_path, how: str):
    path = save_checkpoint(tmp_path / how, 3, {"x": torch.zeros(4)}, {"iteration": 3})
    manifest = json.loads((path / MANIFEST).read_text())
    if how == "entry_missing":
        del manifest["state.json"]
    elif how == "entry_extra":
        manifest["notes.txt"] = "0" * 64
    if how in ("entry_missing", "entry_extra"):
        (path / MANIFEST).write_text(json.dumps(manifest))
    elif how == "file_extra":
        (path / "notes.txt").write_text("hello")
    elif how == "not_json":
        (path / MANIFEST).write_text("{not json")
    elif how == "wrong_type":
        (path / MANIFEST).write_text(json.dumps(["learner.safetensors", "state.json"]))
    elif how == "renamed":
        path = path.rename(path.with_name("step-000009"))
    return path


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("entry_missing", r"manifest lists \['learner.safetensors'\]"),
        ("entry_extra", r"manifest lists \['learner.safetensors', 'notes.txt', 'state.json'\]"),
        ("file_extra", r"holds \['learner.safetensors', 'notes.txt', 'state.json'\] besides it"),
        ("not_json", "manifest.json is not JSON"),
        ("wrong_type", "must map file names to sha256 digests"),
        ("renamed", "folder step-000009 holds step 3"),
    ],
)
def test_a_manifest_must_list_exactly_the_files_of_a_folder_named_after_its_step(tmp_path, how, message):
    path = _altered(tmp_path, how)
    with pytest.raises(CheckpointError, match=message):
        inspect_checkpoint(path)


def test_inspecting_a_checkpoint_reads_its_state_without_the_tensors(tmp_path):
    path = save_checkpoint(tmp_path, 4, {"x": torch.zeros(4)}, {"iteration": 4})
    folder, state = inspect_checkpoint(tmp_path)
    assert folder == path and state == {"iteration": 4, "step": 4}
    shutil.rmtree(path)
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        inspect_checkpoint(tmp_path)
