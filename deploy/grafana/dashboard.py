"""The solrl run dashboard, built with grafana-foundation-sdk; solrl.json beside it is its output.

    python deploy/grafana/dashboard.py > deploy/grafana/solrl.json

Throughput comes from rate() of the run's counters, so any window can be read, not only the last
iteration's. Every panel reads solrl's endpoint (deploy/prometheus, job "solrl") except the Ray
row, which reads the metrics Ray exports from each node (job "ray").
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from grafana_foundation_sdk.builders import common, dashboard, prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import LegendDisplayMode, LegendPlacement
from grafana_foundation_sdk.models.dashboard import DataSourceRef, GridPos

RUN = '{instance=~"$instance"}'
RATE = "$__rate_interval"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class PanelSpec:
    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]


def q(expr: str, legend: str) -> Query:
    return Query(expr, legend)


ROWS: dict[str, list[PanelSpec]] = {
    "Throughput": [
        PanelSpec(
            "Candidates explored / s",
            "Seeds explored and proxy-scored (NVFP4), per second",
            "ops",
            (q(f"sum by (instance) (rate(solrl_candidates_total{RUN}[{RATE}]))", "{{instance}}"),),
        ),
        PanelSpec(
            "Samples regenerated / s",
            "Selected seeds rebuilt at full precision, per second",
            "ops",
            (q(f"sum by (instance) (rate(solrl_regenerated_total{RUN}[{RATE}]))", "{{instance}}"),),
        ),
        PanelSpec(
            "Iteration seconds by stage",
            "End-to-end time of the last iteration and each stage's share",
            "s",
            (q(f"solrl_iteration_seconds{RUN}", "iteration"), q(f"solrl_stage_seconds{RUN}", "{{stage}}")),
        ),
        PanelSpec(
            "Modeled GPU cost",
            "Model calls made so far by purpose, priced in BF16 calls by precision (cost.per_call; NVFP4 = 1/2.16)",
            "short",
            (q(f"sum by (purpose) (solrl_modeled_cost_bf16_calls_total{RUN})", "{{purpose}}"),),
        ),
        PanelSpec(
            "Iterations and policy version",
            "Iterations done and the policy version the learner published",
            "short",
            (q(f"solrl_iteration{RUN}", "iterations"), q(f"solrl_policy_version{RUN}", "policy version")),
        ),
    ],
    "Workers": [
        PanelSpec(
            "Worker busy ratio",
            "Fraction of the last iteration each worker spent working; the busiest pool is the bottleneck",
            "percentunit",
            (q(f"solrl_worker_busy_ratio{RUN}", "{{worker}}"),),
        ),
        PanelSpec(
            "Pool sizes",
            "Workers serving in each pool, those spawned but still waiting to start, and spares kept started beside it",
            "short",
            (
                q(f"solrl_pool_workers{RUN}", "{{pool}}"),
                q(f"solrl_workers_starting{RUN}", "{{pool}} starting"),
                q(f"solrl_pool_spare_workers{RUN}", "{{pool}} spares"),
            ),
        ),
        PanelSpec("Queue depths", "Work waiting in the driver's queues", "short", (q(f"solrl_queue_depth{RUN}", "{{queue}}"),)),
        PanelSpec(
            "Worker restarts and resizes",
            "Workers replaced after dying, and pool resizes by cluster.autoscale",
            "short",
            (
                q(f"sum by (pool) (solrl_worker_restarts_total{RUN})", "{{pool}} restarts"),
                q(f"sum by (pool, direction) (solrl_autoscale_decisions_total{RUN})", "{{pool}} scaled {{direction}}"),
            ),
        ),
    ],
    "Policy": [
        PanelSpec(
            "Policy lag",
            "Largest version lag among samples trained in the last iteration, and the bound the run allows",
            "short",
            (q(f"solrl_policy_lag{RUN}", "lag"), q(f"solrl_policy_lag_bound{RUN}", "bound")),
        ),
        PanelSpec(
            "Weight sync seconds",
            "Time to publish and apply the last weight update",
            "s",
            (q(f"solrl_weight_sync_seconds{RUN}", "{{instance}}"),),
        ),
        PanelSpec(
            "Weight sync bytes / s",
            "Bytes of weight updates published, per second",
            "Bps",
            (q(f"sum by (instance) (rate(solrl_weight_sync_bytes_total{RUN}[{RATE}]))", "{{instance}}"),),
        ),
        PanelSpec("DiffusionNFT loss", "Loss of the last iteration", "none", (q(f"solrl_loss{RUN}", "{{instance}}"),)),
        PanelSpec(
            "KL to the base model and its weight",
            "The learner's KL term and the weight it trained at: with train.nft.kl_target the weight rises while the KL is over the target",
            "none",
            (q('solrl_learner{stat="kl",instance=~"$instance"}', "KL"), q('solrl_learner{stat="kl_weight",instance=~"$instance"}', "KL weight")),
        ),
        PanelSpec("Learning rate", "The rate of the learner's last step (train.optim.schedule)", "none", (q('solrl_learner{stat="lr",instance=~"$instance"}', "{{instance}}"),)),
    ],
    "Data movement": [
        PanelSpec(
            "Bytes moved / s by kind",
            "Bytes crossing between the run's processes per second: conditioning, samples, weight updates, learner state, ... "
            "(a payload counts once per process that receives it; docs/architecture.md states each kind's minimum)",
            "Bps",
            (q(f"sum by (kind) (rate(solrl_bytes_moved_total{RUN}[{RATE}]))", "{{kind}}"),),
        ),
        PanelSpec(
            "Bytes moved by kind",
            "Bytes that crossed between the run's processes so far, by kind",
            "bytes",
            (q(f"sum by (kind) (solrl_bytes_moved_total{RUN})", "{{kind}}"),),
        ),
    ],
    "Reward and fidelity": [
        PanelSpec(
            "Reward mean by source",
            "Mean reward of the last iteration: proxy (NVFP4 explore) and BF16 (regenerated)",
            "none",
            (q('solrl_reward{stat="mean",instance=~"$instance"}', "{{source}}"),),
        ),
        PanelSpec(
            "Reward std by source",
            "Spread of the last iteration's rewards: what selection has to work with",
            "none",
            (q('solrl_reward{stat="std",instance=~"$instance"}', "{{source}}"),),
        ),
        PanelSpec(
            "Proxy fidelity",
            "How the explore ranks seeds compared with BF16 regeneration",
            "none",
            (q(f"solrl_proxy_spearman{RUN}", "Spearman"), q(f"solrl_proxy_kendall{RUN}", "Kendall")),
        ),
        PanelSpec(
            "Explore audit (rollout.precision_control)",
            "Spearman of explore previews against BF16 on seeds drawn at random, at explore's precision and at the rung below; "
            "explore's precision moves when it stays below the floor, back when the rung below recovers. With a sentinel, the "
            "selected seeds' running Spearman, below which the cheapest rung is audited",
            "none",
            (q(f"solrl_explore_audit_spearman{RUN}", "{{rung}}"), q(f"solrl_explore_audit_sentinel{RUN}", "sentinel (selected seeds)")),
        ),
        PanelSpec(
            "Explore precision",
            "The precision explore runs at (1), its moves along the ladder so far, and the iterations audited",
            "short",
            (
                q(f"solrl_explore_precision{RUN} == 1", "{{precision}}"),
                q(f"sum by (source, target) (solrl_explore_precision_switches_total{RUN})", "{{source}} -> {{target}}"),
                q(f"solrl_explore_audited_iterations_total{RUN}", "audited iterations"),
            ),
        ),
        PanelSpec(
            "Dropped records",
            "Records that left the run untrained, by reason",
            "short",
            (q(f"sum by (reason) (solrl_dropped_records_total{RUN})", "{{reason}}"),),
        ),
    ],
    "Ray": [
        PanelSpec(
            "Ray node CPU",
            "CPU use of each node of the Ray cluster",
            "percent",
            (q('ray_node_cpu_utilization{job="ray"}', "{{instance}}"),),
        ),
        PanelSpec(
            "Ray node memory", "Memory used on each node of the Ray cluster", "bytes", (q('ray_node_mem_used{job="ray"}', "{{instance}}"),)
        ),
    ],
}


def _panel(spec: PanelSpec, x: int, y: int) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(spec.title)
        .description(spec.description)
        .unit(spec.unit)
        .datasource(DATASOURCE)
        .grid_pos(GridPos(h=8, w=6, x=x, y=y))
        .legend(common.VizLegendOptions().show_legend(True).display_mode(LegendDisplayMode.LIST).placement(LegendPlacement.BOTTOM))
    )
    for i, query in enumerate(spec.queries):
        panel = panel.with_target(
            prometheus.Dataquery().expr(query.expr).legend_format(query.legend).ref_id("ABCDEFGH"[i]).datasource(DATASOURCE)
        )
    return panel


def build() -> dashboard.Dashboard:
    board = (
        dashboard.Dashboard("solrl run")
        .uid("solrl-run")
        .tags(["solrl", "ray"])
        .refresh("10s")
        .time("now-1h", "now")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        .with_variable(
            dashboard.QueryVariable("instance")
            .label("Run")
            .datasource(DATASOURCE)
            .query("label_values(solrl_iteration, instance)")
            .include_all(True)
            .all_value(".*")
            .multi(True)
        )
    )
    y = 0
    for title, specs in ROWS.items():
        board = board.with_row(dashboard.Row(title).grid_pos(GridPos(h=1, w=24, x=0, y=y)))
        y += 1
        for i, spec in enumerate(specs):
            board = board.with_panel(_panel(spec, 6 * (i % 4), y + 8 * (i // 4)))
        y += 8 * ((len(specs) + 3) // 4)
    return board


def render() -> str:
    return json.dumps(build().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(render(), end="")
