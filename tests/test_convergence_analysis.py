"""benchmarks/convergence.py's analysis on run folders whose curves are known: the cost to a
target, the a/d ratio with its bootstrap interval, the paper's own definition and the plateau.
The runs are written here as solrl writes them (metrics.jsonl rows with the running modeled cost
and eval results, eval.json), so only the arithmetic is under test, not training."""

import json
import math
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import convergence


def _write_run(run: pathlib.Path, preference, costs: list[float]) -> None:
    """A run whose held-out preference is preference(cost) at each of `costs` (one eval per row)."""
    run.mkdir(parents=True)
    rows = []
    for i, cost in enumerate(costs):
        total = {"explore": cost / 4, "regenerate": cost / 4, "train": cost / 2, "eval": 1e6}  # eval cost is not training cost
        rows.append({"iteration": i, "modeled_cost_total": total, "eval": {"preference": preference(cost), "preference_se": 0.01}})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ends = {"base_eval": {"preference": preference(0.0), "preference_se": 0.01}, "final_eval": {"preference": preference(costs[-1]), "preference_se": 0.01}}
    (run / "eval.json").write_text(json.dumps(ends))


@pytest.fixture
def runs(tmp_path):
    """a rises linearly 0.4 -> 0.6 over its budget; d twice as fast, then flat; c plateaus at 0.5.
    Seed s stretches an arm's cost axis by 1 + 0.1 s, so the seeds differ."""
    for seed in range(3):
        stretch = 1 + 0.1 * seed
        budget = [stretch * c for c in (250, 500, 750, 1000)]
        _write_run(tmp_path / "a" / f"seed-{seed}", lambda c, k=stretch: 0.4 + 0.2 * min(1.0, c / (1000 * k)), budget)
        _write_run(tmp_path / "d" / f"seed-{seed}", lambda c, k=stretch: 0.4 + 0.2 * min(1.0, c / (500 * k)), budget)
        _write_run(tmp_path / "c" / f"seed-{seed}", lambda c, k=stretch: 0.4 + 0.1 * min(1.0, c / (500 * k)), budget)
    return tmp_path


def test_cost_to_reach_interpolates_and_says_never():
    points = [(0.0, 0.5, 0.0), (10.0, 0.4, 0.0), (20.0, 0.7, 0.0)]
    assert convergence.cost_to_reach(points, 0.6) == pytest.approx(10 + 10 * (0.2 / 0.3))
    assert convergence.cost_to_reach(points, 0.45) == 0.0  # the base already reaches it
    assert convergence.cost_to_reach(points, 0.8) == math.inf


def test_the_analysis_finds_the_ratio_the_curves_were_built_with(runs, tmp_path):
    body = convergence.summarize(runs, ["a", "c", "d"], 0.8, tmp_path / "curves.png")
    lines = {line.split(":")[0].lstrip("- "): line for line in body.splitlines() if line.startswith("- ")}
    # target 0.4 + 0.8 * 0.2 = 0.56: a reaches it at 800 k, d at 400 k (k = 1, 1.1, 1.2): mean 880 and 440
    assert "target 0.5600" in lines["Base preference 0.4000; target 0.5600 (80% of the best arm's final gain)."]
    ratio = lines["Cost to target, a/d"]
    assert "a/d: 2.00 (95 % bootstrap over seeds [" in ratio
    low, high = (float(x) for x in ratio.split("[")[1].rstrip("]).").split(", "))
    assert 800 / 480 <= low < 2.0 < high <= 960 / 400  # the interval lies within what resampled seeds can give
    assert "c/d: not all seeds reach it within the budget (missed: 3/3 and 0/3)" in lines["Cost to target, c/d"]
    assert "a/d: 2.00" in lines["Paper's definition (a's whole run over d's cost to a's mean final 0.6000), a/d"]  # 1100 / 550
    assert "c - d = -0.1000 (95 % bootstrap [-0.1000, -0.1000])" in lines["Plateau"]
    table = {row.split("|")[1].strip(): [c.strip() for c in row.split("|")[1:-1]] for row in body.splitlines() if row.startswith("| ") and "---" not in row}
    assert table["a"][3] == "250" and table["a"][5] == "880" and table["d"][5] == "440"  # cost per iteration and to target
    assert table["d"][7] == "1.8"  # 440 / 250: iterations to target
    assert table["c"][5] == "inf" and table["c"][8] == "0/3"
    assert (tmp_path / "curves.png").stat().st_size > 10_000


def test_the_group_size_summary_gives_a_lower_bound_where_n_equal_k_misses_the_target(tmp_path):
    """benchmarks/group_size.py on curves that rise linearly per iteration, twice as fast at N = 2K
    as at N = K (8 iterations of 10 cost units each): at half the best final gain N = K takes about
    twice the iterations; at 90 % it misses within the run, and the ratio becomes a lower bound that
    counts its seeds at the run's 8 iterations."""
    import group_size

    slopes = {8: [0.010, 0.012], 16: [0.020, 0.020]}  # preference gained per iteration, per seed
    for n, per_seed in slopes.items():
        for seed, slope in enumerate(per_seed):
            _write_run(tmp_path / f"N-{n}" / f"seed-{seed}", lambda cost, s=slope: 0.4 + s * cost / 10, [10.0 * i for i in range(1, 9)])
    text = group_size.summarize(tmp_path, [8, 16], 8, [0.5, 0.9], iterations=8)  # its JSON lines round to 4 digits
    points = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    half = {p["n"]: p for p in points if p["target_share"] == 0.5}
    assert half[16]["iterations_to_target"] == pytest.approx(4.0, abs=1e-3) and half[8]["iterations_to_target"] == pytest.approx((8.0 + 0.08 / 0.012) / 2, abs=1e-3)
    assert half[16]["fewer_iterations_than_n_eq_k"] == pytest.approx((8.0 + 0.08 / 0.012) / 2 / 4.0, abs=1e-3) and half[16]["fewer_iterations_than_n_eq_k_at_least"] is None
    high = {p["n"]: p for p in points if p["target_share"] == 0.9}
    assert high[8]["iterations_to_target"] is None and high[16]["fewer_iterations_than_n_eq_k"] is None
    # the target 0.544: N = 2K reaches it at 7.2 iterations; N = K (0.480 and 0.496 at the end) on neither seed, counted as 8
    assert high[16]["fewer_iterations_than_n_eq_k_at_least"] == pytest.approx(8.0 / 7.2, abs=1e-3)
    assert "at least 1.11" in text
