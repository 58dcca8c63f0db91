"""The online explore-precision controller (solrl.precision_control): its moves along the ladder
with patience and hysteresis, the audit's seed draw, and the agreement figure."""

import json
import math

import pytest

from solrl.config import ConfigError, load_config
from solrl.cost import CostMeter
from solrl.explore_audit import with_explore_rung
from solrl.precision_control import PrecisionControl, PrecisionController, audit_agreement, audit_seeds, paired_gains, rung_parts


def Control(**settings) -> PrecisionControl:
    """A control on a ladder of plain precisions, whose rungs the rule's tests name."""
    return PrecisionControl(ladder=["nvfp4", "fp8_e4m3", "bf16"], **settings)


def test_poor_agreement_moves_explore_safer_after_patience_and_back_with_hysteresis():
    c = PrecisionController(Control(floor=0.5, patience=2, recover=0.8, recover_patience=2, gain=None), "nvfp4")
    assert c.precision == "nvfp4" and c.cheaper is None
    assert c.observe(0, 0.4) is None  # one poor iteration is not enough
    assert c.observe(1, 0.6) is None  # a good one resets the streak
    assert c.observe(2, 0.3) is None
    move = c.observe(3, 0.2)
    assert (move.source, move.target, move.iteration) == ("nvfp4", "fp8_e4m3", 3) and "below floor 0.5 for 2 iterations" in move.reason
    assert c.cheaper == "nvfp4"
    assert c.observe(4, 0.9, cheaper_agreement=0.7) is None  # above floor, below recover: no move back
    assert c.observe(5, 0.9, cheaper_agreement=0.85) is None
    back = c.observe(6, 0.9, cheaper_agreement=0.9)
    assert (back.source, back.target) == ("fp8_e4m3", "nvfp4") and "nvfp4's audited Spearman at or above 0.8 for 2" in back.reason


def test_the_ladder_ends_and_undefined_figures_count_neither_way():
    c = PrecisionController(PrecisionControl(ladder=["nvfp4", "bf16"], patience=1, gain=None), "nvfp4")
    assert c.observe(0, math.nan) is None and c.poor == 0
    assert c.observe(1, 0.0).target == "bf16"
    assert c.observe(2, -1.0) is None  # no safer rung
    state = c.state()
    again = PrecisionController(PrecisionControl(ladder=["nvfp4", "bf16"], patience=1, gain=None), "nvfp4")
    again.load_state(state)
    assert again.precision == "bf16" and again.state() == state


def test_a_move_safer_waits_until_the_safer_rung_ranks_the_same_seeds_measurably_better():
    """The safer rung is previewed once a move may be near (from the (patience-1)th poor iteration);
    the move needs the lower end of its paired gain (mean - 2 s.e. over the streak's groups) at or
    above `gain`; the evidence is the current streak's only, and survives a checkpoint."""
    c = PrecisionController(Control(floor=0.5, patience=3), "nvfp4")
    assert c.probes("nvfp4") == ()  # agreement not poor yet: nothing previewed
    assert c.observe(0, 0.2) is None and c.probes("nvfp4") == ()
    assert c.observe(1, 0.2) is None and c.probes("nvfp4") == ("fp8_e4m3",)  # the next iteration may move
    assert c.observe(2, 0.1, safer_gains=[0.9, -0.8, 0.4, 0.0]) is None  # poor for 3, but no better within the noise
    assert c.observe(3, 0.9, safer_gains=[0.5, 0.6]) is None and c.gains == [] and c.probes("nvfp4") == ()  # a good one resets both
    for it in (4, 5):
        assert c.observe(it, 0.3) is None
    assert c.observe(6, 0.3, safer_gains=[0.9, -0.6]) is None  # patience reached; mean 0.15 +- 0.75: not measurably better
    state = c.state()
    resumed = PrecisionController(Control(floor=0.5, patience=3), "nvfp4")
    resumed.load_state(state)
    move = resumed.observe(7, 0.3, safer_gains=[0.6, 0.7, 0.5, 0.6, 0.7, 0.6])  # the streak's 8 groups: 0.50 +- 0.16
    assert (move.source, move.target) == ("nvfp4", "fp8_e4m3") and "fp8_e4m3 ranks the same seeds better by 0.500 ± 0.163 (8 groups)" in move.reason
    assert resumed.gains == [] and resumed.probes("fp8_e4m3") == ("nvfp4",) and resumed.probes("nvfp4") == ()
    strict = PrecisionController(Control(floor=0.5, patience=3, gain=0.2), "nvfp4")
    strict.load_state(state)
    assert strict.observe(7, 0.3, safer_gains=[0.6, 0.7, 0.5, 0.6, 0.7, 0.6]) is None  # lower end 0.17 < 0.2
    top = PrecisionController(PrecisionControl(ladder=["nvfp4", "bf16"], patience=1), "bf16")
    assert top.probes("bf16") == ("nvfp4",) and top.observe(0, 0.0) is None and top.probes("bf16") == ("nvfp4",)  # nothing safer to preview


