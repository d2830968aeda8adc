"""components/monitoring and the base's metrics port: consistent names, scrapes admitted only from the
monitoring namespace, and alerts and dashboard queries that use only metrics the app exports.

The metric names come from the registry of app/ops/prometheus.py (what ``serve`` exposes), the names used
from the PromQL of the rendered PrometheusRule and dashboard, parsed here.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from app.ops.prometheus import metric_names

from .helpers import VARIANT, Render, container

METRICS_PORT = "metrics"
MONITORING_NAMESPACE = {"kubernetes.io/metadata.name": "monitoring"}
DASHBOARD_KEY = "objdet.json"
_NOT_METRICS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless"}
_NOT_METRICS |= {"offset", "inf", "nan"}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions, keywords,
    label names (in braces or by/without/on/ignoring lists), strings, ranges or numbers."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", expr):
        if expr[match.end() :].lstrip().startswith("(") or match.group(0).lower() in _NOT_METRICS:
            continue
        names.add(match.group(0))
    return names


def test_the_promql_parser_finds_metric_names() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (model, le) (rate(objdet_stage_seconds_bucket{stage="x"}[5m]))) > 1e-3 '
        "and on (pod) objdet_sessions offset 5m / ignoring(kind) up"
    )
    assert promql_metric_names(expr) == {"objdet_stage_seconds_bucket", "objdet_sessions", "up"}


def test_metric_names_are_the_registry_samples() -> None:
    names = metric_names()
    assert {"objdet_stage_seconds_bucket", "objdet_images_total", "objdet_failures_total"} <= names
    assert {"objdet_sessions", "objdet_model_weights_info", "process_resident_memory_bytes"} <= names
    assert "objdet_images" not in names and "objdet_stage_seconds" not in names  # families, not samples


def _rule(r: Render) -> dict[str, Any]:
    return r.get("PrometheusRule", "objdet")


def _dashboard(r: Render) -> dict[str, Any]:
    cm = r.get("ConfigMap", "objdet-dashboard")
    assert cm["metadata"]["labels"].get("grafana_dashboard") == "1", "the Grafana sidecar's discovery label"
    return json.loads(cm["data"][DASHBOARD_KEY])


@pytest.fixture
def variant(renders) -> Render:
    return renders[VARIANT]


def test_alerts_reference_only_exported_metrics(variant: Render) -> None:
    exported = metric_names()
    rules = [rule for group in _rule(variant)["spec"]["groups"] for rule in group["rules"]]
    assert 2 <= len(rules) <= 3 and all("alert" in rule for rule in rules)
    for rule in rules:
        used = promql_metric_names(rule["expr"])
        assert used and used <= exported, f"{rule['alert']}: {sorted(used - exported)} are not exported"
        assert re.fullmatch(r"\d+m", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"]
    alerts = {rule["alert"]: rule for rule in rules}
    assert 'state="loaded"' in alerts["ObjdetModelNotLoaded"]["expr"] and alerts["ObjdetModelNotLoaded"]["for"] == "5m"


def test_dashboard_is_a_grafana_dashboard_of_exported_metrics(variant: Render) -> None:
    exported, dashboard = metric_names(), _dashboard(variant)
    assert dashboard["title"] and dashboard["uid"] and isinstance(dashboard["schemaVersion"], int)
    panels = dashboard["panels"]
    assert panels and len({p["id"] for p in panels}) == len(panels)
    used: set[str] = set()
    for panel in panels:
        assert panel["title"] and panel["type"] and set(panel["gridPos"]) == {"x", "y", "w", "h"}, panel
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = promql_metric_names(target["expr"])
            assert names and names <= exported, f"{panel['title']}: {sorted(names - exported)} are not exported"
            used |= names
    # latency per model and stage, throughput, failures, sessions, slots
    wanted = {"objdet_stage_seconds_bucket", "objdet_images_total", "objdet_failures_total", "objdet_sessions"}
    assert wanted | {"objdet_inference_slots_in_use", "objdet_inference_slots_waiting"} <= used


def test_dashboard_namespace_is_chosen_from_what_prometheus_scraped(variant: Render, renders) -> None:
    """The namespace variable is a query over the scraped series, not a fixed name: the dashboard shows the
    overlays' namespaces (objdet, object-detection) and any other without an edit; every panel filters by it."""
    dashboard = _dashboard(variant)
    (var,) = [v for v in dashboard["templating"]["list"] if v["name"] == "namespace"]
    assert var["type"] == "query" and var["datasource"]["uid"] == "${datasource}", var
    query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
    m = re.fullmatch(r"label_values\((\w+),\s*namespace\)", query)
    assert m and m.group(1) in metric_names(), f"{query}: label_values of an exported metric's namespace label"
    assert "current" not in var and "options" not in var, "no namespace fixed in the file"
    assert var.get("refresh") in (1, 2), "refreshed on load or on time range change"
    overlays = {o["metadata"]["name"] for r in ("minikube", "prod") for o in renders[r].of_kind("Namespace")}
    templating = json.dumps(dashboard["templating"])
    for ns in overlays:  # neither a fixed choice nor a fixed filter
        assert f'"{ns}"' not in templating and f'namespace=\\"{ns}\\"' not in json.dumps(dashboard["panels"]), ns
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            assert 'namespace="$namespace"' in target["expr"], f"{panel['title']}: not filtered by $namespace"


