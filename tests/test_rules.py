"""The shipped Prometheus rules and Grafana dashboards, checked with the real promtool.

Rule files must pass ``promtool check rules`` and their ``promtool test rules`` unit tests;
every recording rule and alert must be exercised by a unit test; every PromQL expression the
project ships (rules, dashboard panels, dashboard variables: :mod:`tests.promql`) must parse;
dashboards must select their data source through the ``datasource`` variable and offer the
``cluster``, ``job`` and ``role`` variables. Whether the expressions return data is the
end-to-end test's question (a real Prometheus scraping simulated servers).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from fsd_daemon.mixin import names, rules
from tests import promql

REPO = promql.REPO
GRAFANA_DIR = REPO / "fsd_daemon" / "assets" / "grafana"
DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}
# level:metric:operations (https://prometheus.io/docs/practices/rules/).
RECORD_NAME_RE = re.compile(r"^[a-z_]+:[a-z0-9_]+:[a-z0-9_]+$")


def run_promtool(promtool: str, *args: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [promtool, *map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(map(str, args))} failed:\n{output}"
    return output


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_dashboard(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def rules_of(path: Path) -> list[dict[str, Any]]:
    return [rule for group in load_yaml(path)["groups"] for rule in group["rules"]]


RULE_FILES = promql.rule_files()
RULE_TEST_FILES = promql.rule_test_files()
DASHBOARDS = promql.dashboard_files()


def test_files_are_there() -> None:
    """Both rule files, their unit tests and both dashboards ship."""
    assert [p.name for p in RULE_FILES] == ["fsd-gpu.rules.yml", "fsd-rollout.rules.yml"]
    assert [p.name for p in RULE_TEST_FILES] == [
        "fsd-gpu.rules.test.yml",
        "fsd-rollout-engines.rules.test.yml",
        "fsd-rollout.rules.test.yml",
    ]
    assert [p.name for p in DASHBOARDS] == ["gpu-idleness.json", "rollout-overview.json"]


@pytest.mark.prometheus
@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(promtool: str, path: Path) -> None:
    """``promtool check rules`` accepts each rule file as shipped."""
    output = run_promtool(promtool, "check", "rules", path)
    assert "SUCCESS" in output


@pytest.mark.prometheus
@pytest.mark.parametrize("path", RULE_TEST_FILES, ids=lambda p: p.name)
def test_promtool_test_rules(promtool: str, path: Path) -> None:
    """The rules' unit tests (``promtool test rules``) pass."""
    output = run_promtool(promtool, "test", "rules", path.name, cwd=path.parent)
    assert "SUCCESS" in output


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_every_rule_is_unit_tested(path: Path) -> None:
    """Each rule file is loaded by its unit-test file; together with the other test files that
    load it (the engine shapes: fsd-rollout-engines.rules.test.yml) they evaluate every
    recording rule (``expr_test``) and every alert (``alert_rule_test``) at least once."""
    test_path = path.parent / "tests" / path.name.replace(".rules.yml", ".rules.test.yml")
    assert test_path.is_file(), f"{path.name} has no unit test file {test_path.name}"
    assert any(Path(f).name == path.name for f in load_yaml(test_path)["rule_files"])
    cases = [
        case
        for test_file in RULE_TEST_FILES
        if any(Path(f).name == path.name for f in load_yaml(test_file)["rule_files"])
        for case in load_yaml(test_file)["tests"]
    ]
    exprs = " ".join(t["expr"] for case in cases for t in case.get("promql_expr_test", []))
    alerts = {t["alertname"] for case in cases for t in case.get("alert_rule_test", [])}
    for rule in rules_of(path):
        if "record" in rule:
            assert re.search(rf"(?<![\w:]){re.escape(rule['record'])}(?![\w:])", exprs), (
                f"recording rule {rule['record']} is not evaluated by {test_path.name}"
            )
        else:
            assert rule["alert"] in alerts, (
                f"alert {rule['alert']} is not tested by {test_path.name}"
            )


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_rule_conventions(path: Path) -> None:
    """Recording rules are named level:metric:operations; alerts carry a severity (info: a
    known cause that needs no action now, e.g. a verl <= 0.5 server), a summary and a
    description."""
    for rule in rules_of(path):
        if "record" in rule:
            assert RECORD_NAME_RE.match(rule["record"]), rule["record"]
        else:
            severity = rule.get("labels", {}).get("severity")
            assert severity in ("info", "warning", "critical"), rule["alert"]
            annotations = rule.get("annotations", {})
            assert annotations.get("summary") and annotations.get("description"), rule["alert"]


