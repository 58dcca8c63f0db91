"""Run configuration: the shipped default, --set overrides, and errors that name field, value and fix."""

import json
import pathlib

import pytest

from solrl.config import ConfigError, RunConfig, dump_config, load_config, shipped_config


def test_shipped_shapes_config_loads():
    config = load_config()
    assert [(r.name, r.weight, r.gate) for r in config.reward] == [("shapes", 0.5, None), ("shapes_size", 0.5, "shapes_strict"), ("shapes_strict", 0, None)]
    assert config.model.kind == "shapes"
    assert shipped_config("shapes").is_file()
    assert RunConfig.model_validate(__import__("yaml").safe_load(dump_config(config))) == config


def test_defaults_are_the_papers():
    config = RunConfig()
    assert (config.rollout.candidates, config.selection.k, config.rollout.prompts_per_iteration) == (96, 24, 48)
    assert (config.rollout.explore.steps, config.rollout.regenerate.steps) == (6, 10)
    assert (config.rollout.explore_precision, config.rollout.regenerate_precision) == ("nvfp4", "bf16")
    assert (config.model.lora.rank, config.model.lora.alpha) == (32, 64)
    assert config.train.optim.lr == 3e-4 and config.train.nft.beta == 1.0


def test_overrides_parse_yaml_values():
    config = load_config(overrides=["train.iterations=3", "rollout.explore.solver=euler", "selection.mode=random", "train.optim.betas=[0.8, 0.9]"])
    assert config.train.iterations == 3 and config.rollout.explore.solver == "euler"
    assert config.selection.mode == "random" and config.train.optim.betas == (0.8, 0.9)


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.iterations=-1", "train.iterations = -1"),
        ("rollout.explore.solver=heun", "rollout.explore.solver = 'heun'"),
        ("train.iteratons=5", "train.iteratons = 5: Extra inputs are not permitted (remove it or check its spelling)"),
        ("selection.k=500", "selection.k=500 exceeds rollout.candidates"),
    ],
)
def test_bad_values_name_field_value_and_fix(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    assert expected in str(err.value)


def test_bad_override_syntax_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(overrides=["train.iterations"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


@pytest.mark.parametrize("name", ["sd35", "flux1", "sana"])
def test_real_model_configs_fit_the_node_they_state(name):
    """Each real-model config says the node it is laid out for; its actors reserve exactly its GPUs."""
    import re

    stated = re.search(r"one node of (\d+) GPUs", shipped_config(name).read_text())
    assert stated, f"{name}.yaml does not state its node"
    assert load_config(shipped_config(name)).cluster.resources()["GPU"] == int(stated.group(1))


def test_reward_workers_reserve_resources_too():
    c = load_config(overrides=["cluster.reward_workers=3", "cluster.cpus_per_worker=0.5", "cluster.gpus_per_worker=0.25"]).cluster
    assert c.workers == c.rollout_workers + c.regen_workers + c.learner_ranks + 3
    assert c.resources() == {"CPU": 0.5 * c.workers, "GPU": 0.25 * c.workers}


def test_a_pool_may_override_cpus_and_gpus_and_add_custom_resources():
    """Ray takes CPU and GPU only as num_cpus / num_gpus; a pool's override of them goes there."""
    c = load_config(overrides=["cluster.pool_resources={rollout: {CPU: 0.5, nvfp4: 1}, learner: {GPU: 1}}"]).cluster
    assert c.actor_options("rollout") == {"num_cpus": 0.5, "num_gpus": 0, "resources": {"nvfp4": 1}}
    assert c.actor_options("regen") == {"num_cpus": 1, "num_gpus": 0}
    assert c.actor_options("learner") == {"num_cpus": 1, "num_gpus": 1}
    assert c.resources() == {"CPU": 2 * 0.5 + 1 + 2, "GPU": 2, "nvfp4": 2}


def test_config_show_prints_a_loadable_config_with_every_description(tmp_path, capsys):
    from solrl.cli import main
    from solrl.config import RunConfig

    assert main(["config", "show", "--set", "train.iterations=3", "--set", "rollout.max_policy_lag=0"]) == 0
    text = capsys.readouterr().out
    path = tmp_path / "shown.yaml"
    path.write_text(text)
    assert load_config(path) == load_config(overrides=["train.iterations=3", "rollout.max_policy_lag=0"])
    assert "  max_policy_lag: 0  # Policy versions explore may run ahead of training" in text
    assert all("  # " in line for line in text.splitlines())
    assert main(["config", "show", "--schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == RunConfig.__name__


def test_the_configuration_docs_are_generated_from_the_models():
    from solrl.config_docs import markdown

    doc = pathlib.Path(__file__).parents[1] / "docs" / "configuration.md"
    assert doc.read_text() == markdown(), "regenerate: python -m solrl.config_docs > docs/configuration.md"
    assert "|  |" not in doc.read_text()  # every field has a description


def test_the_lag_moved_out_of_cluster_with_a_message_naming_its_new_place():
    with pytest.raises(ConfigError, match="moved to rollout.max_policy_lag"):
        load_config(overrides=["cluster.max_policy_lag=1"])
    assert load_config().rollout.max_policy_lag == 1


def test_each_reward_kind_takes_only_its_own_fields():
    with pytest.raises(ConfigError, match=r"reward\.0\.shapes\.address.*remove it"):
        load_config(overrides=["reward={name: shapes, address: 'h:1'}"])
    with pytest.raises(ConfigError, match=r"reward\.0\.vlm_judge\.judge_model: Field required \(add it\)"):
        load_config(overrides=["reward={name: vlm_judge, address: 'http://h/v1'}"])
