"""Every PromQL expression the project ships, in a form Prometheus' query API accepts as is.

``all_expressions()`` lists the expressions of the recording rules, the alerts, the dashboard
panel targets and the dashboard variables, each as an :class:`Expression` ``(where, expr, kind)``:

* ``where``: file and location, for messages
  (``fsd_daemon/assets/grafana/dashboards/gpu-idleness.json: panel 5 "..." target A``);
* ``expr``: the expression, Grafana variables substituted (see :func:`substitute`);
* ``kind``: ``"record"``, ``"alert"``, ``"panel"`` or ``"variable"``.

Which kinds must return data once Prometheus has scraped the rollout (vLLM and SGLang) and GPU
exporter targets and evaluated the rules a few times: ``record``, ``panel`` and ``variable``.
``alert`` expressions return something only while their condition holds. A ``variable``
expression is the dashboard variable's ``label_values(SELECTOR, LABEL)`` rewritten as
``count by (LABEL) (SELECTOR{LABEL!=""})``: empty means the variable's drop-down is empty.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import yaml

REPO = Path(__file__).resolve().parent.parent
RULES_DIR = REPO / "fsd_daemon" / "assets" / "prometheus" / "rules"
DASHBOARDS_DIR = REPO / "fsd_daemon" / "assets" / "grafana" / "dashboards"

KINDS = ("record", "alert", "panel", "variable")

# Grafana's built-in variables, valued as Grafana would for a 5-minute range at a 15 s scrape
# interval ($__rate_interval is at least four scrape intervals).
BUILTIN_VARIABLES: Mapping[str, str] = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "5m",
    "__range_s": "300",
    "__range_ms": "300000",
}
# A dashboard variable set to "All" (allValue ".*"); dashboards use variables only in =~ matchers.
ALL_VALUE = ".*"

# $name, ${name}, ${name:format} and the deprecated [[name]].
_VARIABLE_RE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)")
_LABEL_VALUES_RE = re.compile(r"^\s*label_values\(\s*(.+)\s*,\s*([a-zA-Z_]\w*)\s*\)\s*$", re.S)


class Expression(NamedTuple):
    where: str
    expr: str
    kind: str


def rule_files() -> list[Path]:
    """The shipped rule files (not their unit tests), sorted."""
    return sorted(RULES_DIR.glob("*.yml"))


def rule_test_files() -> list[Path]:
    """The ``promtool test rules`` files, sorted."""
    return sorted((RULES_DIR / "tests").glob("*.yml"))


def dashboard_files() -> list[Path]:
    """The shipped dashboards, sorted."""
    return sorted(DASHBOARDS_DIR.glob("*.json"))


def substitute(expr: str, variables: Iterable[str], where: str = "") -> str:
    """Replace Grafana variables in ``expr``: built-ins by :data:`BUILTIN_VARIABLES`, the
    dashboard's own ``variables`` by :data:`ALL_VALUE`. An unknown variable raises ValueError."""
    own = set(variables)

    def replace(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group is not None)
        if name in BUILTIN_VARIABLES:
            return BUILTIN_VARIABLES[name]
        if name in own:
            return ALL_VALUE
        raise ValueError(f"{where}: unknown Grafana variable ${name} in {expr!r}")

    return _VARIABLE_RE.sub(replace, expr)


def label_values_to_promql(query: str) -> str:
    """``label_values(SELECTOR, LABEL)`` -> ``count by (LABEL) (SELECTOR{LABEL!=""})``."""
    match = _LABEL_VALUES_RE.match(query)
    if match is None:
        raise ValueError(f"not a label_values(SELECTOR, LABEL) query: {query!r}")
    selector, label = match.group(1).strip(), match.group(2)
    matcher = f'{label}!=""'
    if selector.endswith("}"):
        inner = selector[selector.index("{") + 1 : -1].strip()
        selector = (
            selector[: selector.index("{")] + "{" + ", ".join(filter(None, [inner, matcher])) + "}"
        )
    else:
        selector = f"{selector}{{{matcher}}}"
    return f"count by ({label}) ({selector})"


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def rule_expressions(path: Path) -> Iterator[Expression]:
    """(where, expr, "record" | "alert") for every rule of one rule file."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    for group in data["groups"]:
        for rule in group["rules"]:
            kind = "record" if "record" in rule else "alert"
            where = f"{_relative(path)}: group {group['name']}, {kind} {rule[kind]}"
            yield Expression(where, str(rule["expr"]).strip(), kind)


def iter_panels(panels: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def _variable_query(variable: Mapping[str, Any]) -> str:
    query = variable.get("query", "")
    if isinstance(query, Mapping):
        query = query.get("query", "")
    return str(query)


def dashboard_expressions(path: Path) -> Iterator[Expression]:
    """(where, expr, "panel" | "variable") for every panel target and query variable."""
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    variables = dashboard.get("templating", {}).get("list", [])
    names = [v["name"] for v in variables]
    for variable in variables:
        if variable.get("type") != "query":
            continue
        where = f"{_relative(path)}: variable {variable['name']}"
        expr = label_values_to_promql(_variable_query(variable))
        yield Expression(where, substitute(expr, names, where), "variable")
    for panel in iter_panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if not target.get("expr"):
                continue
            where = (
                f"{_relative(path)}: panel {panel.get('id')} {panel.get('title', '')!r} "
                f"target {target.get('refId', '?')}"
            )
            yield Expression(where, substitute(target["expr"], names, where).strip(), "panel")


def all_expressions(kinds: Iterable[str] | None = None) -> list[Expression]:
    """Every shipped expression, rules first, then dashboards; only ``kinds`` if given."""
    wanted = set(KINDS if kinds is None else kinds)
    unknown = wanted - set(KINDS)
    if unknown:
        raise ValueError(f"unknown kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    found: list[Expression] = []
    for path in rule_files():
        found.extend(rule_expressions(path))
    for path in dashboard_files():
        found.extend(dashboard_expressions(path))
    return [e for e in found if e.kind in wanted]
