"""report.html: a finished run's folder drawn for a person, in one self-contained file.

Read from what the run wrote (metrics.jsonl, eval.json, config.yaml, grid.png), never from the
run's memory, so `solrl report RUN` redraws any run folder, finished, stopped or resumed. Figures
are matplotlib PNGs inlined as data URIs: the file opens offline and can be mailed around.
"""

from __future__ import annotations

import base64
import html
import io
import json
import pathlib

REPORT = "report.html"
EVAL_FIELDS = ("accuracy", "score", "preference", "reward")


def _rows(run: pathlib.Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a torn last line of a killed run
            continue
    return rows


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _figure(title: str):
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(6.4, 3.4))
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    return fig, ax


def _eval_points(rows: list[dict], report: dict) -> list[tuple[int, dict]]:
    """(iterations trained, eval result): the base, any evals during the run, the final EMA (the
    kept one, at its iteration, and the last one, when train.keep_best kept an earlier one)."""
    points = [(0, report["base_eval"])] if "base_eval" in report else []
    points += [(r["iteration"] + 1, r["eval"]) for r in rows if "eval" in r]
    last = report.get("iterations", len(rows))
    if "final_eval" in report:
        points.append((report["kept"]["iteration"] if "kept" in report else last, report["final_eval"]))
    if "final_eval_last" in report:
        points.append((last, report["final_eval_last"]))
    return points


def reward_figure(rows: list[dict], report: dict) -> str:
    fig, ax = _figure("Reward: training samples and held-out eval")
    x = [r["iteration"] + 1 for r in rows]
    ax.plot(x, [r.get("proxy_reward_mean") for r in rows], label="proxy (explore), mean", color="tab:orange")
    ax.plot(x, [r.get("bf16_reward_mean") for r in rows], label="BF16 (regenerated), mean", color="tab:blue")
    points = _eval_points(rows, report)
    for field, marker in (("preference", "s"), ("score", "o"), ("reward", "o")):
        shown = [(it, e[field], e.get(f"{field}_se", 0.0)) for it, e in points if field in e]
        if shown:
            its, values, errs = zip(*shown)
            ax.errorbar(its, values, yerr=errs, fmt=marker, capsize=3, label=f"held-out {field} (± s.e.)")
    validation = [(r["iteration"] + 1, r["validation"]["reward"], r["validation"].get("reward_se", 0.0)) for r in rows if "validation" in r]
    if validation:  # what train.keep_best chooses by
        its, values, errs = zip(*validation)
        ax.errorbar(its, values, yerr=errs, fmt="^", capsize=3, color="tab:green", label="validation reward (± s.e.)")
    ax.set_xlabel("iterations trained")
    ax.legend(fontsize=8)
    return _png(fig)


def stage_figure(rows: list[dict]) -> str:
    fig, ax = _figure("Seconds per iteration, by stage")
    order = ["explore", "select", "regenerate", "learn", "sync"]
    stages = sorted({s for r in rows for s in r.get("seconds", {})}, key=lambda s: (order.index(s) if s in order else len(order), s))
    x = [r["iteration"] + 1 for r in rows]
    bottom = [0.0] * len(rows)
    for stage in stages:
        values = [r.get("seconds", {}).get(stage, 0.0) for r in rows]
        ax.bar(x, values, bottom=bottom, label=stage)
        bottom = [b + v for b, v in zip(bottom, values)]
    if any("iteration_seconds" in r for r in rows):
        ax.plot(x, [r.get("iteration_seconds") for r in rows], "k.-", label="end to end")
    ax.set_xlabel("iteration")
    ax.legend(fontsize=8)
    return _png(fig)


def busy_figure(rows: list[dict]) -> str:
    fig, ax = _figure("Worker busy ratio")
    workers = sorted({w for r in rows for w in r.get("busy", {})})
    x = [r["iteration"] + 1 for r in rows]
    for worker in workers:
        ax.plot(x, [r.get("busy", {}).get(worker) for r in rows], ".-", label=worker)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("iteration")
    if workers:
        ax.legend(fontsize=8)
    return _png(fig)


def bytes_figure(rows: list[dict]) -> str:
    fig, ax = _figure("Data moved between processes, by kind (MB)")
    kinds = [k for k in dict.fromkeys(k for r in rows for k in r.get("bytes", {})) if any(r.get("bytes", {}).get(k) for r in rows)]
    x = [r["iteration"] + 1 for r in rows]
    bottom = [0.0] * len(rows)
    for kind in kinds:
        values = [r.get("bytes", {}).get(kind, 0) / 1e6 for r in rows]
        ax.bar(x, values, bottom=bottom, label=kind)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_xlabel("iteration")
    if kinds:
        ax.legend(fontsize=8)
    return _png(fig)


