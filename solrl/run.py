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
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

import torch

from solrl.config import RunConfig, dump_config
from solrl.cost import CostMeter
from solrl.evaluation import describe, run_report, write_grid
from solrl.keep_best import KeepBest
from solrl.learner.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from solrl.report import write_report
from solrl.run_folder import rows_before
from solrl.runs import IterationRow, save_lora

Subscriber = Callable[[IterationRow], None]  # called with each iteration's metrics row, after it is written
Adapter = str | dict[str, torch.Tensor] | None  # an adapter's name, an adapter state, or None: the base model


class Engine(Protocol):
    """What executes a run's iterations."""

    start_iteration: int  # > 0 when the engine resumed a checkpoint

    def evaluate(self, adapter: Adapter, validation: bool = False) -> dict:
        """The run's eval of the base model (None), its 'ema' / 'policy' adapter, or an adapter
        state; on the eval.validation prompts with `validation`."""

    def grid(self, adapter: Adapter):
        """The sample grid (a PIL image) of the base (None) or an adapter; None when eval.grid_rows is 0."""

    def iterate(self, stop: Callable[[], bool]) -> Iterator[IterationRow]:
        """One metrics row per finished iteration, until train.iterations or `stop()` holds; a row
        after which eval_due() holds carries the EMA's eval under "eval", and when the run keeps
        its best (config.keeps_best) the EMA's eval on the validation prompts under "validation"."""

    def evaluated_states(self) -> tuple[dict[str, dict[str, torch.Tensor]], int]:
        """The 'policy', 'old' and 'ema' adapter states the newest row's periodic eval measured, and
        their policy version."""

    def adapter_states(self) -> dict[str, dict[str, torch.Tensor]]:
        """The trained 'policy', 'old' and 'ema' adapter states and the policy version."""

    def totals(self) -> dict:
        """Engine figures for eval.json (restarts, dropped records, ...); {} when there are none."""

    def checkpoint_state(self, iteration: int) -> tuple[dict[str, torch.Tensor], dict]:
        """What resumes the run after `iteration` (whose row was just written): the learner's
        tensors (solrl.learner.trainer_state) and the engine's own state: "step", the policy
        version they are at, and e.g. the prompt order before the next iteration's groups."""

    def restore(self, tensors: dict[str, torch.Tensor], state: dict) -> None:
        """Continue from a checkpoint's tensors and state (its step, iteration and engine state):
        start_iteration and version follow it."""

    def checkpoint_wanted(self) -> bool:
        """Whether a checkpoint was asked for now (a control request, a stop), schedule aside."""

    def checkpointed(self, path: pathlib.Path, iteration: int) -> None:
        """A checkpoint resuming at `iteration` was written to `path`."""

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
    text += f" eval {describe(row['eval'])}" if "eval" in row else ""
    return text + (f", validation reward {row['validation']['reward']:.4f}" if "validation" in row else "")


def eval_due(config: RunConfig, iteration: int) -> bool:
    """Whether the EMA is evaluated after `iteration` (0-based); the last one gets the final eval."""
    every, total = config.eval.every, config.train.iterations
    return bool(every) and (iteration + 1) % every == 0 and iteration + 1 < total


def checkpoint_due(config: RunConfig, iteration: int) -> bool:
    """Whether cluster.checkpoint_every asks for a checkpoint after `iteration` (0-based)."""
    every = config.cluster.checkpoint_every
    return bool(every) and (iteration + 1) % every == 0


class Checkpoints:
    """A run's checkpoints (solrl.learner.checkpoint): after every cluster.checkpoint_every
    iterations, when the engine asks for one, and when the run stops early; and the resume.

    The engine hands over the state at once; the files are written and hashed on a thread, so the
    engine goes on scheduling meanwhile, and the thread tells the engine (checkpointed) once they
    are whole on disk. One is written at a time."""

    def __init__(self, engine: Engine, config: RunConfig, out: pathlib.Path, kept: KeepBest):
        self.engine, self.config, self.out, self.kept = engine, config, out, kept
        self.last = -1  # the iteration the newest checkpoint resumes at
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="checkpoint")
        self.writing: Future | None = None

    def after(self, iteration: int) -> None:
        """Write one after `iteration` if it is due, or asked for while none is being written
        (and something was trained)."""
        if self.writing is not None and self.writing.done():
            self.wait()  # raises what the write raised
        wanted = self.writing is None and self.engine.checkpoint_wanted()
        if self.engine.version > 0 and (checkpoint_due(self.config, iteration) or wanted):
            self.write(iteration)

    def write(self, iteration: int) -> None:
        tensors, state = self.engine.checkpoint_state(iteration)
        step = state.pop("step")
        tensors = tensors | self.kept.tensors()
        state = state | {"iteration": iteration + 1, "rng": rng_state(), "config": json.loads(json.dumps(self.config.model_dump(mode="json"))), "kept": self.kept.state()}
        self.wait()

        def save() -> None:
            self.engine.checkpointed(save_checkpoint(self.out, step, tensors, state), iteration + 1)

        self.writing, self.last = self.writer.submit(save), iteration + 1

    def wait(self) -> None:
        """Until the checkpoint being written is on disk (raising what its write raised)."""
        if self.writing is not None:
            writing, self.writing = self.writing, None
            writing.result()

    def resume(self, path: pathlib.Path, log: Callable[[str], None]) -> None:
        tensors, state = load_checkpoint(path)
        log(f"resuming from step {state['step']} (iteration {state['iteration']})")
        set_rng_state(state["rng"])
        self.engine.restore(self.kept.restore(tensors, state.get("kept")), state)
        self.last = state["iteration"]


