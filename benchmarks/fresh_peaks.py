"""A run's held-out peak and its end, measured again on seeds the run never evaluated (issue 29 bar 3).

Every eval point of a run's curve draws the same eval.n seeds per held-out caption (eval.seed),
and the peak is the highest of those points, so on a curve that has stopped rising the end falls
short of the peak by chance alone (benchmarks/late_ends.py). Measured again on fresh seeds, the
peak's adapters carry no selection: if the end is really lower, it is lower there too; if the peak
was the luckiest of several noisy points, the difference shrinks towards zero.

For each run it takes the peak's evaluation EMA from
- RUN/lora/, where train.keep_best (choosing on validation captions) kept the held-out peak's eval;
- else RERUN/lora/last/, a run of the same settings and seed stopped at the peak's iteration found
  under --reruns (same folder name), which must have retraced the run: its recorded eval there
  equals the run's (every caption's accuracy, and the score and preference as recorded);
and the end's from RUN/lora/last/ (RUN/lora/ when the end was kept). Both are checked against the
run's recorded evals (the peak's adapters must give the peak's figures), then the base, the peak
and the end are evaluated on the held-out captions with --n seeds each drawn from --seed, and
end - peak is set beside the same difference on the run's own eval seeds, with paired s.e.s
(the same captions and seeds). A run whose peak's adapters are nowhere is skipped, and says so.

    python benchmarks/fresh_peaks.py RUN... [--reruns DIR] [--seed 4321] [--n 32] [--results]

A rerun of a shapes run stops at its peak with the run's own command plus train.iterations=PEAK
(a constant learning rate only: a schedule depends on train.iterations), on one torch thread where
the run had one (benchmarks/strict_runs.py --jobs > 1).
"""

from __future__ import annotations

import argparse
import json
import pathlib

from common import publish, with_json_lines
from learning_curve import _points

from solrl.builders import build_policy
from solrl.config import load_config
from solrl.evaluation import eval_copy, evaluate_run
from solrl.rewards.registry import build_reward
from solrl.runs import load_lora
from solrl.toy_app.evaluate import accuracy_change


def _recorded(run: pathlib.Path) -> tuple[int, dict, int, dict]:
    """(peak iteration, its recorded eval, end iteration, its recorded eval) on the run's own seeds."""
    points = _points(run)
    peak_at, _, peak = max(points[1:], key=lambda p: p[2]["accuracy"])
    end_at, _, end = points[-1]
    return peak_at, peak, end_at, end


def same_eval(a: dict, b: dict) -> bool:
    """Whether two evals of one plan gave the same figures: each caption's accuracy, and the
    continuous means (score, preference) that a different adapter moves even where no caption's
    accuracy changes."""
    return all(a.get(k) == b.get(k) for k in ("per_caption", "score", "preference"))


def adapter_folders(run: pathlib.Path, reruns: pathlib.Path | None) -> tuple[pathlib.Path, pathlib.Path] | str:
    """The folders holding the peak's and the end's adapters, or why the peak's are not at hand."""
    peak_at, peak, end_at, end = _recorded(run)
    final = json.loads((run / "eval.json").read_text())
    kept_at = final["kept"]["iteration"] if "kept" in final else end_at
    end_folder = run / "lora" / "last" if kept_at != end_at else run / "lora"
    if kept_at == peak_at:
        return run / "lora", end_folder
    rerun = reruns / run.name if reruns is not None else None
    if rerun is None or not (rerun / "eval.json").is_file():
        return f"the peak (iteration {peak_at}) was not kept: rerun it with train.iterations={peak_at} into --reruns"
    _, _, rerun_end_at, rerun_end = _recorded(rerun)
    if rerun_end_at != peak_at or not same_eval(rerun_end, peak):
        return f"{rerun} did not retrace the run to its peak (iteration {peak_at}; it ended at {rerun_end_at} with other figures)"
    return rerun / "lora" / "last" if (rerun / "lora" / "last").is_dir() else rerun / "lora", end_folder


class Evaluator:
    """Evaluates EMA adapters of runs on the shapes model, at a chosen eval seed and n; the base's
    figures are computed once per distinct config."""

    def __init__(self, seed: int | None = None, n: int | None = None):
        self.seed, self.n = seed, n
        self.bases: dict[str, dict] = {}

    def config(self, run: pathlib.Path):
        sets = ([f"eval.seed={self.seed}"] if self.seed is not None else []) + ([f"eval.n={self.n}"] if self.n is not None else [])
        return load_config(run / "config.yaml", overrides=sets)

    def __call__(self, run: pathlib.Path, folders: list[pathlib.Path | None]) -> list[dict]:
        """The run's eval (at this seed and n) of each folder's EMA adapter (None: the base)."""
        config = self.config(run)
        policy, reward = build_policy(config.model), build_reward(config.reward)
        dumped = config.model_dump(mode="json")
        key = json.dumps({k: dumped[k] for k in ("model", "eval", "reward")}, sort_keys=True)
        out = []
        for folder in folders:
            if folder is None and key in self.bases:
                out.append(self.bases[key])
                continue
            state = load_lora(folder, "ema")[0] if folder is not None else None
            result = evaluate_run(config, eval_copy(policy, config, state), reward)
            if folder is None:
                self.bases[key] = result
            out.append(result)
        return out


