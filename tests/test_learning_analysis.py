"""The learning analyses of benchmarks/ (issue 29 item 1): failure_modes.py names each failing
image by the first constraint it breaks; tilted_optimum.py tilts base samples by a reward."""

import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
from failure_modes import first_broken

from solrl.toy.captions import parse_caption
from solrl.toy.detector import Detection


def obj(shape, color, x=16.0, y=16.0, side=10.0):
    return Detection(shape, color, x, y, side, side * side)


@pytest.mark.parametrize(
    "caption, found, verdict",
    [
        ("a green square", [obj("square", "green")], None),
        ("a green square", [obj("square", "green"), obj("square", "green", x=40)], "extra objects"),
        ("two triangles", [obj("triangle", "red")], "missing objects"),
        ("a green square", [obj(None, None)], "unrecognised"),
        ("a green square", [obj("circle", "green")], "wrong shape"),
        ("a green square", [obj("square", "blue")], "wrong colour"),
        ("a triangle left of a square", [obj("triangle", "red", x=40), obj("square", "blue", x=8)], "relation"),
        ("a triangle left of a square", [obj("triangle", "red", x=8), obj("square", "blue", x=40)], None),
    ],
)
def test_first_broken_names_the_first_constraint_an_image_breaks(caption, found, verdict):
    assert first_broken(parse_caption(caption), found) == verdict


def test_the_tilt_reads_the_base_at_zero_and_closes_the_gap_it_is_asked_to():
    """benchmarks/tilted_optimum.py on made-up samples of two captions: lambda 0 is the base itself
    (no KL); tilting by the preference closes 40 % of the best-of-32 gap, and where the bigger seeds
    are the failing ones, that costs accuracy, which tilting by a gated reward does not."""
    from tilted_optimum import at_gaps, tilted

    rng = np.random.default_rng(0)
    preference = rng.uniform(0, 1, size=(2, 64))
    passed = (preference < 0.8).astype(float)  # the biggest fail, as merged objects do
    measures = {"preference": preference, "passed": passed, "score": passed}
    tasks = ["colors", "counting"]
    pref, acc, kl = tilted(measures, preference, 0.0, tasks)
    assert (pref, acc, kl) == pytest.approx((preference.mean(axis=1).mean(), passed.mean(axis=1).mean(), 0.0))
    size_only = at_gaps(measures, preference, tasks)
    gated = at_gaps(measures, 0.5 * passed + 0.5 * preference * passed, tasks)
    assert size_only[0.4][0] < -0.05 and size_only[0.4][1] > 0
    assert gated[0.4][0] > 0  # the gate pays only passing seeds: accuracy rises


def test_the_second_halfs_trend_reads_each_captions_slope_and_ignores_the_first_half():
    """benchmarks/learning_curve.py's drift trend on made-up evals of 160 iterations: every caption
    rising by 0.1 over the first half then falling by 0.05 per 100 iterations reads -0.05 with no
    spread; a caption that alternates 0/1 from point to point has a slope of zero but widens the
    standard error."""
    from learning_curve import late_trend

    captions = ["a red circle", "a blue square", "a green triangle", "a red square"]  # one task: a plain mean over captions
    iterations = [0, 40, 80, 120, 160]

    def ev(acc: dict) -> dict:
        return {"per_caption": acc}

    falling = [(it, 0.0, ev({c: 0.5 + (0.1 * it / 80 if it <= 80 else 0.1 - 0.05 * (it - 80) / 100) for c in captions})) for it in iterations]
    assert late_trend(falling) == (-0.05, 0.0, 3)
    mixed = [(it, 0.0, ev({c: (0.5 + 0.1 * it / 160) if c != "a blue square" else float(i % 2) for c in captions})) for i, it in enumerate(iterations)]
    slope, se, n = late_trend(mixed)
    assert n == 3 and se > 0 and slope == pytest.approx(np.mean([0.0625, 0.0625, 0.0625, 0.0]), abs=0.02)


