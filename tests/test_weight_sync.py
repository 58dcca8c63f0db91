"""WeightUpdate: checksums catch corruption; samplers serve exactly the version they were sent."""

import pytest
import torch

from solrl.learner.weight_sync import WeightSyncError, WeightUpdate, check_served, state_digest


def _state():
    g = torch.Generator().manual_seed(0)
    return {"b.lora_B.weight": torch.randn(4, 2, generator=g), "a.lora_A.weight": torch.randn(2, 4, generator=g).bfloat16()}


def test_digest_is_order_free_and_sensitive_to_every_bit():
    state = _state()
    reordered = dict(reversed(list(state.items())))
    assert state_digest(state) == state_digest(reordered)
    flipped = {k: v.clone() for k, v in state.items()}
    flipped["a.lora_A.weight"].view(torch.int16)[0, 0] ^= 1  # one bit of one bf16 element
    assert state_digest(flipped) != state_digest(state)
    renamed = {"c" + k: v for k, v in state.items()}
    assert state_digest(renamed) != state_digest(state)
    recast = {**state, "a.lora_A.weight": state["a.lora_A.weight"].float()}
    assert state_digest(recast) != state_digest(state)


def test_update_copies_verifies_and_rejects_corruption():
    state = _state()
    update = WeightUpdate.build(7, state)
    state["b.lora_B.weight"].add_(1.0)  # later in-place training must not change a published update
    assert torch.equal(update.verify()["b.lora_B.weight"], _state()["b.lora_B.weight"])
    assert update.nbytes == 4 * 2 * 4 + 2 * 4 * 2
    update.tensors["b.lora_B.weight"][0, 0] += 1e-6
    with pytest.raises(WeightSyncError, match="v7 fails its checksum"):
        update.verify()


def test_served_version_mismatch_is_an_error():
    check_served("rollout-0", 3, 3)
    with pytest.raises(WeightSyncError, match="rollout-1 serves policy version 2, expected 3"):
        check_served("rollout-1", 2, 3)
