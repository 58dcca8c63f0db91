"""Explore precision chosen online on the distributed run, over the virtual clock's stand-in
workers (rollout.precision_control): moves that replay from the rows under lag, the safer rung's
measured gain, audits every other iteration, and the sentinel's skipped audits."""

import json
import shutil

import pytest
from tiny_runs import rows_of
from virtual_runs import PROMPTS, SEEDS, virtual_config

from solrl.cluster.driver import Driver
from solrl.cluster.virtual import VirtualRuntime


def test_explore_precision_moves_on_the_distributed_run_as_its_audit_says(tmp_path):
    """rollout.precision_control at lag 1 (floor 1: any swap of two audited seeds is poor; gain null:
    the floor alone moves it): each row
    waits for its audit; the moves replay exactly from the logged figures; explore tasks handed out
    after a move run at the new precision (the rows count the images explored at each, and the
    cost prices them so); a group explored before the move does not count toward the new rung's
    figure; a replacement worker starts at the precision reached; a resume continues from it."""
    from solrl.cost import CostMeter
    from solrl.precision_control import PrecisionController

    control = "rollout.precision_control={ladder: [nvfp4, fp8_e4m3, bf16], floor: 1.0, patience: 1, recover: 1.0, recover_patience: 1, audit: 16, gain: null}"
    config = virtual_config(tmp_path, "rollout.max_policy_lag=1", "train.iterations=4", control, "cluster.checkpoint_every=1",
                     f"cluster.faults={json.dumps(['rollout-0:explore:30'])}")  # fmt: skip
    lines = []
    driver = Driver(config, tmp_path / "run", log=lines.append, runtime=VirtualRuntime())
    driver.run()
    rows = rows_of(tmp_path / "run")
    audits = [r["audit"] for r in rows]
    replay, at = PrecisionController(config.rollout.precision_control, "nvfp4"), []
    for it, a in enumerate(audits):
        assert a["precision"] == replay.precision and a["regenerated"] > 0  # 16 drawn of 96, 24 selected: most regenerated for the audit only
        move = replay.observe(it, a["spearman"] if a["groups"] else float("nan"), a.get("cheaper_spearman"))
        assert (move is None) == ("switch" not in a)
        at.append(replay.precision)
    assert [a["precision"] for a in audits] == ["nvfp4", "fp8_e4m3", "fp8_e4m3", "bf16"] and at[-1] == "bf16"
    # iteration 1 was explored (lag 1) before row 0's move: its groups do not count toward fp8's figure
    assert audits[1]["explored"] == {"nvfp4": PROMPTS * SEEDS} and audits[1]["groups"] == 0 and "switch" not in audits[1]
    assert audits[2]["explored"] == {"fp8_e4m3": PROMPTS * SEEDS} and audits[2]["groups"] == PROMPTS
    assert audits[2]["cheaper"] == "nvfp4" and audits[2]["previewed_at"] == {"nvfp4": PROMPTS * 16}
    assert sum("explore precision" in line for line in lines) == 2
    # under lag 1 an iteration is explored before the row two back is out; rollout-0 died exploring iteration 2 (its
    # 30th task, after the first move) and its replacement explored at fp8, the precision reached
    assert [list(a["explored"]) for a in audits] == [["nvfp4"], ["nvfp4"], ["fp8_e4m3"], ["fp8_e4m3"]], lines
    at_line = lambda start: next(i for i, line in enumerate(lines) if line.startswith(start))
    assert at_line("explore precision nvfp4 -> fp8_e4m3") < at_line("rollout-0 died; starting") < at_line("iter 3/4"), lines
    # the cost prices each row's explore at the precisions it ran at (fp8 twice NVFP4's price by default)
    meter = CostMeter(config)
    plain = meter.iteration({"candidates": PROMPTS * SEEDS, "regenerated": rows[1]["regenerated"]})["explore"]
    assert rows[1]["modeled_cost"]["explore"] == pytest.approx(plain)
    assert rows[2]["modeled_cost"]["explore"] > rows[1]["modeled_cost"]["explore"] * config.cost.price("fp8_e4m3") / config.cost.price("nvfp4") * 0.99
    assert driver.pools["rollout"].restarts == 1 and driver.pools["rollout"].explore_rung == "bf16"
    # a resume from the checkpoint after row 2 (its move made) explores the last iteration in BF16
    states = {json.loads((c / "state.json").read_text())["iteration"]: c for c in (tmp_path / "run" / "checkpoints").glob("step-*")}
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "run", resumed)
    Driver(config, resumed, log=lambda _: None, runtime=VirtualRuntime(), resume=states[3]).run()
    again = [r["audit"] for r in rows_of(resumed)]
    assert [a["precision"] for a in again] == [a["precision"] for a in audits] and again[3]["explored"] == {"bf16": PROMPTS * SEEDS}


