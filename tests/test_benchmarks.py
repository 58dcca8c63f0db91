"""The GPU benchmarks' code paths, run at tiny sizes on the CPU.

`benchmarks/gpu_rollout.py` at real sizes needs a GPU (it ran once, on an H200: RESULTS.md
2026-12-04 13:45); this keeps the code it runs (real diffusers transformers, LoRA merge,
re-quantize, every precision, a training step) working on any machine, and checks that --tiny
leaves RESULTS.md alone.
"""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_gpu_rollout_benchmark_runs_tiny_on_cpu_and_appends_nothing():
    results = ROOT / "benchmarks" / "RESULTS.md"
    before = results.read_bytes()
    cmd = [sys.executable, "gpu_rollout.py", "--tiny", "--batch", "2", "--steps", "2", "--repeats", "1"]
    out = subprocess.run(cmd, cwd=ROOT / "benchmarks", capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in out.stdout.splitlines() if line.startswith("| sd35l") or line.startswith("| flux1")]
    assert [(r[0].strip(), r[2].strip()) for r in rows] == [(m, p) for m in ("sd35l", "flux1") for p in ("bf16", "fp8_e4m3", "nvfp4", "bf16 train")], (
        out.stdout
    )
    for row in rows:  # measured numbers: images/s and merge seconds of each explore, seconds of a trained sample-time
        assert float(row[5]) > 0 and (row[2].strip() == "bf16 train" or float(row[4]) > 0 and float(row[6]) >= 0), row
    assert results.read_bytes() == before


def test_gpu_learner_benchmark_runs_tiny_on_cpu_and_fsdp_takes_the_plain_step():
    """benchmarks/gpu_learner.py's code path (solrl's NFTTrainer plainly and under FSDP2 in a real
    one-rank gloo group) at tiny sizes: every row measured, the FSDP2 step's first loss the plain
    step's, and RESULTS.md left alone."""
    results = ROOT / "benchmarks" / "RESULTS.md"
    before = results.read_bytes()
    cmd = [sys.executable, "gpu_learner.py", "--tiny", "--models", "flux1", "--rows", "4", "--times", "1", "--micro-batches", "1", "2", "--fsdp-micro-batch", "2", "--repeats", "1"]
    out = subprocess.run(cmd, cwd=ROOT / "benchmarks", capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    points = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    steps = [p for p in points if "wrap" in p]
    assert [(p["wrap"], p["micro_batch"]) for p in steps] == [("plain", 1), ("plain", 2), ("fsdp2", 2), ("fsdp2_keep", 2)], out.stdout
    assert all(p["step_seconds"] > 0 for p in steps)
    assert len({p["first_loss"] for p in steps}) == 1, steps  # the same step however split or wrapped (to the 4 digits printed)
    assert results.read_bytes() == before
