"""deploy/: the Prometheus config and alert rules checked by promtool (rules unit-tested on
series that should and should not fire), the Grafana dashboard equal to what its generator
builds and reading only metrics the run exports, and the KubeRay manifests validated against the
Kubernetes schemas and against the worker counts and resources of the config they run."""

import copy
import json
import pathlib
import shlex
import shutil
import subprocess
import sys

import pytest
import yaml

from solrl.config import load_config
from solrl.metrics import RunMetrics

DEPLOY = pathlib.Path(__file__).resolve().parent.parent / "deploy"
REPO = DEPLOY.parent
needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="needs promtool (Debian package prometheus; .ci/run installs it)"
)


def _promtool(*args: str, cwd: pathlib.Path) -> str:
    out = subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


@needs_promtool
def test_prometheus_config_and_rules_pass_promtool():
    assert "SUCCESS" in _promtool("check", "config", "prometheus.yml", cwd=DEPLOY / "prometheus")
    assert "5 rules found" in _promtool("check", "rules", "rules/solrl.rules.yml", cwd=DEPLOY / "prometheus")


@needs_promtool
def test_each_alert_fires_on_a_sick_run_and_not_on_a_healthy_one():
    assert "SUCCESS" in _promtool("test", "rules", "solrl_test.yml", cwd=DEPLOY / "prometheus" / "rules" / "tests")


@needs_promtool
def test_a_broken_alert_fails_its_unit_test(tmp_path):
    """The rule tests can fail: with the stall window halved, the stall alert fires too early."""
    shutil.copytree(DEPLOY / "prometheus" / "rules", tmp_path / "rules")
    rules = tmp_path / "rules" / "solrl.rules.yml"
    rules.write_text(rules.read_text().replace("changes(solrl_iteration[20m])", "changes(solrl_iteration[5m])"))
    out = subprocess.run(["promtool", "test", "rules", "solrl_test.yml"], cwd=tmp_path / "rules" / "tests", capture_output=True, text=True)
    assert out.returncode != 0 and "SolrlStalled" in out.stdout + out.stderr


def _exported_names() -> set[str]:
    m = RunMetrics()
    m.prime({"rollout": 2, "regen": 1, "learner": 2}, 1)
    return {family.name + ("_total" if family.type == "counter" else "") for family in m.registry.collect()}


def test_the_dashboard_is_its_generator_output_and_reads_only_exported_metrics():
    pytest.importorskip("grafana_foundation_sdk", reason="needs grafana-foundation-sdk (the test extra)")
    import importlib.util

    spec = importlib.util.spec_from_file_location("solrl_grafana_dashboard", DEPLOY / "grafana" / "dashboard.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    assert module.render() == (DEPLOY / "grafana" / "solrl.json").read_text(), (
        "regenerate: python deploy/grafana/dashboard.py > deploy/grafana/solrl.json"
    )
    board = json.loads(module.render())
    exported = _exported_names()
    read = set()
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel["description"] and panel["fieldConfig"]["defaults"]["unit"], panel["title"]
        for target in panel["targets"]:
            read |= {name for name in _metric_names(target["expr"]) if name.startswith("solrl_")}
    assert read <= exported, read - exported
    # everything the run exports is on the dashboard (a new metric needs a panel)
    assert exported - read == set(), exported - read
    # throughput is a rate() of counters, not a precomputed gauge
    assert "rate(solrl_candidates_total" in json.dumps(board) and "rate(solrl_regenerated_total" in json.dumps(board)


def _metric_names(expr: str) -> set[str]:
    import re

    return set(re.findall(r"\b((?:solrl|ray)_[a-z0-9_]+)\b", expr))


# --- KubeRay -------------------------------------------------------------------------------


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / "kuberay" / name).read_text()) if d]


def _pod_templates(resource: dict) -> dict[str, dict]:
    spec = resource["spec"]
    if resource["kind"] == "RayCluster":
        found = {"head": spec["headGroupSpec"]["template"]}
        found |= {g["groupName"]: g["template"] for g in spec["workerGroupSpecs"]}
        return found
    return {"submitter": spec["submitterPodTemplate"]}


def test_kuberay_manifests_validate_against_the_kubernetes_schemas():
    validate = pytest.importorskip("kubernetes_validate", reason="needs kubernetes-validate (the test extra)")
    checked = 0
    for name in ("raycluster.yaml", "rayjob.yaml", "storage.yaml"):
        for resource in _docs(name):
            if resource["apiVersion"].startswith("ray.io/"):
                # KubeRay's CRDs are not in the Kubernetes schemas: every pod template they carry is
                # checked as the core PodTemplate it becomes, strictly (no unknown field passes)
                for group, template in _pod_templates(resource).items():
                    pod = {
                        "apiVersion": "v1",
                        "kind": "PodTemplate",
                        "metadata": {"name": f"{resource['metadata']['name']}-{group}"},
                        "template": template,
                    }
                    validate.validate(copy.deepcopy(pod), validate.latest_version(), strict=True)
                    checked += 1
            else:
                validate.validate(resource, validate.latest_version(), strict=True)
                checked += 1
    assert checked == 6  # head, 2 worker groups, the submitter, 2 volume claims