def test_gains_of_exactly_zero_are_no_gain():
    """Two groups that the safer rung ranks exactly as the current one did: mean 0 with no spread,
    which must not pass as measurably better (it once did, with >=)."""
    c = PrecisionController(Control(patience=1), "nvfp4")
    assert c.observe(0, 0.2) is None and c.observe(1, 0.2, safer_gains=[0.0, 0.0]) is None and c.precision == "nvfp4"
    assert c.observe(2, 0.2, safer_gains=[0.6, 0.7, 0.65, 0.6]).target == "fp8_e4m3"  # the streak's six gains: 0.425 ± 0.135


def test_a_running_mean_of_audits_catches_a_sustained_fall_that_no_streak_of_single_audits_shows():
    """Sparse, noisy audits around 0.45 (below a 0.5 floor) never fall below it three times in a row;
    their running mean over three audits does, and the move still waits for the safer rung's gain.
    The window survives a checkpoint and starts afresh at the new rung."""
    noisy = [0.45, 0.55, 0.35, 0.52, 0.40, 0.51, 0.42]
    single = PrecisionController(Control(patience=3, gain=None), "nvfp4")
    assert [single.observe(i, a) for i, a in enumerate(noisy)] == [None] * len(noisy)
    windowed = PrecisionController(Control(patience=2, window=3), "nvfp4")
    assert windowed.observe(0, 0.45) is None and windowed.poor == 1  # the mean of what there is so far
    assert windowed.observe(1, 0.55) is None and windowed.poor == 0  # mean 0.50: not below
    assert windowed.observe(2, 0.35) is None and windowed.poor == 1 and windowed.probes("nvfp4") == ("fp8_e4m3",)
    assert windowed.observe(3, 0.52, safer_gains=[0.3, -0.3]) is None  # mean 0.473, poor for 2; no measurable gain yet
    state = windowed.state()
    assert state["recent"] == [0.55, 0.35, 0.52]
    resumed = PrecisionController(Control(patience=2, window=3), "nvfp4")
    resumed.load_state(state)
    move = resumed.observe(4, 0.40, safer_gains=[0.5, 0.6, 0.4, 0.5])
    assert move.target == "fp8_e4m3" and "mean of the last 3 audits 0.423" in move.reason
    assert resumed.recent == [] and resumed.recent_cheaper == []
    assert resumed.observe(5, 0.9, cheaper_agreement=0.4) is None and resumed.recent_cheaper == [0.4]
    with pytest.raises(ValueError, match="window"):
        PrecisionControl(window=0)


def test_paired_gains_compare_the_same_seeds_against_the_same_truth():
    truth = [[1, 2, 3, 4], [1, 2, 3, 4], [1, 1, 1, 1]]
    current = [[4, 3, 2, 1], [1, 2, 3, 4], [1, 2, 3, 4]]
    safer = [[1, 2, 3, 4], [1, 2, 4, 3], [1, 2, 3, 4]]
    assert paired_gains(current, safer, truth) == [2.0, -0.2]  # the tied group has no figure


