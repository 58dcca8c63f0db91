"""Shared by every benchmark: timing, a markdown table, and the RESULTS.md entry
(date, machine, command) each run appends."""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import torch

RESULTS = pathlib.Path(__file__).with_name("RESULTS.md")


def median_seconds(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of fn() over `repeats` runs, after `warmup` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine() -> str:
    """CPU model, cores, torch build and GPU (if any), in one line."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}, Python {platform.python_version()}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def with_json_lines(headers: Sequence[str], rows: list[list], points: list[dict], digits: int = 4) -> str:
    """A markdown table, then one JSON line a measured point (floats rounded to `digits`)."""
    lines = (json.dumps({k: round(v, digits) if isinstance(v, float) else v for k, v in p.items()}) for p in points)
    return table(headers, rows) + "\n\n" + "\n".join(lines)


def append_results(title: str, body: str, notes: str = "") -> None:
    """Print `body` and append it to RESULTS.md under a dated heading with machine and command."""
    threads = os.environ.get("OMP_NUM_THREADS")
    command = (f"OMP_NUM_THREADS={threads} " if threads else "") + "python " + " ".join(shlex.quote(a) for a in sys.argv)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    entry = f"\n## {title} ({stamp})\n\n- machine: {machine()}\n- command: `{command}`\n"
    if notes:
        entry += f"- notes: {notes}\n"
    entry += f"\n{body}\n"
    print(entry)
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nEach entry is appended by the benchmark script that produced it.\n")
    with RESULTS.open("a") as f:
        f.write(entry)


def publish(title: str, body: str, results: bool, notes: str = "") -> None:
    """Append the entry to RESULTS.md (`results`: a script's --results), else only print its body."""
    if results:
        append_results(title, body, notes)
    else:
        print(body)
