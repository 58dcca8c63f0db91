"""Fault injection specs: parsed strictly, armed only for the named worker, counted per point.
(The kills themselves are exercised on a real Ray cluster in tests/test_cluster.py.)"""

import os
import signal
import subprocess
import sys

import pytest

from solrl.faults import FaultPlan, parse_fault


@pytest.mark.parametrize("spec", ["rollout-0:explode:1", "rollout:explore:1", "rollout-0:explore:0", "rollout-0:explore"])
def test_a_bad_spec_names_the_expected_form(spec):
    with pytest.raises(ValueError, match="WORKER:POINT:K"):
        parse_fault(spec)


def test_a_plan_arms_only_its_worker_and_only_the_first_generation():
    specs = ["rollout-0:explore:2", "learner-1:backward:1"]
    assert FaultPlan(specs, "rollout-0").armed == {"explore": 2}
    assert FaultPlan(specs, "rollout-1").armed == {}
    assert FaultPlan(specs, "learner-1", armed=False).armed == {}


def test_the_kth_time_a_point_is_reached_kills_the_process():
    code = (
        "from solrl.faults import FaultPlan\n"
        "plan = FaultPlan(['regen-0:regenerate:3'], 'regen-0')\n"
        "for i in range(5):\n"
        "    print(i, flush=True)\n"
        "    plan.reached('regenerate')\n"
        "    plan.reached('explore')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=os.environ)
    assert done.returncode == -signal.SIGKILL and done.stdout.split() == ["0", "1", "2"]