def test_settings_that_cannot_work_are_refused_by_name():
    with pytest.raises(ValueError, match="recover=0.3 is below floor=0.5"):
        Control(floor=0.5, recover=0.3)
    with pytest.raises(ValueError, match="needs distinct precisions"):
        PrecisionControl(ladder=["nvfp4", "nvfp4"])
    with pytest.raises(ValueError, match="rollout.explore_precision='fp32' is not on rollout.precision_control.ladder"):
        PrecisionController(Control(), "fp32")
    with pytest.raises(ValueError, match="rung 'fp8@ten'; write a precision, or one at a step count"):
        PrecisionControl(ladder=["nvfp4", "fp8@ten"])
    with pytest.raises(ConfigError, match="rung 'fp4@10', whose precision is not one of"):
        load_config(overrides=["rollout.precision_control={ladder: [nvfp4, fp4@10]}"])
    with pytest.raises(ConfigError, match="rollout.explore_precision='bf16' is not on rollout.precision_control.ladder"):
        load_config(overrides=["rollout.explore_precision=bf16", "rollout.precision_control={ladder: [nvfp4, bf16@10]}"])


def test_a_rung_is_a_precision_or_one_at_a_step_count():
    assert rung_parts("nvfp4") == ("nvfp4", None) and rung_parts("fp8_e4m3@10") == ("fp8_e4m3", 10)
    config = load_config(overrides=["rollout.precision_control={ladder: [nvfp4, fp8_e4m3@10, bf16@10]}"])
    at = with_explore_rung(config, "fp8_e4m3@10").rollout
    assert (at.explore_precision, at.explore.steps) == ("fp8_e4m3", 10)
    back = with_explore_rung(config, "nvfp4").rollout  # a plain rung keeps the explore sampler's own steps
    assert (back.explore_precision, back.explore.steps) == ("nvfp4", config.rollout.explore.steps)
    meter = CostMeter(config)
    assert meter.explore_price("fp8_e4m3@10", 3) == 3 * 10 * config.cost.price("fp8_e4m3")
    assert meter.explore_price("nvfp4", 3) == 3 * config.rollout.explore.steps * config.cost.price("nvfp4")


def test_the_default_ladder_previews_its_safer_rungs_at_the_regenerations_step_count():
    """'@regen' is written out when the config loads, so the run's config.yaml, rows and metric
    labels name the step count, and a resumed run reads the same ladder."""
    default = load_config(overrides=["rollout.precision_control={}"]).rollout.precision_control
    assert default.ladder == ["nvfp4", "fp8_e4m3@10", "bf16@10"]
    longer = load_config(overrides=["rollout.precision_control={ladder: [nvfp4, bf16@regen]}", "rollout.regenerate.steps=14"])
    assert longer.rollout.precision_control.ladder == ["nvfp4", "bf16@14"]
    assert load_config(overrides=[f"rollout.precision_control={{ladder: {longer.rollout.precision_control.ladder}}}"]).rollout.precision_control.ladder == ["nvfp4", "bf16@14"]
    with pytest.raises(ConfigError, match="names a rung twice once '@regen' is written out"):
        load_config(overrides=["rollout.precision_control={ladder: [nvfp4, bf16@10, bf16@regen]}"])
    with pytest.raises(ConfigError, match="rung 'bf16@regenerate'"):
        load_config(overrides=["rollout.precision_control={ladder: [nvfp4, bf16@regenerate]}"])


def test_audit_seeds_are_a_reproducible_draw_independent_of_selection():
    seeds = tuple(range(100, 132))
    a = audit_seeds(seeds, 4, (0, 3, 7))
    assert a == audit_seeds(seeds, 4, (0, 3, 7)) and len(set(a)) == 4 and set(a) <= set(seeds) and list(a) == sorted(a)
    draws = [audit_seeds(seeds, 4, (0, it, 7)) for it in range(200)]
    counts = [sum(s in d for d in draws) for s in seeds]
    assert min(counts) > 0 and max(counts) < 60  # every seed is audited now and then (expected 25 each)
    assert audit_seeds(seeds[:3], 4, (0, 0, 0)) == seeds[:3]