def measure(run: pathlib.Path, reruns: pathlib.Path | None, evaluator: Evaluator) -> dict:
    """One run's row: end - peak on its own eval seeds (as recorded) and on fresh ones."""
    peak_at, peak, end_at, end = _recorded(run)
    own, own_base = accuracy_change(peak, end), _points(run)[0][2]
    row = {"run": run.name, "peak_iteration": peak_at, "end_iteration": end_at, "own_base_accuracy": own_base["accuracy"], "own_end_minus_peak": own[0], "own_paired_se": own[1]}
    folders = adapter_folders(run, reruns)
    if isinstance(folders, str):
        return row | {"skipped": folders}
    own_peak, own_end = Evaluator()(run, list(folders))  # the adapters must give the figures the run recorded
    for name, folder, got, want in (("peak", folders[0], own_peak, peak), ("end", folders[1], own_end, end)):
        if not same_eval(got, want):
            raise RuntimeError(f"{run}: the {name}'s adapters in {folder} do not give the {name}'s recorded eval")
    base, fresh_peak, fresh_end = evaluator(run, [None, *folders])
    change, se = accuracy_change(fresh_peak, fresh_end)
    return row | {
        "peak_from": str(folders[0]), "fresh_seed": fresh_end["seed"], "fresh_n": fresh_end["n"], "fresh_base_accuracy": base["accuracy"],
        "fresh_peak_change_from_base": accuracy_change(base, fresh_peak)[0], "fresh_end_change_from_base": accuracy_change(base, fresh_end)[0],
        "fresh_end_minus_peak": change, "fresh_paired_se": se, "fresh_within_one_se": bool(-change <= se), "own_within_one_se": bool(-own[0] <= own[1]),
    }  # fmt: skip


def report(rows: list[dict]) -> str:
    headers = ["run", "peak at", "end at", "own seeds: end - peak (paired s.e.)", "within one s.e.", "fresh seeds: base accuracy", "base -> peak", "base -> end",
               "end - peak (paired s.e.)", "within one s.e."]  # fmt: skip
    lines = []
    for r in rows:
        own = [r["run"], r["peak_iteration"], r["end_iteration"], f"{r['own_end_minus_peak']:+.3f} ± {r['own_paired_se']:.3f}"]
        if "skipped" in r:
            lines.append([*own, "-", f"skipped: {r['skipped']}", "-", "-", "-", "-"])
            continue
        lines.append([*own, "yes" if r["own_within_one_se"] else "no", f"{r['fresh_base_accuracy']:.3f} (own seeds: {r['own_base_accuracy']:.3f})", f"{r['fresh_peak_change_from_base']:+.3f}", f"{r['fresh_end_change_from_base']:+.3f}",
                      f"{r['fresh_end_minus_peak']:+.3f} ± {r['fresh_paired_se']:.3f}", "yes" if r["fresh_within_one_se"] else "no"])  # fmt: skip
    return with_json_lines(headers, lines, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=pathlib.Path)
    parser.add_argument("--reruns", type=pathlib.Path, help="folder of runs stopped at their original's peak (same folder names)")
    parser.add_argument("--seed", type=int, default=4321, help="eval.seed of the fresh evals (the runs' own: 1234)")
    parser.add_argument("--n", type=int, default=32, help="seeds per held-out caption in the fresh evals")
    parser.add_argument("--results", action="store_true", help="append the entry to RESULTS.md")
    args = parser.parse_args()
    evaluator = Evaluator(args.seed, args.n)
    rows = [measure(run, args.reruns, evaluator) for run in args.runs]
    notes = (f"fresh = the held-out captions with {args.n} seeds each from eval.seed {args.seed}, on each adapter's evaluation EMA; own seeds = "
             "the run's recorded evals; paired s.e. over captions, task-stratified (solrl.toy_app.evaluate.accuracy_change)")  # fmt: skip
    publish(f"Peaks and ends on fresh seeds: {len(rows)} runs", report(rows), args.results, notes)


if __name__ == "__main__":
    main()
