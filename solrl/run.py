"""The run skeleton every engine shares: the run folder, the eval schedule, the log lines, the
metrics rows and the report, written once.

An engine (LocalRun in one process, the Ray Driver on worker pools) supplies only how iterations
happen: it yields one metrics row per finished iteration, evaluates the base model or one of its
adapters on request, draws sample grids, and hands over its adapter states at the end. Everything
a user reads — config.yaml, metrics.jsonl, lora/, grid.png, eval.json, report.html, the `iter ...`
lines, the Prometheus endpoint — is written here, so the two engines cannot drift apart.
"""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import torch

from solrl.config import RunConfig, dump_config
from solrl.cost import CostMeter
from solrl.evaluation import describe, run_report, write_grid
from solrl.report import write_report
from solrl.runs import save_lora

Subscriber = Callable[[dict], None]  # called with each iteration's metrics row, after it is written


class Engine(Protocol):
    """What executes a run's iterations."""

    start_iteration: int  # > 0 when the engine resumed a checkpoint

    def evaluate(self, adapter: str | None) -> dict:
        """The run's eval of the base model (None) or of its 'ema' / 'policy' adapter."""

    def grid(self, adapter: str | None):
        """The sample grid (a PIL image) of the base (None) or an adapter; None when eval.grid_rows is 0."""

    def iterate(self, stop: Callable[[], bool]) -> Iterator[dict]:
        """One metrics row per finished iteration, until train.iterations or `stop()` holds."""

    def adapter_states(self) -> dict[str, dict[str, torch.Tensor]]:
        """The trained 'policy', 'old' and 'ema' adapter states and the policy version."""

    def totals(self) -> dict:
        """Engine figures for eval.json (restarts, dropped records, ...); {} when there are none."""

    @property
    def version(self) -> int: ...


def iteration_line(row: dict, total: int) -> str:
    """The log line of one finished iteration."""
    seconds = row.get("iteration_seconds", sum(row["seconds"].values()))
    lag = f", lag {row['policy_lag']}" if "policy_lag" in row else ""
    text = (
        f"iter {row['iteration'] + 1}/{total}: bf16 reward {row['bf16_reward_mean']:.3f} "
        f"proxy {row['proxy_reward_mean']:.3f} rho {row['spearman']:.2f} loss {row['loss']:.4f} ({seconds:.1f}s{lag})"
    )
    return text + (f" eval {describe(row['eval'])}" if "eval" in row else "")


def eval_due(config: RunConfig, iteration: int) -> bool:
    """Whether the EMA is evaluated after `iteration` (0-based); the last one gets the final eval."""
    every, total = config.eval.every, config.train.iterations
    return bool(every) and (iteration + 1) % every == 0 and iteration + 1 < total


# What a resumed run may change: where and how wide it runs, and how long; not what it computes.
RESUMABLE = ("cluster.", "train.iterations", "train.max_seconds")


class RunFolderError(ValueError):
    """A run folder that cannot be written or resumed as asked; the message says what to do."""


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_changes(saved: dict, config: RunConfig) -> dict[str, tuple]:
    """Fields whose value differs between a checkpoint's config and `config`, except RESUMABLE ones."""
    try:  # fields added since the checkpoint was written take their defaults, as the run did
        saved = RunConfig.model_validate(saved).model_dump(mode="json")
    except ValueError:
        pass  # a field since removed or renamed: compare as saved, and the difference is reported
    old, new = _flat(json.loads(json.dumps(saved))), _flat(json.loads(json.dumps(config.model_dump(mode="json"))))
    changed = {k: (old.get(k), new.get(k)) for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)}
    return {k: v for k, v in changed.items() if not k.startswith(RESUMABLE)}