def test_the_cost_without_the_controller_leaves_out_only_the_audits_own_work(tmp_path):
    """benchmarks/learning_curve.py prices a controlled run's rows again without the audit's
    regenerations and previews (what the same run without the controller costs up to its first
    move): an unaudited row costs the same either way, an audited one less; the target's cost is
    read linearly between eval points."""
    from learning_curve import _reached, _unaudited_costs

    from solrl.config import dump_config, load_config
    from solrl.cost import CostMeter

    config = load_config(overrides=["rollout.precision_control={}"])
    (tmp_path / "config.yaml").write_text(dump_config(config))
    plain = {"regenerated": 64, "candidates": 256, "audit": {"precision": "nvfp4"}}
    audited = plain | {"audit": {"precision": "nvfp4", "spearman": 0.7, "regenerated": 21, "previewed_at": {"fp8_e4m3@10": 32}}}
    costs = _unaudited_costs(tmp_path, [plain, audited])
    meter = CostMeter(config)
    one = sum(v for k, v in meter.iteration({"regenerated": 64, "candidates": 256}).items() if k != "eval")
    assert costs == pytest.approx([one, 2 * one])
    assert sum(v for k, v in meter.iteration(audited).items() if k != "eval") > one
    assert _reached([(0.0, 0.0), (10.0, 0.05), (20.0, 0.15)], 0.1) == pytest.approx(15.0) and _reached([(0.0, 0.0), (10.0, 0.05)], 0.1) is None


def test_drift_compares_the_end_with_the_eval_keep_best_chooses_on_validation(tmp_path):
    """benchmarks/learning_curve.py's drift: the held-out peak is the best of the noisy points (here
    iteration 20's lucky high), while the eval chosen by its validation reward (iteration 40) is
    compared with the end on the held-out captions, paired; the end's validation reward comes from
    eval.json's kept record, and an end that is best on validation is compared with itself."""
    import json

    from learning_curve import drift

    captions = ["a red circle", "a blue square"]

    def ev(a: float, b: float) -> dict:
        return {"accuracy": (a + b) / 2, "per_caption": dict(zip(captions, (a, b)))}

    rows = [{"iteration": i, "elapsed": float(i)} for i in range(60)]
    rows[19] |= {"eval": ev(0.9, 0.9), "validation": {"reward": 0.5}}
    rows[39] |= {"eval": ev(0.6, 0.7), "validation": {"reward": 0.8}}
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    final = {"base_eval": ev(0.5, 0.5), "final_eval": ev(0.6, 0.7), "final_eval_last": ev(0.5, 0.6), "seconds": 3.0,
             "kept": {"iteration": 40, "validation_reward": 0.8, "last_validation_reward": 0.7}}  # fmt: skip
    (tmp_path / "eval.json").write_text(json.dumps(final))
    d = drift(tmp_path)
    assert (d["peak_iteration"], d["final_minus_peak"], d["within_one_se"]) == (20, -0.35, False)
    assert (d["validation_best_iteration"], d["validation_best_change_from_base"], d["final_minus_validation_best"]) == (40, 0.15, -0.1)
    assert d["validation_best_paired_se"] == 0.0 and not d["within_one_se_of_validation_best"]
    final["kept"]["last_validation_reward"] = 0.9  # the end is the best on validation
    (tmp_path / "eval.json").write_text(json.dumps(final))
    d = drift(tmp_path)
    assert (d["validation_best_iteration"], d["final_minus_validation_best"], d["within_one_se_of_validation_best"]) == (60, 0.0, True)