def test_a_broken_pod_template_is_refused_by_the_schema_check():
    validate = pytest.importorskip("kubernetes_validate", reason="needs kubernetes-validate (the test extra)")
    template = copy.deepcopy(_pod_templates(_docs("raycluster.yaml")[0])["nvfp4-rollout"])
    template["spec"]["containers"][0]["resources"]["limit"] = {"cpu": "1"}  # a typo of limits
    with pytest.raises(validate.ValidationError):
        validate.validate(
            {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "x"}, "template": template},
            validate.latest_version(),
            strict=True,
        )


def _supply(cluster: dict) -> list[dict[str, float]]:
    """What each Ray node of the RayCluster offers the run's actors (workers at their replicas)."""
    nodes = []
    for group in cluster["spec"]["workerGroupSpecs"]:
        params = group["rayStartParams"]
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        node = {"CPU": float(params.get("num-cpus", limits["cpu"])), "GPU": float(params.get("num-gpus", limits.get("nvidia.com/gpu", 0)))}
        assert float(limits.get("nvidia.com/gpu", 0)) == node["GPU"], (
            f"{group['groupName']}: Ray's num-gpus differs from the pod's GPU limit"
        )
        node |= json.loads(json.loads(params["resources"])) if "resources" in params else {}
        nodes += [dict(node) for _ in range(group["replicas"])]
    return nodes


def _job_config(job: dict):
    args = shlex.split(job["spec"]["entrypoint"])
    assert args[:2] == ["solrl", "train"] and args[2].startswith("/app/")
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    return load_config(REPO / args[2].removeprefix("/app/"), sets), args


def test_the_kuberay_cluster_fits_the_job_config_and_wires_the_tokens():
    cluster, job = _docs("raycluster.yaml")[0], _docs("rayjob.yaml")[0]
    config, args = _job_config(job)
    assert job["spec"]["clusterSelector"]["ray.io/cluster"] == cluster["metadata"]["name"]
    # every actor finds a node: place each pool's workers greedily on the nodes offering its resources
    nodes = _supply(cluster)
    for pool, (n, each) in config.cluster.demands().items():
        for _ in range(n):
            node = next((x for x in nodes if all(x.get(k, 0) >= v for k, v in each.items() if v)), None)
            assert node is not None, f"no node left for a {pool} worker reserving {each}"
            for k, v in each.items():
                node[k] -= v
    assert sum(x["GPU"] for x in nodes) == 0, "GPUs the config never uses"
    # rollout workers only on NVFP4-capable (Blackwell) nodes, the rest on BF16 ones
    groups = {g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]}
    assert (
        config.cluster.pool_resources["rollout"] == {"nvfp4": 1.0}
        and "B200" in groups["nvfp4-rollout"]["template"]["spec"]["nodeSelector"]["nvidia.com/gpu.product"]
    )
    assert groups["nvfp4-rollout"]["maxReplicas"] > config.cluster.rollout_workers  # room for `solrl scale`
    # token auth on every Ray process, from the secret; the metrics endpoint leaves loopback only with its token
    for resource in (cluster, job):
        for group, template in _pod_templates(resource).items():
            for container in template["spec"]["containers"]:
                env = {e["name"]: e for e in container["env"]}
                assert env["RAY_AUTH_MODE"]["value"] == "token", group
                assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "solrl-ray-token", group
    head_env = {e["name"]: e for e in _pod_templates(cluster)["head"]["spec"]["containers"][0]["env"]}
    assert args[args.index("--metrics-host") + 1] == "0.0.0.0" and "SOLRL_METRICS_TOKEN" in head_env
    # the run's endpoint and its control service listen on ports the head pod declares (and its service forwards)
    ports = {p["containerPort"] for p in _pod_templates(cluster)["head"]["spec"]["containers"][0]["ports"]}
    assert int(args[args.index("--metrics-port") + 1]) in ports and config.cluster.control_port in ports


def test_the_image_and_cluster_name_the_ray_version_solrl_is_tested_with():
    import ray

    cluster = _docs("raycluster.yaml")[0]
    assert cluster["spec"]["rayVersion"] == ray.__version__
    assert f"rayproject/ray:{ray.__version__}-" in (DEPLOY / "kuberay" / "Dockerfile").read_text()
