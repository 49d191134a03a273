"""deploy/kubernetes/: the KubeRay RayCluster with fsd-daemon and fsd-gpu-exporter beside Ray,
and the Prometheus Operator ScrapeConfigs that discover the targets over HTTP SD.

No cluster runs here, so each object is checked against its upstream schema (KubeRay's
RayCluster v1, the operator's ScrapeConfig v1alpha1; tests/data/crd/README.md), strictly: an
unknown field is an error, as ``kubectl apply --validate=strict`` makes it. Then what the
objects mean is checked against the project itself: every FSD_* variable is a config key, the
Service reaches the daemon's port on the head pod, and the ScrapeConfigs are the jobs that
``fsd-daemon prometheus-config --http-sd`` prints (same names, paths, relabelling).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from fsd_daemon.config import environment_variables, load_config
from fsd_daemon.prometheus.central import http_sd_jobs
from fsd_daemon.prometheus.client import HttpClient

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy" / "kubernetes"
SCHEMAS = {
    ("ray.io/v1", "RayCluster"): "raycluster-v1.json",
    ("monitoring.coreos.com/v1alpha1", "ScrapeConfig"): "scrapeconfig-v1alpha1.json",
}


def objects() -> list[dict[str, Any]]:
    found = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever fields are listed and nothing else is
    allowed (Kubernetes' strict field validation)."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def validator(name: str) -> jsonschema.Draft7Validator:
    schema = json.loads((REPO / "tests" / "data" / "crd" / name).read_text())["schema"]
    # metadata is typed by the API server, not the CRD: names, namespace and labels here.
    schema["properties"]["metadata"] = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "namespace": {"type": "string"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "required": ["name"],
    }
    return jsonschema.Draft7Validator(strict(schema))


@pytest.mark.parametrize("doc", objects(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_each_object_matches_its_schema(doc: dict[str, Any]) -> None:
    key = (doc["apiVersion"], doc["kind"])
    if key == ("v1", "Service"):
        assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
        return
    errors = sorted(validator(SCHEMAS[key]).iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_the_schema_check_refuses_a_misspelt_field() -> None:
    """The check can fail: a typo in a field name, or a wrong type, is reported."""
    (raycluster,) = [d for d in objects() if d["kind"] == "RayCluster"]
    bad = copy.deepcopy(raycluster)
    bad["spec"]["headGroupSpec"]["template"]["spec"]["containers"][1]["evn"] = []
    assert list(validator(SCHEMAS[("ray.io/v1", "RayCluster")]).iter_errors(bad))
    scrape = next(d for d in objects() if d["kind"] == "ScrapeConfig")
    bad = copy.deepcopy(scrape)
    bad["spec"]["httpSDConfigs"][0]["refreshInterval"] = 15
    assert list(
        validator(SCHEMAS[("monitoring.coreos.com/v1alpha1", "ScrapeConfig")]).iter_errors(bad)
    )


def containers() -> dict[str, dict[str, Any]]:
    (raycluster,) = [d for d in objects() if d["kind"] == "RayCluster"]
    spec = raycluster["spec"]
    pods = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    return {c["name"]: c for pod in pods for c in pod["spec"]["containers"]}


def test_daemon_settings_are_config_keys_and_the_service_reaches_it() -> None:
    known = environment_variables()
    daemon = containers()["fsd-daemon"]
    fsd_vars = [e["name"] for e in daemon["env"] if e["name"].startswith("FSD_")]
    assert fsd_vars and all(name in known for name in fsd_vars), fsd_vars
    env = {e["name"]: e["value"] for e in daemon["env"] if "value" in e}
    listen_port = int(env["FSD_DAEMON_METRICS_LISTEN"].rpartition(":")[2])
    (port,) = [p for p in daemon["ports"] if p["containerPort"] == listen_port]
    (service,) = [d for d in objects() if d["kind"] == "Service"]
    (raycluster,) = [d for d in objects() if d["kind"] == "RayCluster"]
    assert service["spec"]["selector"] == {
        "ray.io/cluster": raycluster["metadata"]["name"],
        "ray.io/node-type": "head",
    }
    (sd,) = service["spec"]["ports"]
    assert sd["targetPort"] == port["name"]
    # gpu.json names <node_ip>:<targets.gpu_exporter_port>: the exporter must listen there.
    exporter = containers()["fsd-gpu-exporter"]
    default_port = load_config(None, environ={}).targets.gpu_exporter_port
    assert exporter["command"][-1] == f"0.0.0.0:{default_port}"


def test_scrapeconfigs_are_the_jobs_prometheus_config_prints() -> None:
    (service,) = [d for d in objects() if d["kind"] == "Service"]
    base = (
        f"https://{service['metadata']['name']}.{service['metadata']['namespace']}.svc:"
        f"{service['spec']['ports'][0]['port']}"
    )
    printed = {
        j["job_name"]: j
        for j in http_sd_jobs(load_config(None, environ={}), base, HttpClient(username="u"))
    }
    scrape = {d["spec"]["jobName"]: d["spec"] for d in objects() if d["kind"] == "ScrapeConfig"}
    assert set(scrape) == set(printed)
    for job, spec in scrape.items():
        want = printed[job]
        if "http_sd_configs" in want:
            (sd,) = spec["httpSDConfigs"]
            assert sd["url"] == want["http_sd_configs"][0]["url"]
            assert sd["refreshInterval"] == want["http_sd_configs"][0]["refresh_interval"]
        else:
            assert spec["staticConfigs"][0]["targets"] == want["static_configs"][0]["targets"]
            assert spec["scheme"].lower() == want["scheme"]
        relabel = [
            {
                "source_labels": r["sourceLabels"],
                "regex": r["regex"],
                "target_label": r["targetLabel"],
                "replacement": r["replacement"],
            }
            for r in spec.get("metricRelabelings", [])
        ]
        assert relabel == want.get("metric_relabel_configs", [])