def check_run_folder(out: pathlib.Path, resume: pathlib.Path | None, config: RunConfig) -> None:
    """Refuse, before anything starts or is written, a new run into a folder that holds files, and
    a resume whose checkpoint is damaged (CheckpointError) or whose config differs from `config`."""
    if resume is None:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise RunFolderError(f"--out {out} is not an empty folder; pass a new one, or --resume {out} to continue the run in it")
        return
    from solrl.learner.checkpoint import inspect_checkpoint

    folder, state = inspect_checkpoint(resume)
    changes = config_changes(state.get("config", {}), config) if "config" in state else {}
    if changes:
        shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())
        raise RunFolderError(
            f"--resume {resume}: the config differs from checkpoint {folder.name}'s in {shown}; resume with the run's own config "
            f"({resume}/config.yaml and the same --set), changing only {', '.join(RESUMABLE)}*"
        )


def run_config_file(resume: pathlib.Path) -> pathlib.Path | None:
    """The config.yaml of the run a --resume path (a run folder or one of its checkpoints) names."""
    for folder in (resume, resume.parent.parent):
        if (folder / "config.yaml").is_file() and (folder / "checkpoints").is_dir():
            return folder / "config.yaml"
    return None


def _rows_before(path: pathlib.Path, iteration: int) -> list[str]:
    """The metrics lines a resumed run keeps: those of the iterations its checkpoint holds. Later
    rows (and a line torn by a kill) belong to iterations the run redoes."""
    kept = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break
        if row["iteration"] < iteration:
            kept.append(line)
    return kept


def execute(
    engine: Engine,
    config: RunConfig,
    out: pathlib.Path,
    log: Callable[[str], None] = print,
    subscribers: Sequence[Subscriber] = (),
    resume: bool = False,
) -> dict:
    """Run `engine` through `config`'s schedule, writing the run folder `out`; returns eval.json."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(dump_config(config))
    metrics_path = out / "metrics.jsonl"
    kept = _rows_before(metrics_path, engine.start_iteration) if resume else []
    metrics_path.write_text("".join(line + "\n" for line in kept))
    cost = CostMeter(config, json.loads(kept[-1]).get("modeled_cost_total") if kept else None)
    run_start = time.perf_counter()
    base = engine.evaluate(None)
    cost.eval(base)
    log(f"base model: eval {describe(base)}")
    before = engine.grid(None)
    train_start = time.perf_counter()
    max_s = config.train.max_seconds

    def time_up() -> bool:
        return bool(max_s) and time.perf_counter() - train_start >= max_s

    iterations = engine.start_iteration
    for row in engine.iterate(time_up):
        iterations = row["iteration"] + 1
        if eval_due(config, row["iteration"]):
            row["eval"] = engine.evaluate("ema")
            cost.eval(row["eval"])
        row["modeled_cost"] = cost.iteration(row)
        row["modeled_cost_total"] = cost.totals()
        row["elapsed"] = round(time.perf_counter() - run_start, 1)
        with metrics_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        for subscriber in subscribers:
            subscriber(row)
        log(iteration_line(row, config.train.iterations))
    if iterations < config.train.iterations:
        reason = f"train.max_seconds={max_s} reached" if time_up() else "a stop was requested"
        log(f"stopping after {iterations} iterations: {reason}")
    states = engine.adapter_states()
    save_lora(out / "lora", states, config.model, engine.version)
    final = {adapter: engine.evaluate(adapter) for adapter in ("ema", "policy")}
    for result in final.values():
        cost.eval(result)
    if before is not None:
        write_grid(out / "grid.png", before, engine.grid("ema"))
    report = run_report(
        config,
        base,
        final["ema"],
        final["policy"],
        iterations=iterations,
        train_seconds=round(time.perf_counter() - train_start, 1),
        seconds=round(time.perf_counter() - run_start, 1),
        modeled_cost=cost.flush(),
        **engine.totals(),
    )
    (out / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    try:
        write_report(out)
    except Exception as exc:  # noqa: BLE001 (a drawing failure must not fail a finished run; `solrl report` redraws it)
        log(f"report.html not written ({type(exc).__name__}: {exc}); `solrl report {out}` draws it again")
    log(f"done in {report['seconds']:.0f}s: eval {describe(base)} -> {describe(final['ema'])} (EMA; policy {describe(final['policy'])})")
    return report