def test_the_distributed_controller_previews_the_safer_rung_under_lag_and_moves_on_its_measured_gain(tmp_path):
    """rollout.precision_control at lag 1 with the safer rung's check (floor 1, patience 2, gain 0:
    a move needs the safer rung measurably better, which the stand-in's less noisy FP8 previews
    are): groups selected once agreement has been poor are also previewed one rung up, the rows log
    the per-group gains, the move waits for them, and the moves replay exactly from the rows."""
    from solrl.precision_control import PrecisionController

    control = "rollout.precision_control={ladder: [nvfp4, fp8_e4m3, bf16], floor: 1.0, patience: 2, recover: 1.0, recover_patience: 9, audit: 16, gain: 0.0}"
    config = virtual_config(tmp_path, "rollout.max_policy_lag=1", "train.iterations=6", control)
    lines = []
    Driver(config, tmp_path / "run", log=lines.append, runtime=VirtualRuntime()).run()
    audits = [r["audit"] for r in rows_of(tmp_path / "run")]
    replay = PrecisionController(config.rollout.precision_control, "nvfp4")
    for it, a in enumerate(audits):
        assert a["precision"] == replay.precision
        move = replay.observe(it, a["spearman"] if a["groups"] else float("nan"), a.get("cheaper_spearman"), a.get("safer_gains", ()))
        assert (move is None) == ("switch" not in a), (it, a)
    assert "safer_gains" not in audits[0] and "safer_gains" not in audits[1]  # iteration 1 was selected before row 0 was out
    first = next(i for i, a in enumerate(audits) if "switch" in a)
    assert first == 2 and audits[1]["spearman"] < 1.0  # row 1 reached patience without gains: no move yet
    assert audits[first]["switch"]["to"] == "fp8_e4m3" and "ranks the same seeds better by" in audits[first]["switch"]["reason"], audits
    assert audits[first]["previewed_at"]["fp8_e4m3"] == PROMPTS * 16 and len(audits[first]["safer_gains"]) >= 2
    assert sum(line.startswith("explore precision ") for line in lines) == sum("switch" in a for a in audits)


def test_an_audit_every_other_iteration_skips_the_others_and_prices_only_what_it_drew(tmp_path):
    """rollout.precision_control.every=2 at lag 1 (floor 1, patience 1: every audited iteration is
    poor; gain null): iterations 1, 3, 5 are explored unaudited (no figures, no regenerations, no
    previews, priced as plain explore) and count neither way, so the moves come after the audited
    iterations 0 and 2, as a replay of the audited rows alone makes them."""
    from solrl.precision_control import PrecisionController

    control = "rollout.precision_control={ladder: [nvfp4, fp8_e4m3, bf16], floor: 1.0, patience: 1, recover: 1.0, recover_patience: 9, audit: 16, gain: null, every: 2}"
    config = virtual_config(tmp_path, "rollout.max_policy_lag=1", "train.iterations=6", control)
    Driver(config, tmp_path / "run", log=lambda _: None, runtime=VirtualRuntime()).run()
    rows = rows_of(tmp_path / "run")
    replay = PrecisionController(config.rollout.precision_control, "nvfp4")
    for it, row in enumerate(rows):
        a = row["audit"]
        assert a["precision"] == replay.precision
        if it % 2:
            assert set(a) == {"precision", "explored"}, a
            continue
        assert a["regenerated"] > 0
        move = replay.observe(it, a["spearman"] if a["groups"] else float("nan"), a.get("cheaper_spearman"), a.get("safer_gains", ()))
        assert (move is None) == ("switch" not in a), (it, a)
    assert [r["audit"].get("switch", {}).get("to") for r in rows] == ["fp8_e4m3", None, "bf16", None, None, None], [r["audit"] for r in rows]
    plain = [r["modeled_cost"]["regenerate"] for r in rows]
    assert plain[1] == plain[3] == plain[5] < min(plain[0], plain[2], plain[4])  # an unaudited iteration regenerates only what it trains


def test_the_sentinel_audits_only_the_iterations_whose_selected_seeds_ranked_poorly(tmp_path):
    """rollout.precision_control.sentinel at lag 1 (floor -1: nothing is poor, so explore stays at
    NVFP4): the audit waits for the whole iteration's regenerations, then runs only where the
    selected seeds' preview Spearman (the row's own `spearman`, free) is below the sentinel; the
    others are explored unaudited and unpriced, and training is the same as with every iteration
    audited. The threshold is the middle of the figures a fully audited run logged, so both kinds occur."""
    control = "rollout.precision_control={ladder: [nvfp4, fp8_e4m3, bf16], floor: -1.0, recover: 1.0, audit: 16, sentinel_window: 1"
    base = virtual_config(tmp_path, "rollout.max_policy_lag=1", "train.iterations=6", control + "}")
    Driver(base, tmp_path / "all", log=lambda _: None, runtime=VirtualRuntime()).run()
    every = rows_of(tmp_path / "all")
    free = [r["spearman"] for r in every]
    threshold = sorted(free)[len(free) // 2]
    config = virtual_config(tmp_path, "rollout.max_policy_lag=1", "train.iterations=6", control + f", sentinel: {threshold}}}")
    Driver(config, tmp_path / "run", log=lambda _: None, runtime=VirtualRuntime()).run()
    rows = rows_of(tmp_path / "run")
    audited = ["spearman" in r["audit"] for r in rows]
    assert audited == [f < threshold for f in free] and any(audited) and not all(audited), (free, threshold)
    for r, f, a in zip(rows, free, audited, strict=True):
        assert r["audit"]["sentinel"] == pytest.approx(f, abs=1e-3) and r["audit"]["precision"] == "nvfp4"
        assert (r["audit"].get("regenerated", 0) > 0) == a
    assert [r["spearman"] for r in rows] == free and [r["loss"] for r in rows] == [r["loss"] for r in every]  # the audit never trains
    plain = [r["modeled_cost"]["regenerate"] for r, a in zip(rows, audited, strict=True) if not a]
    assert max(plain) < min(r["modeled_cost"]["regenerate"] for r, a in zip(rows, audited, strict=True) if a)
