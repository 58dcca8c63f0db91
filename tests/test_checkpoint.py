"""Checkpoints: round trip, newest-first discovery, and corruption detected rather than loaded."""

import random

import numpy as np
import pytest
import torch

from solrl.learner.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state


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
    with pytest.raises(CheckpointError, match="lacks state.json"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        load_checkpoint(tmp_path / "elsewhere")