def _metrics_service(r: Render) -> dict[str, Any]:
    return r.get("Service", "objdet-metrics")


def test_metrics_port_is_named_and_consistent(render: Render) -> None:
    """Container port `metrics` = OBJDET_METRICS_PORT, not Streamlit's; the objdet-metrics Service
    targets it by name; the app's Service does not carry it."""
    cfg = render.configmap()
    ports = {p["name"]: p for p in container(render.deployment)["ports"]}
    assert set(ports) == {"http", METRICS_PORT}
    assert ports[METRICS_PORT]["containerPort"] == int(cfg["OBJDET_METRICS_PORT"]) != int(cfg["STREAMLIT_SERVER_PORT"])
    svc = _metrics_service(render)
    assert svc["spec"]["type"] == "ClusterIP" and svc["metadata"]["labels"]["app.kubernetes.io/component"] == "metrics"
    assert [(p["name"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(METRICS_PORT, METRICS_PORT)]
    app = render.get("Service", "objdet")
    assert METRICS_PORT not in {p["name"] for p in app["spec"]["ports"]}
    assert METRICS_PORT not in {p.get("targetPort") for p in app["spec"]["ports"]}


def test_service_monitor_scrapes_the_metrics_service_only(variant: Render) -> None:
    monitor = variant.get("ServiceMonitor", "objdet")
    selector = monitor["spec"]["selector"]["matchLabels"]
    selected = [
        s["metadata"]["name"]
        for s in variant.of_kind("Service")
        if all(s["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())
    ]
    assert selected == ["objdet-metrics"]
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [METRICS_PORT]
    assert all(e.get("path", "/metrics") == "/metrics" for e in monitor["spec"]["endpoints"])
    assert "namespaceSelector" not in monitor["spec"], "the Service is in the ServiceMonitor's own namespace"


def test_only_the_monitoring_namespace_reaches_the_metrics_port(render: Render) -> None:
    np = render.get("NetworkPolicy", "objdet")
    rules = np["spec"]["ingress"]
    metrics_rules = [r for r in rules if any(p["port"] == METRICS_PORT for p in r.get("ports") or [])]
    assert len(metrics_rules) == 1
    (rule,) = metrics_rules
    assert [p["port"] for p in rule["ports"]] == [METRICS_PORT], "the scrape rule admits the metrics port only"
    assert rule.get("from") == [{"namespaceSelector": {"matchLabels": MONITORING_NAMESPACE}}]
    for other in rules:
        if other is not rule:
            assert other.get("ports"), "a rule without ports would admit the metrics port too"
            assert METRICS_PORT not in {p["port"] for p in other["ports"]}