def test_audit_agreement_averages_the_groups_where_it_is_defined():
    assert audit_agreement([[1, 2, 3], [3, 2, 1], [1, 1, 1]], [[1, 2, 3], [1, 2, 3], [1, 2, 3]]) == pytest.approx(0.0)
    assert audit_agreement([[1, 2, 3, 4]], [[1, 2, 4, 3]]) == pytest.approx(0.8)
    assert math.isnan(audit_agreement([[1, 1]], [[1, 2]]))


def test_the_distributed_audit_takes_results_that_come_after_its_row_was_closed():
    """Under a lag a step can end before its iteration's audit tasks do: the row is closed (held)
    with the audit pending, and the previews and regenerations that come later still land in it."""
    from solrl.cluster.audit_desk import AuditDesk
    from solrl.cluster.dispatch import Done
    from solrl.config import load_config
    from solrl.types import Candidates, PromptGroup
    from solrl.workers.selector import Selector

    class Queue:  # what the desk hands the dispatcher
        def __init__(self):
            self.jobs = []

        def put(self, stage, work):
            self.jobs.append((stage, work[0]))

    config = load_config(overrides=["rollout.precision_control={audit: 4}", "selection.k=2", "rollout.candidates=8"])
    desk, queue = AuditDesk(config, log=lambda _: None), Queue()
    desk.attach(queue, rollout=None)
    group = PromptGroup(0, "a red circle", tuple(range(8)), 0, 0)
    candidates = Candidates(group, (0.1, 0.9, 0.3, 0.5, 0.2, 0.8, 0.4, 0.6), 0, 1.0)
    desk.explored_at([candidates], "nvfp4")
    sel = Selector(config.selection).choose(candidates)
    desk.selected(sel, candidates)
    desk.regenerated(sel, [0.0] * len(sel.seeds))
    audit = desk.closing(0)
    assert not audit.done and not desk.settled(0)
    (stage, work), = queue.jobs  # nvfp4 is the cheapest rung: no preview, one audit regeneration
    assert stage == "audit" and set(work.seeds).isdisjoint(sel.seeds)
    desk.delivered(Done("audit", (work,), (), {"rewards": [[0.5] * len(work.seeds)]}, None))
    assert audit.done and desk.settled(0)
    figures = audit.report()
    assert figures["precision"] == "nvfp4" and figures["groups"] == 1 and figures["regenerated"] == len(work.seeds)
    assert not desk.groups  # reported: forgotten


def test_the_sentinel_audits_the_cheapest_rung_only_while_the_free_figure_is_low_and_always_above_it():
    from solrl.audit_schedule import AuditSchedule

    config = PrecisionControl(ladder=["nvfp4", "fp8_e4m3", "bf16"], sentinel=0.6, sentinel_window=2)
    schedule = AuditSchedule(config)
    schedule.record(0, 0.7)
    assert not schedule.audits(0, "nvfp4") and schedule.audits(0, "fp8_e4m3") and schedule.audits(0, None)  # above the cheapest (or mixed): always
    schedule.record(1, 0.45)
    assert schedule.running(1) == pytest.approx(0.575) and schedule.audits(1, "nvfp4")  # the window's mean fell below 0.6
    schedule.record(2, 0.8)
    assert not schedule.audits(2, "nvfp4")  # 0.45 and 0.8: 0.625
    schedule.record(3, math.nan)
    assert schedule.running(3) == 0.8 and not schedule.audits(3, "nvfp4")  # an undefined figure counts neither way
    schedule.record(4, math.nan)
    schedule.record(5, math.nan)
    assert math.isnan(schedule.running(5)) and schedule.audits(5, "nvfp4")  # nothing says the previews rank well: audit
    resumed = AuditSchedule(config)
    resumed.load_state(json.loads(json.dumps(schedule.state(2))))  # a checkpoint after iteration 2 holds its window
    assert resumed.free == {1: 0.45, 2: 0.8} and resumed.running(2) == schedule.running(2)
    plain = AuditSchedule(PrecisionControl(every=2))
    assert [plain.audits(i, "nvfp4") for i in range(4)] == [True, False, True, False]  # no sentinel: the schedule alone
    sparse = AuditSchedule(PrecisionControl(every=2, sentinel=0.6))
    sparse.record(1, 0.1)
    assert not sparse.audits(1, "nvfp4")  # the sentinel only ever drops scheduled audits