def test_committed_rule_files_are_generated_from_code(tmp_path: Path) -> None:
    """The shipped rule files are exactly what ``fsd_daemon.mixin.rules`` generates: editing the
    YAML by hand, or the code without ``--write``, fails here. ``--check`` agrees, and
    ``--write`` into an empty directory produces files that ``--check`` then accepts."""
    assert rules.stale_files() == [], "run: python -m fsd_daemon.mixin.rules --write"
    assert rules.main(["--check"]) == 0
    assert rules.main(["--check", "--dir", str(tmp_path)]) == 1
    assert rules.main(["--write", "--dir", str(tmp_path)]) == 0
    assert rules.main(["--check", "--dir", str(tmp_path)]) == 0
    (tmp_path / "fsd-gpu.rules.yml").write_text("groups: []\n", encoding="utf-8")
    assert rules.stale_files(tmp_path) == ["fsd-gpu.rules.yml"]


@pytest.mark.parametrize("rule_file", rules.rule_files(), ids=lambda f: f.filename)
def test_rendered_yaml_loads_back_to_the_rule_data(rule_file: rules.RuleFile) -> None:
    """The hand-written YAML emitter (comments, block scalars) loses nothing: the file loads
    back to exactly the rules the code defines."""
    assert yaml.safe_load(rules.render(rule_file)) == rules.as_data(rule_file)


def test_rules_do_not_use_the_series_engine_label() -> None:
    """vLLM's own ``engine`` label is renamed ``exported_engine`` (the target label wins): no
    rule may depend on it, and none may read the renamed one either."""
    for expr in promql.all_expressions():
        assert "exported_engine" not in expr.expr, expr.where


def test_rules_cover_the_required_answers() -> None:
    """The issue's required rules exist: busy and idle fraction per GPU and per role, rollout
    load per replica, the long-tail indicator, and the three kinds of alert."""
    records = {r["record"] for p in RULE_FILES for r in rules_of(p) if "record" in r}
    alerts = {r["alert"]: r["expr"] for p in RULE_FILES for r in rules_of(p) if "alert" in r}
    assert {
        "gpu:fsd_gpu_busy:ratio_rate1m",
        "gpu:fsd_gpu_idle:ratio_rate1m",
        "gpu_role:fsd_gpu_busy:ratio_rate1m",
        "gpu_role:fsd_gpu_idle:ratio_rate1m",
        "cluster_role:fsd_gpu_busy:ratio_rate1m",
        "cluster_role:fsd_gpu_idle:ratio_rate1m",
        "replica:fsd_rollout_requests_running:sum",
        "replica:fsd_rollout_requests_waiting:sum",
        "replica:fsd_rollout_generation_tokens:rate1m",
        "cluster_job_role:fsd_rollout_replicas_busy:ratio",
    } <= records
    assert {"FsdRolloutGpusIdle", "FsdRolloutTargetDown", "FsdGpuExporterMissing"} <= set(alerts)
    assert "absent(" in alerts["FsdGpuExporterMissing"]


def test_rules_cover_missing_metrics_sleep_and_long_tail() -> None:
    """The two missing-metrics alerts name the verl key to set, the
    target-down alert leaves 404 servers out, asleep / awake-busy / awake-idle exist per server,
    per replica's GPUs and per job, and the long-tail series exist."""
    records = {r["record"] for p in RULE_FILES for r in rules_of(p) if "record" in r}
    alerts = {r["alert"]: r for p in RULE_FILES for r in rules_of(p) if "alert" in r}
    for state in names.GPU_STATES:
        assert {
            names.replica_engine_state(state),
            names.job_role_replicas_in_state(state),
            names.gpu_rollout_state_ratio(state),
            names.replica_rollout_state_gpus(state),
            names.job_rollout_state_gpus(state),
        } <= records
    assert {
        names.JOB_ROLE_GENERATION_TOKENS_P99,
        names.JOB_ROLE_MAX_TOKENS_P50,
        names.JOB_ROLE_TRUNCATED_RATIO,
        names.JOB_ROLE_ABORTED_RATIO,
        names.REPLICA_PREEMPTIONS_RATE,
        names.REPLICA_REQUESTS_PAUSED,
        names.JOB_ROLE_QUEUE_TIME_BUCKETS,
    } <= records
    route = alerts[names.ALERT_ROLLOUT_METRICS_ROUTE_MISSING]
    no_series = alerts[names.ALERT_ROLLOUT_NO_ENGINE_SERIES]
    for alert in (route, no_series):
        assert (
            "actor_rollout_ref.rollout.disable_log_stats=False"
            in alert["annotations"]["description"]
        )
    assert "actor_rollout_ref.rollout.prometheus.enable=True" in route["annotations"]["description"]
    assert names.DAEMON_METRICS_PROBE_STATUS in route["expr"]
    assert "unless" in alerts[names.ALERT_ROLLOUT_TARGET_DOWN]["expr"]


