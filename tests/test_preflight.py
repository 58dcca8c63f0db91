"""`solrl train` refuses bad input before anything starts: one line on stderr naming the setting,
the value and the fix, exit status 2, no traceback, no run folder, no Ray. Each case runs the
command line in-process (solrl.cli.main); one also runs it as a subprocess, where "no traceback"
and "no Ray started" are seen from outside."""

import os
import socket
import subprocess
import sys

import pytest

QUICK = ["--set", "train.iterations=1"]


def _case(tmp_path, name):
    """(extra arguments, what stderr must say) of one bad input."""
    files = {"bad.yaml": "train: {iterations: 3\n", "empty.txt": "# nothing\n", "odd.txt": "a purple hexagon\n", "two.txt": "a red circle\ntwo squares\n"}
    for file, text in files.items():
        (tmp_path / file).write_text(text)
    path = {file: str(tmp_path / file) for file in files}
    return {
        "yaml_file": ([path["bad.yaml"]], "is not valid YAML at line"),
        "yaml_set": (["--set", "reward=[shapes"], "--set 'reward=[shapes': the value is not valid YAML"),
        "missing_prompts": (["--set", f"prompts={tmp_path / 'none.txt'}"], "is neither 'train', 'eval', 'validation' nor a caption file"),
        "empty_prompts": (["--set", f"prompts={path['empty.txt']}"], "holds no captions"),
        "bad_caption": (["--set", f"eval.prompts={path['odd.txt']}"], "eval.prompts="),
        "few_prompts": (["--set", f"prompts={path['two.txt']}"], "rollout.prompts_per_iteration=8 is more than the 2 prompts"),
        "model_folder": (["--set", f"model.path={tmp_path / 'no-model'}"], "is not a folder"),
        "device": (["--set", "model.device=cuda:0"], "has no CUDA device"),
        "world": (["--set", "reward={name: pickscore, path: /x}"], "prompts='train' names the shipped shapes captions, which only the shapes reward reads"),
        "port_invalid": (["--metrics-port", "70000"], "--metrics-port 70000 is not a port"),
        "validation_overlap": (["--set", "eval.every=1", "--set", "eval.validation=eval"], "eval.validation='eval' shares 63 prompts with eval.prompts='eval'"),
        "validation_world": (
            ["--set", "reward={name: pickscore, path: /x}", "--set", f"prompts={path['two.txt']}", "--set", f"eval.prompts={path['two.txt']}", "--set", "eval.every=1"],
            "eval.validation='validation' names shipped shapes captions",
        ),
        "metrics_exposed": (["--metrics-port", "0", "--metrics-host", "0.0.0.0"], "is not loopback and SOLRL_METRICS_TOKEN is not set"),
    }[name]


CASES = [
    "yaml_file", "yaml_set", "missing_prompts", "empty_prompts", "bad_caption", "few_prompts", "model_folder", "device", "world", "port_invalid",
    "port_busy", "metrics_exposed", "validation_overlap", "validation_world",
]  # fmt: skip


def _args(tmp_path, name, busy: socket.socket):
    if name == "port_busy":
        return ["--metrics-port", str(busy.getsockname()[1])], "cannot be bound"
    return _case(tmp_path, name)


@pytest.mark.parametrize("name", CASES)
def test_bad_input_gets_one_line_before_anything_starts(tmp_path, name, capsys, monkeypatch):
    from solrl.cli import main

    out = tmp_path / "run"
    monkeypatch.delenv("SOLRL_METRICS_TOKEN", raising=False)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        args, expected = _args(tmp_path, name, busy)
        code = main(["train", "--out", str(out), *QUICK, *args])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and expected in lines[0], (code, lines)
    assert not out.exists()


def test_bad_input_in_a_subprocess_exits_2_with_one_line_and_starts_no_ray(tmp_path):
    out = tmp_path / "run"
    args, expected = _case(tmp_path, "few_prompts")
    env = {k: v for k, v in os.environ.items() if k != "SOLRL_METRICS_TOKEN"}
    done = subprocess.run([sys.executable, "-m", "solrl.cli", "train", "--out", str(out), *QUICK, *args], capture_output=True, text=True, timeout=300, env=env)
    lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith(("Failed to load", "W1", "W0"))]
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1 and expected in lines[0], lines
    assert "Traceback" not in done.stderr and "ray" not in done.stderr.lower() and not out.exists()
