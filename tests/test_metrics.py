"""Prometheus metrics: filled from a metrics.jsonl row, served over a real HTTP socket on loopback."""

import socket
import time
import urllib.error
import urllib.request

import pytest

from solrl.metrics import MetricsServer, RunMetrics

ROW = {
    "iteration": 2,
    "version": 3,
    "candidates": 256,
    "regenerated": 64,
    "seconds": {"explore": 8.0, "select": 0.01, "regenerate": 2.0, "learn": 5.0, "sync": 0.02},
    "busy": {"rollout-0": 0.9},
    "queues": {"explore": 4},
    "policy_lag": 1,
    "sync_bytes": 1000,
    "spearman": 0.5,
    "kendall": 0.4,
    "proxy_reward_mean": 0.3,
    "bf16_reward_mean": 0.35,
    "bf16_reward_std": 0.1,
    "loss": 0.02,
    "kl": 0.03,
    "kl_weight": 0.4,
    "lr": 1.5e-4,
    "grad_norm": 0.2,
    "dropped": {"stale": 2},
    "excluded_rewards": 1,
    "restarts": {"rollout": 1},
}


def _value(text: str, line_start: str) -> float:
    return float(next(line for line in text.splitlines() if line.startswith(line_start)).split()[-1])


def test_row_maps_onto_metrics():
    m = RunMetrics()
    m.observe_iteration(ROW)
    m.observe_iteration({**ROW, "iteration": 3})
    text = m.render().decode()
    assert _value(text, "solrl_iteration ") == 4
    assert _value(text, "solrl_candidates_total") == 512
    assert _value(text, 'solrl_stage_seconds{stage="learn"}') == 5
    assert _value(text, 'solrl_worker_busy_ratio{worker="rollout-0"}') == 0.9
    assert _value(text, 'solrl_queue_depth{queue="explore"}') == 4
    assert _value(text, "solrl_weight_sync_bytes_total") == 2000
    assert _value(text, 'solrl_reward{source="bf16",stat="std"}') == 0.1
    assert _value(text, 'solrl_dropped_records_total{reason="stale"}') == 4
    assert _value(text, 'solrl_dropped_records_total{reason="non_finite_reward"}') == 2
    assert _value(text, 'solrl_worker_restarts_total{pool="rollout"}') == 2
    assert [_value(text, f'solrl_learner{{stat="{s}"}}') for s in ("kl", "kl_weight", "lr", "grad_norm")] == [0.03, 0.4, 1.5e-4, 0.2]


def test_explore_audit_rows_map_onto_its_metrics():
    m = RunMetrics()
    m.prime({"rollout": 2}, max_policy_lag=1, ladder=["nvfp4", "fp8_e4m3", "bf16"], start="nvfp4")
    m.observe_iteration({**ROW, "audit": {"precision": "nvfp4", "sentinel": 0.71}})  # skipped: the sentinel was high
    m.observe_iteration({**ROW, "iteration": 3, "audit": {"precision": "nvfp4", "sentinel": 0.42, "spearman": 0.31, "safer_spearman": 0.8}})
    switch = {"from": "nvfp4", "to": "fp8_e4m3", "reason": "poor"}
    m.observe_iteration({**ROW, "iteration": 4, "audit": {"precision": "nvfp4", "sentinel": None, "spearman": 0.2, "switch": switch}})
    text = m.render().decode()
    assert _value(text, "solrl_explore_audit_sentinel ") == 0.42  # an undefined figure leaves the last one
    assert _value(text, "solrl_explore_audited_iterations_total") == 2
    assert _value(text, 'solrl_explore_audit_spearman{rung="explore"}') == 0.2
    assert _value(text, 'solrl_explore_audit_spearman{rung="safer"}') == 0.8
    assert _value(text, 'solrl_explore_precision_switches_total{source="nvfp4",target="fp8_e4m3"}') == 1
    assert _value(text, 'solrl_explore_precision{precision="fp8_e4m3"}') == 1 and _value(text, 'solrl_explore_precision{precision="nvfp4"}') == 0


def test_primed_label_sets_read_zero_before_any_event():
    m = RunMetrics()
    m.prime({"rollout": 2, "regen": 1, "learner": 2}, max_policy_lag=1)
    text = m.render().decode()
    assert _value(text, "solrl_policy_lag_bound") == 1
    assert _value(text, 'solrl_worker_restarts_total{pool="learner"}') == 0
    assert _value(text, 'solrl_pool_workers{pool="rollout"}') == 2
    assert _value(text, 'solrl_dropped_records_total{reason="run_ended"}') == 0
    assert _value(text, 'solrl_autoscale_decisions_total{direction="up",pool="rollout"}') == 0


def test_endpoint_serves_on_loopback_and_checks_the_token():
    m = RunMetrics()
    m.observe_iteration(ROW)
    server = MetricsServer(m, port=0, token="s3cret")
    url = f"http://127.0.0.1:{server.port}/metrics"
    try:
        with pytest.raises(urllib.error.HTTPError, match="401"):
            urllib.request.urlopen(url, timeout=5)
        request = urllib.request.Request(url, headers={"Authorization": "Bearer s3cret"})
        body = urllib.request.urlopen(request, timeout=5).read().decode()
        assert _value(body, "solrl_policy_version") == 3
    finally:
        server.close()
    with pytest.raises(ValueError, match="not loopback and no token"):
        MetricsServer(m, port=0, host="0.0.0.0")


@pytest.mark.skipif(not socket.has_ipv6, reason="this machine has no IPv6 stack")
def test_endpoint_serves_ipv6_loopback():
    m = RunMetrics()
    m.observe_iteration(ROW)
    try:
        server = MetricsServer(m, port=0, host="::1")
    except OSError as exc:  # an IPv6 stack without ::1 configured
        pytest.skip(f"cannot bind ::1 here: {exc}")
    try:
        body = urllib.request.urlopen(f"http://[::1]:{server.port}/metrics", timeout=5).read().decode()
        assert _value(body, "solrl_policy_version") == 3
    finally:
        server.close()


def test_an_idle_connection_is_closed_not_held():
    server = MetricsServer(RunMetrics(), port=0, idle_timeout=0.5)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as idle:
            start = time.monotonic()
            assert idle.recv(1) == b""  # the server hung up on a client that sent nothing
            assert time.monotonic() - start < 5
    finally:
        server.close()