def test_rules_follow_the_target_labels() -> None:
    """The target labels of docs/upstream.md: role is rollout/reward/teacher only (no rule
    selects a prefill or decode role), every per-server aggregation keeps disaggregation and
    teacher, verl <= 0.5 targets (metrics_route="absent") are left out of the target-down alert
    and have an alert of their own. (What the sums answer is promtool's test:
    fsd-rollout.rules.test.yml, the disaggregated replica, the two teachers and the legacy
    target.)"""
    rollout = {
        r.get("record") or r["alert"]: r
        for r in rules_of(promql.RULES_DIR / "fsd-rollout.rules.yml")
    }
    gpu = rules_of(promql.RULES_DIR / "fsd-gpu.rules.yml")
    for rule in [*rollout.values(), *gpu]:
        assert not re.search(r"role=~?\"[^\"]*(prefill|decode)", rule["expr"]), rule
    for name, rule in rollout.items():
        if name.startswith("replica:"):
            for by_clause in re.findall(r"\bby \(([^)]*)\)", rule["expr"]):
                labels = {label.strip() for label in by_clause.split(",")}
                assert {names.DISAGGREGATION, names.TEACHER} <= labels, (name, by_clause)
    down = rollout[names.ALERT_ROLLOUT_TARGET_DOWN]["expr"]
    assert 'metrics_route!="absent"' in down
    too_old = rollout[names.ALERT_ROLLOUT_VERL_TOO_OLD]
    assert 'metrics_route="absent"' in too_old["expr"]
    assert "upgrade verl to >= 0.6 for metrics" in too_old["annotations"]["summary"]


@pytest.mark.prometheus
def test_every_expression_parses(promtool: str, tmp_path: Path) -> None:
    """Every shipped expression, Grafana variables substituted, is valid PromQL: all of them
    become recording rules of one file that ``promtool check rules`` must accept."""
    expressions = promql.all_expressions()
    assert {e.kind for e in expressions} == set(promql.KINDS)
    rules = [
        {"record": f"fsd_parse_check:expr:n{i}", "expr": e.expr} for i, e in enumerate(expressions)
    ]
    path = tmp_path / "all-expressions.rules.yml"
    path.write_text(
        yaml.safe_dump({"groups": [{"name": "parse", "rules": rules}]}), encoding="utf-8"
    )
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        output = result.stdout + result.stderr
        # promtool names the failing rule: ..., "fsd_parse_check:expr:n<i>": could not parse ...
        bad = [
            f"{e.where}: {e.expr}"
            for i, e in enumerate(expressions)
            if f'"fsd_parse_check:expr:n{i}"' in output
        ]
        pytest.fail("promtool rejects shipped expressions:\n" + "\n".join(bad) + "\n" + output)


def test_all_expressions_api() -> None:
    """``all_expressions()`` (used by the end-to-end test) lists rules first, then panels and
    variables, as (where, expr, kind), without Grafana variables left in."""
    expressions = promql.all_expressions()
    assert all(isinstance(e, promql.Expression) for e in expressions)
    kinds = [e.kind for e in expressions]
    assert kinds.index("panel") > max(i for i, k in enumerate(kinds) if k in ("record", "alert"))
    for e in expressions:
        assert e.where and e.expr.strip(), e
        assert "$" not in e.expr and "[[" not in e.expr, e
    assert promql.all_expressions(["variable"]) == [e for e in expressions if e.kind == "variable"]
    with pytest.raises(ValueError, match="unknown kinds"):
        promql.all_expressions(["nope"])