def test_paired_runs_differences_each_eval_and_counts_the_rows_trained_alike(tmp_path):
    """benchmarks/paired_runs.py on two made-up runs that train alike for 30 rows and differ at the
    second eval and the end: the first eval differs by zero, the others by the per-caption mean
    difference, and the rows trained identically stop at the first differing loss."""
    import json

    from paired_runs import compare, cost_report, report

    captions = ["a red circle", "a blue square"]

    def ev(a: float, b: float) -> dict:
        return {"accuracy": (a + b) / 2, "per_caption": dict(zip(captions, (a, b)))}

    def write(run: pathlib.Path, second: dict, last: dict, split: int) -> pathlib.Path:
        run.mkdir()
        rows = [{"iteration": i, "elapsed": float(i), "loss": 1.0 if i < split else 2.0} for i in range(40)]
        rows[19] |= {"eval": ev(0.6, 0.6)}
        rows[39] |= {"eval": second}
        (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
        (run / "eval.json").write_text(json.dumps({"base_eval": ev(0.5, 0.5), "final_eval": last, "seconds": 4.0}))
        return run

    a = write(tmp_path / "x-seed-0", ev(0.8, 0.6), ev(0.9, 0.7), 30)
    b = write(tmp_path / "y-seed-0", ev(0.6, 0.6), ev(0.7, 0.7), 40)
    pair = compare(a, b)
    assert pair["identical_rows"] == 30
    assert [(p["iteration"], p["a_minus_b"]) for p in pair["points"]] == [(20, 0.0), (40, 0.1), (40, 0.1)]
    assert [p["a_change"] for p in pair["points"]] == [0.1, 0.2, 0.3]
    assert "Final A - B, mean over 1 seed(s): +0.100" in report([pair])
    # --target: the modeled cost to it, A's over B's where both reached it, mean and s.e. over seeds
    costs = [{"a": f"x-seed-{s}", "b": f"y-seed-{s}", "a_cost": a, "b_cost": 100.0} for s, a in enumerate((90.0, 120.0, None))]
    text, lines = cost_report(costs, 0.1)
    assert lines[0] == {"target_change": 0.1, "seeds_reached": 2, "a_over_b_minus_1_mean": 0.05, "a_over_b_minus_1_se": 0.15}
    assert "not reached" in text and "mean over the 2 seed(s) where both reached it: +5.0% ± 15.0%" in text


def test_late_ends_ranks_each_end_among_its_late_points_and_draws_the_permutation_null(tmp_path):
    """benchmarks/late_ends.py on two made-up runs of 100 iterations with evals every 20: the late
    points are 60, 80 and 100 (the half-way point on); one run ends at its lowest late point and
    outside one paired s.e. of its peak, the other at its highest. The null's mean rank of two ends
    drawn at random is at most 0.5 with probability 6/9 (pairs of ranks 0, 0.5, 1 summing to 1 or less)."""
    import json

    from late_ends import permutation, standing

    captions = ["a red circle", "a blue square"]

    def ev(a: float, b: float) -> dict:
        return {"accuracy": (a + b) / 2, "per_caption": dict(zip(captions, (a, b)))}

    def write(run: pathlib.Path, evals: list[dict]) -> pathlib.Path:
        run.mkdir()
        rows = [{"iteration": i, "elapsed": float(i)} for i in range(100)]
        for k, e in enumerate(evals[:-1]):
            rows[20 * k + 19] |= {"eval": e}
        (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
        (run / "eval.json").write_text(json.dumps({"base_eval": ev(0.5, 0.5), "final_eval": evals[-1], "seconds": 1.0}))
        return run

    falls = standing(write(tmp_path / "falls", [ev(0.5, 0.5), ev(0.6, 0.6), ev(0.9, 0.7), ev(0.8, 0.75), ev(0.6, 0.6)]))
    rises = standing(write(tmp_path / "rises", [ev(0.5, 0.5), ev(0.6, 0.6), ev(0.6, 0.7), ev(0.7, 0.7), ev(0.9, 0.8)]))
    assert falls["late_iterations"] == [60, 80, 100] and falls["ranks"] == [1.0, 0.5, 0.0] and falls["within_one_se"] == [True, True, False]
    assert (falls["end_rank"], falls["end_within_one_se"], rises["end_rank"], rises["end_within_one_se"]) == (0.0, False, 1.0, True)
    test = permutation([falls, rises], draws=90_000)
    assert (test["ends_within_one_se"], test["end_mean_rank"]) == (1, 0.5)
    assert test["p_rank_as_low"] == pytest.approx(6 / 9, abs=0.01) and test["expected_within_one_se"] == pytest.approx(2 / 3 + 1 / 3, abs=0.02)
