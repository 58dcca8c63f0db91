"""LearnerGroup ranks: two real gloo processes, with FSDP2 or as replicas (train.sharding), take
the same steps as one process, and a rank's state round-trips so a restored group continues
exactly."""

import json

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from solrl.config import load_config
from solrl.learner.rank import LearnerRank, RankConfig
from solrl.learner.rendezvous import free_port
from solrl.models.base import POLICY
from solrl.models.shapes import ShapesArchitecture, ShapesModel
from solrl.toy.captions import all_captions
from solrl.types import TrainBatch, rank_rows

WORDS = sorted({w for caps in all_captions().values() for c in caps for w in c.split()})


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    arch = ShapesArchitecture(patch_size=4, layers=2, heads=2, head_dim=16, text_dim=32, text_layers=1)
    ShapesModel.from_scratch(arch, WORDS).save_pretrained(path)
    # kl_target 1.5e-7: the first step starts at the base (KL 0); the second's KL (about 1.9e-7 here) sets the
    # adaptive weight between its floor and cap, so the ranks must agree on the batch's KL and a restored
    # group must carry the weight
    overrides = [f"model.path={path}", "model.lora={rank: 4, alpha: 8}", "rollout.regenerate.steps=4", "train.optim.lr=0.001", "train.nft.kl_target=1.5e-7"]
    return load_config(overrides=overrides)


def _batch(policy, step: int) -> TrainBatch:
    g = torch.Generator().manual_seed(step)
    captions = ["a red circle", "two squares", "a blue triangle"] * 3  # 9 rows: ranks get 5 and 4
    cond = policy.encode_prompts(captions)
    return TrainBatch(
        torch.randn(9, 3, 32, 32, generator=g), cond.to(dtype=torch.float32), torch.rand(9, generator=g),
        torch.tensor([0, 1, 2] * 3), torch.arange(9) + 100 * step, step,
    )


def _train(rank: int, world: int, port: int, config, steps: range, out: str, restore: str | None = None):
    torch.set_num_threads(1)
    learner = LearnerRank(RankConfig.of(config), rank, world, "127.0.0.1", port)
    if restore:
        meta = json.loads(open(restore + ".json").read())
        learner.load_state(load_file(restore), meta["step"])
    losses = []
    for step in steps:
        with torch.no_grad():
            batch = _batch(learner.policy, step)
        losses.append(learner.step(batch.labels(), batch.select(rank_rows(len(batch), rank, world)))["loss"])
    state = learner.state()
    update = learner.weight_update()
    if rank == 0:
        save_file(state, out)
        open(out + ".json", "w").write(json.dumps({"step": learner.version, "losses": losses, "sha": update.sha256}))
    learner.close()


def _spawn(world, config, steps, out, restore=None):
    if world == 1:
        _train(0, 1, 0, config, steps, out, restore)
    else:
        mp.spawn(_train, args=(world, free_port(), config, steps, out, restore), nprocs=world, join=True)
    return load_file(out), json.loads(open(out + ".json").read())


def test_two_fsdp_ranks_equal_one_process_and_resume_exactly(config, tmp_path):
    one, one_meta = _spawn(1, config, range(3), str(tmp_path / "one.safetensors"))
    two, two_meta = _spawn(2, config, range(3), str(tmp_path / "two.safetensors"))
    assert one.keys() == two.keys() and any(k.startswith("optim.") for k in one)
    policy_b = [k for k in one if k.startswith("policy.") and "lora_B" in k]
    assert policy_b and all(one[k].abs().max() > 0 for k in policy_b)  # it really trained
    for k in one:
        assert torch.allclose(one[k], two[k], atol=1e-6, rtol=0), (k, (one[k] - two[k]).abs().max())
    # the weight follows the batch's KL, which one process and two ranks sum in different orders
    assert one_meta["step"] == two_meta["step"] == 3 and float(one["kl_weight"]) == pytest.approx(float(two["kl_weight"]), rel=1e-5)
    assert 1e-4 < float(one["kl_weight"]) < 1.0, float(one["kl_weight"])  # moved by the KL, neither at its floor nor its cap
    assert max(abs(a - b) for a, b in zip(one_meta["losses"], two_meta["losses"])) < 1e-6

    # two steps, checkpoint, then a fresh two-rank group restores and takes the third
    _spawn(2, config, range(2), str(tmp_path / "ckpt.safetensors"))
    resumed, resumed_meta = _spawn(2, config, range(2, 3), str(tmp_path / "resumed.safetensors"), str(tmp_path / "ckpt.safetensors"))
    for k in one:
        assert torch.allclose(one[k], resumed[k], atol=1e-6, rtol=0), k
    assert resumed_meta["step"] == 3


def _one_process_group_step(config, steps, world: int):
    """NFTTrainer taking the `world`-rank group's step in one process (what deterministic runs do)."""
    torch.set_num_threads(1)
    torch.manual_seed(config.seed)
    learner = LearnerRank(RankConfig.of(config), 0, 1, "127.0.0.1", 0)
    for step in steps:
        with torch.no_grad():
            batch = _batch(learner.policy, step)
        learner.trainer.step(batch, world=world)
    return learner.state()


# replicas are checked with micro-batches only: the harder case (5 and 4 rows in passes of 2)
@pytest.mark.parametrize(("micro_batch", "sharding"), [(None, "fsdp"), (2, "fsdp"), (2, "replicate")])
def test_one_process_takes_the_two_rank_step_bit_for_bit(config, tmp_path, micro_batch, sharding):
    # micro_batch 2 over 5 and 4 rows: both ranks must run 3 passes per time or FSDP hangs
    config = config.model_copy(update={"train": config.train.model_copy(update={"micro_batch": micro_batch, "sharding": sharding})})
    two, _ = _spawn(2, config, range(3), str(tmp_path / "two.safetensors"))
    one = _one_process_group_step(config, range(3), world=2)
    worst = max((one[k] - two[k]).abs().max().item() for k in one)
    if micro_batch is None or sharding == "replicate":
        assert worst == 0.0
    else:
        # measured ~4e-8: passes of one row differ in the last bits on the sharded model (cause not
        # pinned down); deterministic runs leave micro_batch unset
        assert worst <= 1e-6


def test_rank_policy_matches_plain_model_keys(config):
    learner = LearnerRank(RankConfig.of(config), 0, 1, "127.0.0.1", 0)
    assert learner.adapter_state(POLICY).keys() == learner.policy.adapter_state(POLICY).keys()
    assert learner.weight_update().version == 0