def test_substitute_and_label_values() -> None:
    """Grafana variables are replaced as Grafana would for "All"; unknown ones are an error;
    ``label_values`` becomes an instant query with the same answer set."""
    assert promql.substitute('rate(x{a=~"$v"}[$__rate_interval])', ["v"]) == 'rate(x{a=~".*"}[1m])'
    assert promql.substitute('x{a=~"${v:regex}"}', ["v"]) == 'x{a=~".*"}'
    with pytest.raises(ValueError, match="unknown Grafana variable"):
        promql.substitute('x{a=~"$w"}', ["v"])
    assert (
        promql.label_values_to_promql('label_values(up{job="gpu"}, cluster)')
        == 'count by (cluster) (up{job="gpu", cluster!=""})'
    )
    assert (
        promql.label_values_to_promql("label_values(up, role)") == 'count by (role) (up{role!=""})'
    )


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_uses_the_datasource_variable(path: Path) -> None:
    """Every panel and every query (panel targets, query variables) selects its data source
    through ``${datasource}``, a variable of type datasource for Prometheus: the dashboard
    imports into any Grafana, whatever its data sources are called."""
    dashboard = load_dashboard(path)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    ds = variables.get("datasource")
    assert ds is not None and ds["type"] == "datasource" and ds["query"] == "prometheus"
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"] == DATASOURCE_REF, f"variable {v['name']}"
    panels = list(promql.iter_panels(dashboard["panels"]))
    assert panels
    for panel in panels:
        assert panel.get("datasource") == DATASOURCE_REF, f"panel {panel.get('title')}"
        for target in panel.get("targets", []):
            assert target.get("datasource") == DATASOURCE_REF, (
                f"panel {panel.get('title')} target {target.get('refId')}"
            )
    # No leftover reference to a particular data source anywhere in the file.
    text = path.read_text(encoding="utf-8")
    uids = set(re.findall(r'"uid":\s*"([^"]*)"', text))
    assert uids <= {"${datasource}", dashboard["uid"]}, uids


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_variables_and_structure(path: Path) -> None:
    """The dashboard has the cluster, job and role variables (query variables with "All"),
    unique panel ids, a stable uid, and at least one query in every non-row panel."""
    dashboard = load_dashboard(path)
    assert dashboard["uid"].startswith("fsd-") and dashboard["title"].startswith("FSD / ")
    assert dashboard.get("id") is None
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    for name in ("cluster", "job", "role"):
        v = variables.get(name)
        assert v is not None, f"variable {name} missing"
        assert v["type"] == "query" and v["includeAll"] and v["allValue"] == ".*", name
    panels = list(promql.iter_panels(dashboard["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    for panel in panels:
        if panel["type"] != "row":
            assert panel.get("targets") and all(t.get("expr") for t in panel["targets"]), panel[
                "title"
            ]
            assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
    # The job and role filters reach the queries (cluster always does).
    exprs = " ".join(t["expr"] for p in panels for t in p.get("targets", []))
    for name in ("cluster", "job", "role"):
        assert f"${name}" in exprs, f"no panel filters by ${name}"


def test_dashboards_cover_the_required_panels() -> None:
    """Rollout overview: targets up per job, running and waiting per replica, throughput,
    KV cache, TTFT and inter-token latency. GPU idleness: busy fraction per GPU and role,
    idle rollout GPU-hours, reserved-but-idle GPUs."""
    wanted = {
        "rollout-overview.json": [
            "up{",
            "replica:fsd_rollout_requests_running:sum",
            "replica:fsd_rollout_requests_waiting:sum",
            "replica:fsd_rollout_generation_tokens:rate1m",
            "replica:fsd_rollout_kv_cache_usage:ratio",
            "cluster_job_role:fsd_rollout_time_to_first_token_seconds_bucket:rate1m",
            "cluster_job_role:fsd_rollout_inter_token_latency_seconds_bucket:rate1m",
        ],
        "gpu-idleness.json": [
            "gpu_role:fsd_gpu_busy:ratio_rate1m",
            "cluster_job_role:fsd_gpu_busy:ratio_rate1m",
            "fsd_gpu_rollout_idle_gpu",
            'state="reserved"',
        ],
    }
    for path in DASHBOARDS:
        exprs = " ".join(e.expr for e in promql.dashboard_expressions(path))
        for needle in wanted[path.name]:
            assert needle in exprs, f"{path.name}: no query uses {needle}"


def test_grafana_provisioning() -> None:
    """The provisioning files are valid: one Prometheus data source, one file provider for
    the dashboards."""
    ds = load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml")
    assert ds["apiVersion"] == 1
    [source] = ds["datasources"]
    assert source["type"] == "prometheus" and source["url"].startswith("http")
    dashboards = load_yaml(GRAFANA_DIR / "provisioning" / "dashboards" / "fsd.yml")
    [provider] = dashboards["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]
