"""Explore precision chosen online in the single-process run (rollout.precision_control): audits
every other iteration, moves on the audited agreement, the sentinel's skipped audits, and resumes
that decide as the uninterrupted run did."""

import pytest
from tiny_runs import TINY_RUN, rows_of

from solrl.config import load_config
from solrl.local_run import LocalRun


def test_an_audit_every_other_iteration_leaves_the_others_unaudited_and_unpriced(tmp_path):
    """rollout.precision_control.every=2 in the one-process run: iteration 1 explores at the
    controller's precision with no audit (no figures, no regenerations beyond the trained ones)."""
    prompts = tmp_path / "eval.txt"
    prompts.write_text("a red circle\n")
    control = "rollout.precision_control={floor: 0.95, recover: 0.95, patience: 1, audit: 4, every: 2}"
    config = load_config(overrides=[*TINY_RUN, "rollout.candidates=8", f"eval.prompts={prompts}", "eval.grid_rows=0", control, "train.iterations=2"])
    LocalRun(config, tmp_path / "run", log=lambda _: None).run()
    first, second = rows_of(tmp_path / "run")
    assert "spearman" in first["audit"] and first["audit"]["regenerated"] > 0 and second["audit"] | {"seconds": 0} == {"precision": first["audit"].get("switch", {}).get("to", "nvfp4"), "seconds": 0}
    assert second["modeled_cost"]["regenerate"] < first["modeled_cost"]["regenerate"]


def test_explore_precision_moves_with_the_audited_agreement_and_resumes_where_it_was(tmp_path):
    """rollout.precision_control (floor 0.95, patience 1; gain -2: any measured gain will do, so
    the tiny model moves): each row's audit holds the precision explore ran at, the audited
    Spearman, the cheaper rung's and the safer rung's paired gains; its moves are what the
    controller makes of those figures; the audit's previews and extra regenerations are priced,
    never trained; and a run resumed from its checkpoint explores at the precision it had reached,
    with the same figures."""
    from solrl.cost import calls_per_image
    from solrl.precision_control import PrecisionController

    prompts = tmp_path / "eval.txt"
    prompts.write_text("a red circle\n")
    # the middle rung previews in 3 steps where the explore sampler takes 2: a rung may name a step count
    control = "rollout.precision_control={ladder: [nvfp4, fp8_e4m3@3, bf16], floor: 0.95, patience: 1, recover: 0.95, recover_patience: 1, audit: 4, gain: -2}"
    sets = [*TINY_RUN, "rollout.candidates=8", f"eval.prompts={prompts}", "eval.grid_rows=0", control]
    config = load_config(overrides=[*sets, "train.iterations=5"])
    lines = []
    LocalRun(config, tmp_path / "whole", log=lines.append).run()
    rows = rows_of(tmp_path / "whole")
    replay, precision = PrecisionController(config.rollout.precision_control, "nvfp4"), "nvfp4"
    for row in rows:
        audit = row["audit"]
        assert audit["precision"] == precision == replay.precision and row["regenerated"] == 6  # 3 groups x k=2 trained, whatever was audited
        move = replay.observe(row["iteration"], audit["spearman"], audit.get("cheaper_spearman"), audit.get("safer_gains", ()))
        assert ("switch" in audit) == (move is not None) and (move is None or audit["switch"]["to"] == move.target)
        precision = move.target if move else precision
        explore, price = config.rollout.explore, lambda rung: config.cost.price(rung.split("@")[0])
        steps = {"nvfp4": calls_per_image(explore), "fp8_e4m3@3": 3, "bf16": calls_per_image(explore)}
        priced = 3 * 8 * steps[audit["precision"]] * price(audit["precision"])
        priced += sum(n * steps[rung] * price(rung) for rung, n in audit.get("previewed_at", {}).items())
        assert row["modeled_cost"]["explore"] == pytest.approx(priced, abs=1e-3)
    switches = [line for line in lines if line.startswith("explore precision ")]
    assert switches and len(switches) == sum("switch" in r["audit"] for r in rows)
    first = next(r["audit"] for r in rows if "switch" in r["audit"])  # it moved on the safer rung's measured gains
    assert first["safer"] == first["switch"]["to"] == "fp8_e4m3@3" and len(first["safer_gains"]) >= 2 and first["previewed_at"][first["safer"]] == 12
    assert (tmp_path / "whole" / "report.html").is_file() and not [line for line in lines if "report.html not written" in line]  # it draws the moves
    LocalRun(load_config(overrides=[*sets, "train.iterations=3"]), tmp_path / "split", log=lambda _: None).run()
    LocalRun(config, tmp_path / "split", log=lambda _: None).run(resume=tmp_path / "split")
    again = rows_of(tmp_path / "split")
    assert [r["audit"] | {"seconds": 0} for r in again] == [r["audit"] | {"seconds": 0} for r in rows]


def test_the_sentinel_skips_audits_while_the_selected_seeds_rank_well_and_resumes_with_its_window(tmp_path):
    """rollout.precision_control.sentinel in the one-process run (floor -1: explore stays at NVFP4):
    an iteration is audited only while the mean of the row's own `spearman` (the selected seeds',
    free) over the last two iterations is below the sentinel; the threshold is the middle of what a
    fully audited run logged, so both kinds occur. Training is that run's, and a run resumed
    after iteration 2 decides as the uninterrupted one (the window is in the checkpoint)."""
    prompts = tmp_path / "eval.txt"
    prompts.write_text("a red circle\n")
    sets = [*TINY_RUN, "rollout.candidates=8", "selection.k=4", f"eval.prompts={prompts}", "eval.grid_rows=0"]
    control = "rollout.precision_control={floor: -1.0, recover: 1.0, audit: 4, sentinel_window: 2"
    LocalRun(load_config(overrides=[*sets, control + "}", "train.iterations=6"]), tmp_path / "all", log=lambda _: None).run()
    every = rows_of(tmp_path / "all")
    free = [r["spearman"] for r in every]
    level = [sum(free[max(0, i - 1) : i + 1]) / len(free[max(0, i - 1) : i + 1]) for i in range(len(free))]
    threshold = sorted(level)[len(level) // 2]
    sets.append(control + f", sentinel: {threshold}}}")
    config = load_config(overrides=[*sets, "train.iterations=6"])
    LocalRun(config, tmp_path / "whole", log=lambda _: None).run()
    rows = rows_of(tmp_path / "whole")
    audited = ["spearman" in r["audit"] for r in rows]
    assert audited == [x < threshold for x in level] and any(audited) and not all(audited), (level, threshold)
    assert [r["audit"]["sentinel"] for r in rows] == pytest.approx(level, abs=1e-3)
    assert [r["loss"] for r in rows] == [r["loss"] for r in every]  # the audit never trains
    LocalRun(load_config(overrides=[*sets, "train.iterations=3"]), tmp_path / "split", log=lambda _: None).run()
    LocalRun(config, tmp_path / "split", log=lambda _: None).run(resume=tmp_path / "split")
    assert [r["audit"] | {"seconds": 0} for r in rows_of(tmp_path / "split")] == [r["audit"] | {"seconds": 0} for r in rows]