def fidelity_figure(rows: list[dict]) -> str:
    fig, ax = _figure("Proxy fidelity: explore vs BF16 ranking of the selected seeds")
    x = [r["iteration"] + 1 for r in rows]
    ax.plot(x, [r.get("spearman") for r in rows], ".-", label="Spearman")
    ax.plot(x, [r.get("kendall") for r in rows], ".-", label="Kendall")
    sentinel = [r for r in rows if r.get("audit", {}).get("sentinel") is not None]  # precision_control.sentinel: what scheduled the audits
    if sentinel:
        ax.plot([r["iteration"] + 1 for r in sentinel], [r["audit"]["sentinel"] for r in sentinel], ":", label="Spearman, selected seeds, sentinel's mean")
    audited = [r for r in rows if "spearman" in r.get("audit", {})]  # rollout.precision_control: random seeds, not the selected ones
    if audited:
        ax.plot([r["iteration"] + 1 for r in audited], [r["audit"]["spearman"] for r in audited], "^-", label="Spearman, audited seeds")
        for key, marker, label in (("cheaper", "v", "cheaper rung"), ("safer", "s", "safer rung")):  # the controller's probes
            probed = [r for r in audited if f"{key}_spearman" in r["audit"]]
            if probed:
                ax.plot([r["iteration"] + 1 for r in probed], [r["audit"][f"{key}_spearman"] for r in probed], marker, alpha=0.6, label=f"Spearman, audited seeds, {label}")
        for r in (r for r in audited if "switch" in r["audit"]):
            ax.axvline(r["iteration"] + 1.5, color="tab:red", alpha=0.5)
            ax.annotate(f"{r['audit']['switch']['from']} -> {r['audit']['switch']['to']}", (r["iteration"] + 1.5, -0.95), fontsize=7, rotation=90)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("iteration")
    ax.legend(fontsize=8)
    return _png(fig)


def lag_figure(rows: list[dict], max_lag: int | None) -> str:
    fig, ax = _figure("Policy lag of the samples trained")
    x = [r["iteration"] + 1 for r in rows]
    ax.step(x, [r.get("policy_lag", 0) for r in rows], where="mid", label="largest lag")
    if max_lag is not None:
        ax.axhline(max_lag, color="tab:red", linestyle="--", label=f"rollout.max_policy_lag = {max_lag}")
    ax.set_ylim(-0.2, max([r.get("policy_lag", 0) for r in rows] + [max_lag or 0]) + 0.5)
    ax.set_xlabel("iteration")
    ax.legend(fontsize=8)
    return _png(fig)


def _fmt(result: dict | None, field: str) -> str:
    if not result or field not in result:
        return ""
    se = result.get(f"{field}_se")
    return f"{result[field]:.4f}" + (f" ± {se:.4f}" if se is not None else "")


def _summary(report: dict, rows: list[dict]) -> str:
    kept = f", kept: iteration {report['kept']['iteration']}" if "kept" in report else ""
    evals = [
        ("base model", report.get("base_eval")),
        (f"trained (EMA{kept})", report.get("final_eval")),
        (f"trained (raw policy{kept})", report.get("final_eval_policy")),
        ("last (EMA)", report.get("final_eval_last")),
    ]
    fields = [f for f in EVAL_FIELDS if any(e and f in e for _, e in evals)]
    head = "".join(f"<th>{f}</th>" for f in fields)
    body = "".join(f"<tr><td>{name}</td>" + "".join(f"<td>{_fmt(e, f)}</td>" for f in fields) + "</tr>" for name, e in evals if e)
    facts = {
        "iterations": report.get("iterations", len(rows)),
        "run seconds": report.get("seconds"),
        "training seconds": report.get("train_seconds"),
        "adapters kept (train.keep_best: the best validation reward)": report.get("kept"),
        "preference gap closed (EMA)": report.get("preference_gap_closed"),
        "accuracy change": report.get("accuracy_change"),
        "accuracy change s.e. (paired)": report.get("accuracy_change_se"),
        "modeled GPU cost, BF16 calls (solrl/cost.py)": report.get("modeled_cost"),
        "bytes moved between processes, by kind": report.get("bytes_moved"),
        "restarts": report.get("restarts"),
        "dropped records": report.get("dropped"),
        "duplicated groups": report.get("duplicates"),
    }
    items = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>" for k, v in facts.items() if v is not None)
    table = f"<table><tr><th>held-out eval</th>{head}</tr>{body}</table>" if body else "<p>No eval.json yet: the run has not finished.</p>"
    return f"{table}<ul>{items}</ul>"


def render(run: pathlib.Path) -> str:
    """The report's HTML for the run folder `run`."""
    import yaml

    rows = _rows(run)
    report = json.loads((run / "eval.json").read_text()) if (run / "eval.json").exists() else {}
    config = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").exists() else {}
    max_lag = config.get("rollout", {}).get("max_policy_lag")
    figures = []
    if rows:
        figures = [
            ("Reward", reward_figure(rows, report)),
            ("Where the time goes", stage_figure(rows)),
            ("Worker utilization", busy_figure(rows)),
            ("Proxy fidelity", fidelity_figure(rows)),
            ("Policy lag", lag_figure(rows, max_lag)),
        ]
        if any("bytes" in r for r in rows):  # runs on worker pools (one process moves nothing)
            figures.append(("Data moved", bytes_figure(rows)))
    if (run / "grid.png").exists():
        grid = "data:image/png;base64," + base64.b64encode((run / "grid.png").read_bytes()).decode()
        figures.append(("Samples of fixed seeds: base model (left) and trained EMA (right)", grid))
    blocks = "".join(
        f'<figure><figcaption>{html.escape(t)}</figcaption><img alt="{html.escape(t)}" src="{src}"></figure>' for t, src in figures
    )
    model = config.get("model", {})
    title = f"solrl run {run.resolve().name}"
    subtitle = f"model {model.get('kind', '?')} · {len(rows)} iterations logged · reward {', '.join(r.get('name', '?') for r in config.get('reward', []))}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
.figures {{ display: flex; flex-wrap: wrap; gap: 1.5em; }} figure {{ margin: 0; }} figure img {{ max-width: 100%; }}
figcaption {{ font-weight: 600; margin-bottom: 0.3em; }}
</style></head><body>
<h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p>
{_summary(report, rows)}
<div class="figures">{blocks}</div>
</body></html>
"""


def write_report(run: pathlib.Path) -> pathlib.Path:
    """Write RUN/report.html and return its path."""
    path = run / REPORT
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(render(run))
    tmp.replace(path)
    return path