def execute(
    engine: Engine,
    config: RunConfig,
    out: pathlib.Path,
    log: Callable[[str], None] = print,
    subscribers: Sequence[Subscriber] = (),
    resume: pathlib.Path | None = None,
) -> dict:
    """Run `engine` through `config`'s schedule, writing the run folder `out` (continuing the run
    from the checkpoint `resume` names, when given); returns eval.json."""
    out.mkdir(parents=True, exist_ok=True)
    kept = KeepBest(config.keeps_best, log)
    checkpoints = Checkpoints(engine, config, out, kept)
    if resume is not None:
        checkpoints.resume(pathlib.Path(resume), log)
    (out / "config.yaml").write_text(dump_config(config))
    metrics_path = out / "metrics.jsonl"
    rows = rows_before(metrics_path, engine.start_iteration) if resume else []
    metrics_path.write_text("".join(line + "\n" for line in rows))
    cost = CostMeter(config, json.loads(rows[-1]).get("modeled_cost_total") if rows else None)
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
        for figures in (row[k] for k in ("eval", "validation") if k in row):
            cost.eval(figures)
        row["modeled_cost"] = cost.iteration(row)
        row["modeled_cost_total"] = cost.totals()
        row["elapsed"] = round(time.perf_counter() - run_start, 1)
        with metrics_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        for subscriber in subscribers:
            subscriber(row)
        log(iteration_line(row, config.train.iterations))
        if "validation" in row:  # before the checkpoint after this row, which carries the best so far
            kept.offer(row["iteration"], row["validation"], engine.evaluated_states)
        checkpoints.after(row["iteration"])
    if iterations < config.train.iterations and engine.version > 0 and checkpoints.last < iterations:
        checkpoints.write(iterations - 1)  # stopped early: a resume continues from here
    checkpoints.wait()
    if iterations < config.train.iterations:
        reason = f"train.max_seconds={max_s} reached" if time_up() else "a stop was requested"
        log(f"stopping after {iterations} iterations: {reason}")
    final, extra = finish(engine, config, out, kept, iterations, cost)
    if before is not None:
        write_grid(out / "grid.png", before, engine.grid(kept.best.states["ema"] if kept.best else "ema"))
    report = run_report(
        config,
        base,
        final["ema"],
        final["policy"],
        iterations=iterations,
        train_seconds=round(time.perf_counter() - train_start, 1),
        seconds=round(time.perf_counter() - run_start, 1),
        modeled_cost=cost.flush(),
        **extra,
        **engine.totals(),
    )
    (out / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    try:
        write_report(out)
    except Exception as exc:  # noqa: BLE001 (a drawing failure must not fail a finished run; `solrl report` redraws it)
        log(f"report.html not written ({type(exc).__name__}: {exc}); `solrl report {out}` draws it again")
    which = f"kept EMA, {kept.best.describe()}" if kept.best else "EMA"
    log(f"done in {report['seconds']:.0f}s: eval {describe(base)} -> {describe(final['ema'])} ({which}; policy {describe(final['policy'])})")
    return report


def finish(engine: Engine, config: RunConfig, out: pathlib.Path, kept: KeepBest, iterations: int, cost: CostMeter) -> tuple[dict, dict]:
    """lora/ and the final evals: ({'ema', 'policy'} held-out evals of the adapters lora/ holds,
    eval.json's extra fields). With train.keep_best the last adapters are judged on the validation
    prompts too; lora/ gets the best of all and lora/last/ the last."""
    states, extra = engine.adapter_states(), {}
    if kept.on:
        validation = engine.evaluate("ema", validation=True)
        cost.eval(validation)
        last_is_best = kept.offer(iterations - 1, validation, lambda: (states, engine.version))
        best = kept.best
        save_lora(out / "lora" / "last", states, config.model, engine.version)
        save_lora(out / "lora", best.states, config.model, best.version, kept={"iteration": best.iteration + 1, "validation_reward": best.reward})
        final = {adapter: engine.evaluate(adapter if last_is_best else best.states[adapter]) for adapter in ("ema", "policy")}
        extra["kept"] = {"iteration": best.iteration + 1, "validation_reward": best.reward, "last_validation_reward": validation["reward"]}
        if not last_is_best:
            extra["final_eval_last"] = engine.evaluate("ema")
    else:
        save_lora(out / "lora", states, config.model, engine.version)
        final = {adapter: engine.evaluate(adapter) for adapter in ("ema", "policy")}
    for result in [*final.values(), *([extra["final_eval_last"]] if "final_eval_last" in extra else [])]:
        cost.eval(result)
    return final, extra
