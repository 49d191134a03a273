"""The Grafana dashboards, built with Grafana's Foundation SDK (``grafana-foundation-sdk``).

``python -m fsd_daemon.mixin.dashboards --write`` regenerates the committed JSON under
``fsd_daemon/assets/grafana/dashboards``; ``--check`` exits 1 when a committed file differs
(tests/test_dashboards.py runs it). The SDK is needed only to generate: the package ships the
JSON, so users never install it.

Every panel picks its data source through the ``datasource`` variable, and filters by the
``cluster``, ``job`` and ``role`` variables (``=~`` matchers: "All" is ``.*``). Every metric,
recording-rule and label name in a query, legend or table column comes from
:mod:`fsd_daemon.mixin.names`, the names the rules (:mod:`fsd_daemon.mixin.rules`) record;
the small PromQL helpers below (``sel``, ``by``, ``rate``, ``quantiles``, ``legend``) put them
together. Descriptions are prose for the reader and may spell names out.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import (
    common,
    dashboard,
    prometheus,
    stat,
    statetimeline,
    table,
    timeseries,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_model
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import prometheus as prometheus_model

from fsd_daemon.assets import DASHBOARDS_DIR
from fsd_daemon.mixin import names
from fsd_daemon.recognition import verl

DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
Grid = tuple[int, int, int, int]  # h, w, x, y
RATE_WINDOW = "[$__rate_interval]"


# --- PromQL pieces: every label and metric name comes from ``names`` ---------------------------
def matches_variable(label: str, variable: str) -> str:
    """``cluster=~"$cluster"``: a regex matcher, so that the variable's "All" (``.*``) works."""
    return f'{label}=~"${variable}"'


def equals(label: str, value: str) -> str:
    return f'{label}="{value}"'


def matches(label: str, regex: str) -> str:
    return f'{label}=~"{regex}"'


# The dashboard variables (Grafana's template variables, $cluster etc.), one per label filtered.
VAR_CLUSTER = "cluster"
VAR_JOB = "job"
VAR_ROLE = "role"
IN_CLUSTER = matches_variable(names.CLUSTER, VAR_CLUSTER)
IN_JOB = matches_variable(names.RAY_JOB_ID, VAR_JOB)
IN_ROLE = matches_variable(names.ROLE, VAR_ROLE)
# The matchers every rollout panel applies.
ROLLOUT = (IN_CLUSTER, IN_JOB, IN_ROLE)
# The per-job GPU records have no role label.
PER_JOB = (IN_CLUSTER, IN_JOB)
BY_JOB_ROLE = (names.RAY_JOB_ID, names.ROLE)
BY_REPLICA = (*BY_JOB_ROLE, names.REPLICA)


def sel(metric: str, *matchers: str) -> str:
    """``metric{m1, m2}``; the panels put exact matchers before the variables' matchers."""
    return f"{metric}{{{', '.join(matchers)}}}"


def by(aggregation: str, labels: Sequence[str], expr: str) -> str:
    """``sum by (a, b) (expr)``."""
    return f"{aggregation} by ({names.by(labels)}) ({expr})"


def rate(selector: str) -> str:
    return f"rate({selector}{RATE_WINDOW})"


def histogram_quantile(quantile: float, buckets: str) -> str:
    return f"histogram_quantile({quantile}, {buckets})"


def label_values(selector: str, label: str) -> str:
    """A variable query: the values ``label`` takes on the series ``selector`` picks."""
    return f"label_values({selector}, {label})"


def columns(*names_in_order: str) -> dict[str, int]:
    """A table's column order for Grafana's organize transformation."""
    return {name: i for i, name in enumerate(names_in_order)}


def legend(*labels: str) -> str:
    """``legend(names.RAY_JOB_ID, names.ROLE)`` -> ``"{{ray_job_id}} {{role}}"``."""
    return " ".join(f"{{{{{label}}}}}" for label in labels)


JOB_ROLE_LEGEND = legend(*BY_JOB_ROLE)
REPLICA_LEGEND = legend(*BY_REPLICA)
ENGINE_REPLICA_LEGEND = f"{REPLICA_LEGEND} ({legend(names.ENGINE)})"
# A rollout server: its replica, engine and actor (a disaggregated replica has several).
SERVER_LEGEND = f"{REPLICA_LEGEND} ({legend(names.ENGINE)}, {legend(names.ACTOR_NAME)})"


class Target:
    def __init__(self, expr: str, legend: str = "") -> None:
        self.expr = expr
        self.legend = legend


def q(expr: str, legend: str = "") -> Target:
    return Target(expr, legend)


def quantiles(buckets: str, levels: Sequence[float], legend_text: str) -> list[Target]:
    """One target per quantile of a histogram's bucket rates, legends ``p50 <legend_text>``."""
    return [q(histogram_quantile(p, buckets), f"p{round(p * 100)} {legend_text}") for p in levels]


def _targets(panel: Any, targets: Sequence[Target], *, instant: bool, table_format: bool) -> None:
    for i, t in enumerate(targets):
        query = (
            prometheus.Dataquery()
            .datasource(DATASOURCE)
            .expr(t.expr)
            .ref_id(chr(ord("A") + i))
            .editor_mode(prometheus_model.QueryEditorMode.CODE)
            .format(
                prometheus_model.PromQueryFormat.TABLE
                if table_format
                else prometheus_model.PromQueryFormat.TIME_SERIES
            )
        )
        if t.legend:
            query = query.legend_format(t.legend)
        query = query.instant() if instant else query.range()
        panel.with_target(query)


def _common(
    panel: Any,
    title: str,
    description: str,
    grid: Grid,
    unit: str | None,
    min: float | None,
    max: float | None,
    decimals: int | None,
) -> Any:
    h, w, x, y = grid
    panel = panel.title(title).datasource(DATASOURCE).grid_pos(model.GridPos(h=h, w=w, x=x, y=y))
    if description:
        panel = panel.description(description)
    if unit is not None:
        panel = panel.unit(unit)
    if min is not None:
        panel = panel.min(min)
    if max is not None:
        panel = panel.max(max)
    if decimals is not None:
        panel = panel.decimals(decimals)
    return panel


def _thresholds(steps: Sequence[tuple[str, float | None]]) -> Any:
    return (
        dashboard.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(color=c, value=v) for c, v in steps])
    )


def ratio_panel(
    title: str, description: str, targets: Sequence[Target], *, grid: Grid, **options: Any
) -> Any:
    """A time series of 0-1 ratios, shown as percentages on a 0-100% axis."""
    return timeseries_panel(
        title, description, targets, grid=grid, unit="percentunit", min=0, max=1, **options
    )


def timeseries_panel(
    title: str,
    description: str,
    targets: Sequence[Target],
    *,
    grid: Grid,
    unit: str | None = None,
    min: float | None = None,
    max: float | None = None,
    decimals: int | None = None,
    stacked: bool = False,
) -> Any:
    panel = _common(timeseries.Panel(), title, description, grid, unit, min, max, decimals)
    panel = (
        panel.legend(
            common.VizLegendOptions()
            .display_mode(common_model.LegendDisplayMode.TABLE)
            .placement(common_model.LegendPlacement.RIGHT)
            .show_legend(True)
            .calcs(["lastNotNull", "max"])
        )
        .tooltip(
            common.VizTooltipOptions()
            .mode(common_model.TooltipDisplayMode.MULTI)
            .sort(common_model.SortOrder.DESCENDING)
        )
        .draw_style(common_model.GraphDrawStyle.LINE)
        .line_width(1)
        .fill_opacity(20 if stacked else 0)
        .show_points(common_model.VisibilityMode.NEVER)
        .span_nulls(False)
        .stacking(
            common.StackingConfig()
            .mode(common_model.StackingMode.NORMAL if stacked else common_model.StackingMode.NONE)
            .group("A")
        )
    )
    _targets(panel, targets, instant=False, table_format=False)
    return panel


def stat_panel(
    title: str,
    description: str,
    targets: Sequence[Target],
    *,
    grid: Grid,
    unit: str | None = None,
    min: float | None = None,
    max: float | None = None,
    decimals: int | None = None,
    thresholds: Sequence[tuple[str, float | None]] = (),
    text_mode: str = "value_and_name",
) -> Any:
    panel = _common(stat.Panel(), title, description, grid, unit, min, max, decimals)
    panel = (
        panel.color_scheme(dashboard.FieldColor().mode(model.FieldColorModeId.THRESHOLDS))
        .thresholds(_thresholds(thresholds or [("blue", None)]))
        .color_mode(common_model.BigValueColorMode.VALUE)
        .graph_mode(common_model.BigValueGraphMode.NONE)
        .justify_mode(common_model.BigValueJustifyMode.AUTO)
        .orientation(common_model.VizOrientation.AUTO)
        .text_mode(common_model.BigValueTextMode(text_mode))
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False))
    )
    _targets(panel, targets, instant=True, table_format=False)
    return panel


def table_panel(
    title: str,
    description: str,
    targets: Sequence[Target],
    *,
    grid: Grid,
    transformations: Sequence[dict[str, Any]],
    overrides: Sequence[dict[str, Any]],
    sort_by: Sequence[dict[str, Any]],
    unit: str | None = "short",
    min: float | None = None,
    max: float | None = None,
    decimals: int | None = None,
) -> Any:
    panel = _common(table.Panel(), title, description, grid, unit, min, max, decimals)
    panel = (
        panel.cell_height(common_model.TableCellHeight.SM)
        .footer(common.TableFooterOptions().show(False))
        .show_header(True)
        .sort_by(
            [
                common.TableSortByFieldState().display_name(s["displayName"]).desc(s["desc"])
                for s in sort_by
            ]
        )
    )
    for t in transformations:
        panel = panel.with_transformation(
            model.DataTransformerConfig(id_val=t["id"], options=t["options"])
        )
    for o in overrides:
        panel = panel.with_override(
            model.MatcherConfig(id_val=o["matcher"]["id"], options=o["matcher"]["options"]),
            [model.DynamicConfigValue(id_val=p["id"], value=p["value"]) for p in o["properties"]],
        )
    _targets(panel, targets, instant=True, table_format=True)
    return panel


def _up_down_cells(matcher: str, options: str) -> dict[str, Any]:
    """A table override: the matched 0/1 columns shown as red DOWN / green UP cells."""
    up_down = {
        "0": {"color": "red", "index": 0, "text": "DOWN"},
        "1": {"color": "green", "index": 1, "text": "UP"},
    }
    return {
        "matcher": {"id": matcher, "options": options},
        "properties": [
            {"id": "mappings", "value": [{"type": "value", "options": up_down}]},
            {"id": "custom.cellOptions", "value": {"type": "color-background"}},
        ],
    }


def state_panel(
    title: str,
    description: str,
    targets: Sequence[Target],
    *,
    grid: Grid,
    states: Sequence[tuple[int, str, str]],
) -> Any:
    """A state timeline: each series a lane, each value (state number, text, colour)."""
    panel = _common(statetimeline.Panel(), title, description, grid, None, None, None, None)
    mapping = model.ValueMap(
        options={
            str(v): model.ValueMappingResult(text=text, color=colour, index=i)
            for i, (v, text, colour) in enumerate(states)
        }
    )
    panel = panel.mappings([mapping]).show_value(common_model.VisibilityMode.NEVER)
    _targets(panel, targets, instant=False, table_format=False)
    return panel


def row(title: str, *, y: int) -> Any:
    return (
        dashboard.Row(title)
        .datasource(DATASOURCE)
        .collapsed(False)
        .grid_pos(model.GridPos(h=1, w=24, x=0, y=y))
    )


def variable(name: str, label: str, query: str) -> Any:
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        # The object form Grafana's Prometheus variable editor saves (qryType 1: a
        # label_values query), so the UI opens it in that editor.
        .query(
            {"qryType": 1, "query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"}
        )
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
    )


def sleep_state_panels(y: int) -> list[Any]:
    """Asleep is not idle. vLLM reports ``vllm:engine_sleep_state``: awake = 1
    while awake; weights_offloaded / discard_all = 1 while asleep at that level (verl puts
    rollout engines to sleep while the trainer has the GPUs in colocated training)."""
    awake = by(
        "max",
        BY_REPLICA,
        sel(names.VLLM_SLEEP_STATE, equals(names.SLEEP_STATE, names.SLEEP_AWAKE), *ROLLOUT),
    )
    running = by("max", BY_REPLICA, sel(names.REPLICA_REQUESTS_RUNNING, *ROLLOUT))
    busy = f"({running} > bool 0)"
    idle = f"({running} == bool 0)"
    per_replica = f"on ({names.by(BY_REPLICA)})"
    job = legend(names.RAY_JOB_ID)
    return [
        row("Asleep, busy or idle (vLLM sleep state)", y=y),
        state_panel(
            "Replica state: asleep, awake and busy, awake and idle",
            "Per vLLM rollout replica: asleep (its GPUs lent to the trainer: not idle), awake "
            "and running requests, or awake with nothing to do (the idle rollout capacity). "
            "From vllm:engine_sleep_state and the running requests. SGLang reports no sleep "
            "state and is not shown.",
            [q(f"{awake} * (1 + {busy})", REPLICA_LEGEND)],
            grid=(9, 12, 0, y + 1),
            states=[
                (0, "asleep", "#9e9e9e"),
                (1, "awake, idle", "orange"),
                (2, "awake, busy", "blue"),
            ],
        ),
        timeseries_panel(
            "vLLM replicas asleep, busy, idle per job",
            "How many vLLM rollout replicas of each job are asleep, awake and busy, or awake "
            "and idle. Only the last is rollout capacity that could be given back.",
            [
                q(by("sum", [names.RAY_JOB_ID], f"1 - {awake}"), f"{job} asleep"),
                q(
                    by("sum", [names.RAY_JOB_ID], f"{awake} * {per_replica} {busy}"),
                    f"{job} awake, busy",
                ),
                q(
                    by("sum", [names.RAY_JOB_ID], f"{awake} * {per_replica} {idle}"),
                    f"{job} awake, idle",
                ),
            ],
            grid=(9, 12, 12, y + 1),
            unit="short",
            min=0,
            decimals=0,
            stacked=True,
        ),
    ]


def long_tail_cause_panels(y: int) -> list[Any]:
    """What makes a step's tail long: long responses (up to max_tokens),
    truncations and aborts, preemptions/retractions, queueing, SGLang's paused requests."""
    by_job_role_bound = (*BY_JOB_ROLE, names.HISTOGRAM_BOUND)

    def job_role_buckets(histogram: str) -> str:
        return by("sum", by_job_role_bound, rate(sel(names.bucket(histogram), *ROLLOUT)))

    truncated_or_aborted = matches(
        names.FINISHED_REASON, f"{names.FINISHED_LENGTH}|{names.FINISHED_ABORT}"
    )

    return [
        row("What makes the tail long", y=y),
        timeseries_panel(
            "Response length (p50, p99) and max_tokens (p99)",
            "Generated tokens per finished request, and the max_tokens requests asked for: a "
            "p99 close to max_tokens means the tail is requests running to the limit.",
            [
                *quantiles(
                    job_role_buckets(names.VLLM_GENERATION_TOKENS_HISTOGRAM),
                    (0.5, 0.99),
                    f"length {JOB_ROLE_LEGEND}",
                ),
                *quantiles(
                    job_role_buckets(names.VLLM_MAX_TOKENS_HISTOGRAM),
                    (0.99,),
                    f"max_tokens {JOB_ROLE_LEGEND}",
                ),
            ],
            grid=(8, 12, 0, y + 1),
            unit="short",
            min=0,
        ),
        timeseries_panel(
            "Truncated and aborted requests per second",
            'vLLM requests that finished at max_tokens (finished_reason="length") or were '
            'aborted (finished_reason="abort", e.g. when verl puts the engine to sleep).',
            [
                q(
                    by(
                        "sum",
                        (*BY_JOB_ROLE, names.FINISHED_REASON),
                        rate(sel(names.VLLM_REQUEST_SUCCESS, truncated_or_aborted, *ROLLOUT)),
                    ),
                    legend(*BY_JOB_ROLE, names.FINISHED_REASON),
                )
            ],
            grid=(8, 12, 12, y + 1),
            unit="reqps",
            min=0,
        ),
        timeseries_panel(
            "Preemptions (vLLM) and retractions (SGLang) per second",
            "Requests pushed out of the KV cache and recomputed later: each one lengthens the "
            "step of the replica it ran on.",
            [
                q(
                    by(
                        "sum",
                        (*BY_REPLICA, names.ENGINE),
                        sel(names.REPLICA_PREEMPTIONS_RATE, *ROLLOUT),
                    ),
                    ENGINE_REPLICA_LEGEND,
                ),
            ],
            grid=(8, 12, 0, y + 9),
            unit="short",
            min=0,
        ),
        timeseries_panel(
            "Queue time (p90)",
            "Time requests waited before the engine scheduled them: a replica that gets more "
            "than it can run at once queues, and finishes last.",
            [
                q(
                    histogram_quantile(0.9, job_role_buckets(names.VLLM_QUEUE_TIME)),
                    f"vLLM {JOB_ROLE_LEGEND}",
                ),
                q(
                    histogram_quantile(0.9, job_role_buckets(names.SGLANG_QUEUE_TIME)),
                    f"SGLang {JOB_ROLE_LEGEND}",
                ),
            ],
            grid=(8, 12, 12, y + 9),
            unit="s",
            min=0,
        ),
        timeseries_panel(
            "SGLang paused requests per replica",
            "Requests SGLang paused (sglang:num_paused_reqs), e.g. while weights are updated "
            "in fully asynchronous training.",
            [
                q(
                    by("sum", BY_REPLICA, sel(names.REPLICA_REQUESTS_PAUSED, *ROLLOUT)),
                    REPLICA_LEGEND,
                )
            ],
            grid=(8, 24, 0, y + 17),
            unit="short",
            min=0,
            decimals=0,
        ),
    ]


def engine_report_panels(y: int) -> list[Any]:
    """What the engines report about themselves (fsd_daemon/recognition/engines.py): prefix-cache
    hits,
    speculative decoding, prefill versus decode time, and the engine's own idle time beside
    its GPUs' idle time."""
    job_role_engine = f"{JOB_ROLE_LEGEND} ({legend(names.ENGINE)})"
    gpu_idle = by(
        "avg",
        names.GPU_OWNER_JOIN,
        sel(names.GPU_ROLE_IDLE_RATIO, IN_CLUSTER, IN_JOB, IN_ROLE),
    )
    engine_idle = sel(names.ROLLOUT_REPLICA_ENGINE_IDLE_RATIO, *ROLLOUT)
    replica = legend(names.RAY_JOB_ID, names.REPLICA)
    return [
        row("What the engines report: caches, speculation, phases, idle time", y=y),
        ratio_panel(
            "Prefix-cache hit rate per replica",
            "Share of prompt tokens served from the prefix cache (vLLM prefix_cache_hits / "
            "prefix_cache_queries over 1m; SGLang its own cache_hit_rate). GRPO sends every "
            "prompt n times: the later samples should hit. A low rate means prompts are "
            "recomputed (cache too small, or requests of one prompt spread over replicas).",
            [q(sel(names.REPLICA_PREFIX_CACHE_HIT_RATIO, *ROLLOUT), SERVER_LEGEND)],
            grid=(8, 12, 0, y + 1),
        ),
        ratio_panel(
            "Speculative decoding: acceptance rate",
            "Share of draft tokens (e.g. MTP) the target model accepted, per job, role and "
            "engine (vLLM spec_decode_num_accepted_tokens / num_draft_tokens; SGLang "
            "spec_accept_rate). Only engines running speculative decoding appear.",
            [q(sel(names.JOB_ROLE_SPEC_ACCEPTANCE_RATIO, *ROLLOUT), job_role_engine)],
            grid=(8, 12, 12, y + 1),
        ),
        timeseries_panel(
            "Speculative decoding: tokens per step",
            "Tokens each decoding step yields with speculation (1 + accepted draft tokens per "
            "draft; SGLang spec_accept_length). 1 means the drafts bring nothing.",
            [q(sel(names.JOB_ROLE_SPEC_ACCEPT_LENGTH, *ROLLOUT), job_role_engine)],
            grid=(8, 12, 0, y + 9),
            unit="short",
            min=1,
            decimals=2,
        ),
        timeseries_panel(
            "Prefill versus decode time per request",
            "Mean seconds a finished request spent in prefill and in decode (vLLM "
            "request_prefill_time_seconds, request_decode_time_seconds). RL rollouts are "
            "decode-bound: long decode with short prefill is the long responses of the tail.",
            [
                q(sel(names.JOB_ROLE_PREFILL_TIME_MEAN, *ROLLOUT), f"prefill {job_role_engine}"),
                q(sel(names.JOB_ROLE_DECODE_TIME_MEAN, *ROLLOUT), f"decode {job_role_engine}"),
            ],
            grid=(8, 12, 12, y + 9),
            unit="s",
            min=0,
        ),
        ratio_panel(
            "Engine idle versus GPU idle per replica",
            "Per rollout replica: the fraction of time the engine itself had no request to run "
            "(SGLang >= 0.5.23 scheduler_idle_seconds_total) beside the fraction of time its "
            "GPUs ran no kernel (fsd-gpu-exporter). GPU idle well above engine idle: the "
            "engine has work but the GPU waits (CPU scheduling, weight sync, network); both "
            "high: the replica has nothing to do (the long tail on other replicas).",
            [
                q(by("avg", (names.RAY_JOB_ID, names.REPLICA), engine_idle), f"engine {replica}"),
                q(
                    f"{gpu_idle}\nand on ({names.by(names.GPU_OWNER_JOIN)})\n{engine_idle}",
                    f"GPU {replica}",
                ),
            ],
            grid=(8, 24, 0, y + 17),
        ),
    ]


def _dashboard(
    title: str,
    uid: str,
    description: str,
    tags: list[str],
    link: tuple[str, str],
    variables: list[Any],
    panels: list[Any],
) -> dict[str, Any]:
    builder = (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(tags)
        .editable()
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .refresh("30s")
        .time("now-3h", "now")
        .timezone("")
        .link(
            dashboard.DashboardLink(link[0])
            .type(model.DashboardLinkType.LINK)
            .url(link[1])
            .icon("dashboard")
            .include_vars(True)
            .keep_time(True)
            .as_dropdown(False)
            .target_blank(False)
            .tags([])
            .tooltip("")
        )
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
    )
    for v in variables:
        builder = builder.with_variable(v)
    for panel_id, panel in enumerate(panels, start=1):
        panel = panel.id(panel_id)
        builder = (
            builder.with_row(panel)
            if isinstance(panel, dashboard.Row)
            else builder.with_panel(panel)
        )
    doc: dict[str, Any] = json.loads(JSONEncoder(sort_keys=True).encode(builder.build()))
    return doc


def rollout_overview() -> dict[str, Any]:
    rollout_job = equals(names.JOB, names.JOB_ROLLOUT)
    # Targets fsd-daemon writes (per cluster) and the daemon itself (no cluster label).
    target_jobs = matches(names.JOB, "|".join(names.TARGET_JOBS))
    daemon_job = equals(names.JOB, names.JOB_DAEMON)

    def per_scrape_job(aggregation: str) -> str:
        return (
            f"{by(aggregation, [names.JOB], sel(names.UP, target_jobs, IN_CLUSTER))} or "
            f"{by(aggregation, [names.JOB], sel(names.UP, daemon_job))}"
        )

    variables = [
        variable(VAR_CLUSTER, "Cluster", label_values(sel(names.UP, rollout_job), names.CLUSTER)),
        variable(
            VAR_JOB,
            "Ray job",
            label_values(sel(names.UP, rollout_job, IN_CLUSTER), names.RAY_JOB_ID),
        ),
        variable(VAR_ROLE, "Role", label_values(sel(names.UP, rollout_job, *PER_JOB), names.ROLE)),
    ]
    panels = [
        row("Targets", y=0),
        stat_panel(
            "Targets up per scrape job",
            (
                "Targets answering Prometheus, per scrape job: rollout (vLLM/SGLang servers "
                "from rollout.json), gpu (fsd-gpu-exporter on every node), ray (Ray's node "
                "metrics) and fsd_daemon (the daemon's own metrics). Compare with the total to "
                "see targets that are down."
            ),
            [
                q(per_scrape_job("sum"), f"{legend(names.JOB)} up"),
                q(per_scrape_job("count"), f"{legend(names.JOB)} total"),
            ],
            grid=(7, 8, 0, 1),
            unit="short",
            thresholds=[("blue", None)],
        ),
        table_panel(
            "Rollout servers",
            (
                "Every rollout target fsd-daemon wrote into rollout.json and whether Prometheus "
                "can scrape it. A server that is down but still listed is alive in Ray and not "
                "answering HTTP."
            ),
            [q(sel(names.UP, rollout_job, *ROLLOUT))],
            grid=(7, 16, 8, 1),
            unit="short",
            transformations=[
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {
                            "Time": True,
                            names.METRIC_NAME: True,
                            names.JOB: True,
                            names.CLUSTER: True,
                            names.NODE_ID: True,
                            names.RAY_NAMESPACE: True,
                        },
                        "indexByName": columns(
                            *BY_REPLICA,
                            names.ENGINE,
                            names.ACTOR_NAME,
                            names.NODE_IP,
                            names.INSTANCE,
                            "Value",
                        ),
                        "renameByName": {
                            "Value": "up",
                            names.RAY_JOB_ID: "Ray job",
                            names.ACTOR_NAME: "actor",
                        },
                    },
                }
            ],
            overrides=[_up_down_cells("byName", "up")],
            sort_by=[{"desc": False, "displayName": "up"}],
        ),
        row("Load per replica: the long tail", y=8),
        timeseries_panel(
            "Running requests per replica",
            (
                "Requests each rollout server is generating (vllm:num_requests_running summed "
                "over engines, sglang:num_running_reqs of one tensor-parallel rank summed over "
                "dp ranks). At the end of a rollout batch most replicas drop to zero while a "
                "few keep running: that is the long tail."
            ),
            [q(sel(names.REPLICA_REQUESTS_RUNNING, *ROLLOUT), SERVER_LEGEND)],
            grid=(9, 12, 0, 9),
            unit="short",
            min=0,
            decimals=0,
        ),
        timeseries_panel(
            "Waiting requests per replica",
            (
                "Requests queued in each rollout server (vllm:num_requests_waiting, "
                "sglang:num_queue_reqs). A queue on some replicas while others are idle means "
                "the load balancer is uneven."
            ),
            [q(sel(names.REPLICA_REQUESTS_WAITING, *ROLLOUT), SERVER_LEGEND)],
            grid=(9, 12, 12, 9),
            unit="short",
            min=0,
            decimals=0,
        ),
        ratio_panel(
            "Share of replicas still running requests",
            (
                "Per Ray job and role: replicas with at least one running request / all "
                "replicas. 100% = all busy, 0% = all idle; a low non-zero value that lasts is "
                "the long tail keeping the other GPUs waiting."
            ),
            [q(sel(names.JOB_ROLE_REPLICAS_BUSY_RATIO, *ROLLOUT), JOB_ROLE_LEGEND)],
            grid=(8, 12, 0, 18),
        ),
        timeseries_panel(
            "Running requests: busiest replica / mean",
            (
                "Per Ray job and role: the running requests of the busiest replica divided by "
                "the mean over replicas. 1 = even load; the number of replicas = one replica "
                "has all the work; 0 = no work anywhere."
            ),
            [q(sel(names.JOB_ROLE_REQUESTS_RUNNING_MAX_OVER_AVG, *ROLLOUT), JOB_ROLE_LEGEND)],
            grid=(8, 12, 12, 18),
            unit="short",
            min=0,
            decimals=2,
        ),
        row("Throughput and caches", y=26),
        timeseries_panel(
            "Generation throughput per replica",
            (
                "Generated tokens per second of each rollout server (rate of "
                "vllm:generation_tokens_total, sglang:generation_tokens_total over 1m), "
                "stacked: the top line is the job's total."
            ),
            [q(sel(names.REPLICA_GENERATION_TOKENS_RATE, *ROLLOUT), ENGINE_REPLICA_LEGEND)],
            grid=(8, 12, 0, 27),
            unit="short",
            min=0,
            stacked=True,
        ),
        timeseries_panel(
            "Generation throughput per job",
            "Generated tokens per second per Ray job and role, all replicas together.",
            [q(sel(names.JOB_ROLE_GENERATION_TOKENS_RATE, *ROLLOUT), JOB_ROLE_LEGEND)],
            grid=(8, 12, 12, 27),
            unit="short",
            min=0,
        ),
        ratio_panel(
            "KV-cache usage per replica",
            (
                "Fraction of the KV cache in use (vllm:kv_cache_usage_perc, sglang:token_usage; "
                "the fullest engine or rank of each server). Near 100% the engine preempts or "
                "queues requests."
            ),
            [q(sel(names.REPLICA_KV_CACHE_USAGE, *ROLLOUT), ENGINE_REPLICA_LEGEND)],
            grid=(8, 12, 0, 35),
        ),
        timeseries_panel(
            "Finished requests per second per replica",
            (
                "Requests completed per second by each rollout server: vLLM "
                "vllm:request_success_total (all finished_reason values), SGLang "
                "sglang:num_requests_total (streaming and non-streaming together). Servers that "
                "stop finishing requests while others still do are the long tail."
            ),
            [q(sel(names.REPLICA_REQUESTS_FINISHED_RATE, *ROLLOUT), SERVER_LEGEND)],
            grid=(8, 12, 12, 35),
            unit="reqps",
            min=0,
        ),
        row("Latency", y=43),
        timeseries_panel(
            "Time to first token (p50, p90, p99)",
            (
                "Time to first token percentiles per Ray job, role and engine, from the vLLM "
                "and SGLang histograms (vllm:time_to_first_token_seconds, "
                "sglang:time_to_first_token_seconds). Long TTFT with a full queue means too few "
                "replicas; with an empty queue, long prompts or prefill contention."
            ),
            quantiles(
                sel(names.JOB_ROLE_TTFT_BUCKETS, *ROLLOUT),
                (0.5, 0.9, 0.99),
                f"{JOB_ROLE_LEGEND} ({legend(names.ENGINE)})",
            ),
            grid=(9, 12, 0, 44),
            unit="s",
            min=0,
        ),
        timeseries_panel(
            "Inter-token latency (p50, p90, p99)",
            (
                "Inter-token latency percentiles per Ray job, role and engine "
                "(vllm:inter_token_latency_seconds, sglang:inter_token_latency_seconds): the "
                "decode speed each request sees."
            ),
            quantiles(
                sel(names.JOB_ROLE_ITL_BUCKETS, *ROLLOUT),
                (0.5, 0.9, 0.99),
                f"{JOB_ROLE_LEGEND} ({legend(names.ENGINE)})",
            ),
            grid=(9, 12, 12, 44),
            unit="s",
            min=0,
        ),
        *sleep_state_panels(53),
        *long_tail_cause_panels(63),
        *engine_report_panels(88),
    ]
    return _dashboard(
        "FSD / Rollout overview",
        "fsd-rollout-overview",
        "Rollout servers (vLLM and SGLang inside Ray actors) found by fsd-daemon: targets, "
        "per-replica load and the long tail, throughput, KV cache and latency, asleep versus "
        "idle replicas, and what makes the tail long. Needs the recording rules that "
        "`fsd-daemon assets install --prometheus-rules DIR` installs.",
        ["fsd-daemon", "rollout", "vllm", "sglang"],
        ("GPU idleness", "/d/fsd-gpu-idleness"),
        variables,
        panels,
    )


def gpu_idleness() -> dict[str, Any]:
    gpu_job = equals(names.JOB, names.JOB_GPU)
    idle_gpus = sel(names.JOB_ROLLOUT_IDLE_GPUS, *PER_JOB)
    gpu_busy = sel(names.GPU_BUSY_RATIO, IN_CLUSTER)
    per_gpu = f"on ({names.by(names.GPU_IDENTITY)})"
    reserved = equals(names.OWNER_STATE, names.OWNER_RESERVED)
    # Reserved GPUs under 5% busy: handed to an actor whose server never started generating.
    reserved_idle = (
        "count(\n"
        f"  {by('max', names.GPU_IDENTITY, sel(names.GPU_OWNER_INFO, reserved, *ROLLOUT))}\n"
        f"  * {per_gpu}\n"
        f"  ({gpu_busy} < 0.05)\n"
        ")\nor vector(0)"
    )
    owner = (
        names.CLUSTER,
        names.JOB,
        names.NODE_NAME,
        names.INSTANCE,
        names.GPU,
        names.GPU_UUID,
        *BY_REPLICA,
        names.ROLLOUT_MODE,
        names.ACTOR_NAME,
        names.OWNER_STATE,
    )
    owners_busy = (
        f"{by('max', owner, sel(names.GPU_OWNER_INFO, *ROLLOUT))}\n"
        f"* {per_gpu} group_left ()\n"
        f"{by('max', names.GPU_IDENTITY, gpu_busy)}"
    )
    exporter = (names.CLUSTER, names.NODE_NAME, names.INSTANCE)
    # A zero line per exporter, so that an exporter without errors shows as one.
    errors = rate(sel(names.GPU_NVML_ERRORS, IN_CLUSTER))
    nvml_errors = (
        f"{by('sum', (*exporter, names.NVML_FUNCTION), errors)}"
        f"\nor on ({names.by(exporter)})\n"
        f"{by('max', exporter, '0 * ' + sel(names.GPU_NVML_UP, IN_CLUSTER))}"
    )
    variables = [
        variable(VAR_CLUSTER, "Cluster", label_values(sel(names.UP, gpu_job), names.CLUSTER)),
        variable(
            VAR_JOB,
            "Ray job",
            label_values(sel(names.GPU_OWNER_INFO, IN_CLUSTER), names.RAY_JOB_ID),
        ),
        variable(
            VAR_ROLE,
            "Role",
            label_values(sel(names.GPU_ROLE_BUSY_RATIO, IN_CLUSTER), names.ROLE),
        ),
    ]
    panels = [
        row("Now", y=0),
        stat_panel(
            "Busy fraction by role",
            (
                "Mean busy fraction (share of time a kernel ran, last minute) of the GPUs of "
                f"each role: {', '.join((*verl.SERVING_ROLES, verl.ROLE_TRAIN))}, other, and none "
                "for GPUs nobody holds. A "
                "GPU shared by two roles counts in both."
            ),
            [
                q(
                    by("avg", [names.ROLE], sel(names.GPU_ROLE_BUSY_RATIO, *ROLLOUT)),
                    legend(names.ROLE),
                ),
            ],
            grid=(6, 8, 0, 1),
            unit="percentunit",
            min=0,
            max=1,
            thresholds=[("red", None), ("orange", 0.3), ("green", 0.7)],
        ),
        stat_panel(
            "GPUs by role",
            "GPUs held by each role (a GPU shared by two roles counts in both).",
            [
                q(
                    by("count", [names.ROLE], sel(names.GPU_ROLE_BUSY_RATIO, *ROLLOUT)),
                    legend(names.ROLE),
                ),
            ],
            grid=(6, 6, 8, 1),
            unit="short",
            decimals=0,
            thresholds=[("blue", None)],
        ),
        stat_panel(
            "Rollout GPUs idle now",
            (
                "Sum of the idle fractions of all rollout GPUs of the selected jobs: 2.5 = two "
                "and a half GPUs' worth of rollout capacity doing nothing in the last minute."
            ),
            [
                q(f"sum({idle_gpus})", "idle GPUs"),
            ],
            grid=(6, 5, 14, 1),
            unit="short",
            decimals=1,
            thresholds=[("green", None), ("orange", 1), ("red", 4)],
        ),
        stat_panel(
            "Idle rollout GPU-hours in range",
            (
                "Rollout GPU time that was idle during the dashboard's time range, in GPU-hours "
                "(the idle-GPU count integrated in 15 s steps; 15 s = 1/240 h)."
            ),
            [
                q(f"sum(sum_over_time({idle_gpus}[$__range:15s])) / 240", "GPU-hours"),
            ],
            grid=(6, 5, 19, 1),
            unit="short",
            decimals=1,
            thresholds=[("orange", None)],
        ),
        row("Busy fraction over time", y=7),
        ratio_panel(
            "Busy fraction per role and job",
            (
                "Mean busy fraction of the GPUs each Ray job holds in each role (role none: "
                "GPUs nobody holds). Rollout GPUs near zero for long stretches are capacity the "
                "job pays for and does not use."
            ),
            [
                q(sel(names.JOB_ROLE_GPU_BUSY_RATIO, *ROLLOUT), JOB_ROLE_LEGEND),
            ],
            grid=(9, 12, 0, 8),
        ),
        ratio_panel(
            "Busy fraction per GPU",
            (
                "Busy fraction of every GPU (rate of fsd_gpu_busy_seconds_total), labelled with "
                "its owner."
            ),
            [
                q(
                    sel(names.GPU_ROLE_BUSY_RATIO, *ROLLOUT),
                    f"{legend(names.NODE_NAME)} gpu{legend(names.GPU)} "
                    f"{legend(names.ROLE, names.REPLICA)}",
                ),
            ],
            grid=(9, 12, 12, 8),
        ),
        timeseries_panel(
            "Idle rollout GPUs per job",
            (
                "Per Ray job: the sum of the idle fractions of its rollout GPUs "
                "(GPU-equivalents idle)."
            ),
            [
                q(idle_gpus, legend(names.RAY_JOB_ID)),
            ],
            grid=(8, 12, 0, 17),
            unit="short",
            min=0,
            decimals=1,
        ),
        timeseries_panel(
            "Idle rollout GPU-hours, trailing hour",
            "Per Ray job: rollout GPU-hours idle in the hour before each point.",
            [
                q(sel(names.JOB_ROLLOUT_IDLE_GPU_HOURS, *PER_JOB), legend(names.RAY_JOB_ID)),
            ],
            grid=(8, 12, 12, 17),
            unit="short",
            min=0,
            decimals=1,
        ),
        row("Reserved GPUs", y=25),
        stat_panel(
            "Reserved-but-idle GPUs",
            (
                'GPUs reserved for an actor (fsd_gpu_owner_info{state="reserved"}: handed over '
                "through CUDA_VISIBLE_DEVICES, no memory held) that were under 5% busy in the "
                "last minute. 0 is the healthy value."
            ),
            [
                q(reserved_idle, "reserved and idle"),
            ],
            grid=(8, 6, 0, 26),
            unit="short",
            decimals=0,
            thresholds=[("green", None), ("orange", 1), ("red", 4)],
            text_mode="value",
        ),
        table_panel(
            "GPU owners: state and busy fraction",
            (
                "Every GPU with an owner (fsd_gpu_owner_info), one row per owning Ray actor, "
                f"with its state, verl's rollout mode ({', '.join(verl.ROLLOUT_MODES)}) and the "
                "GPU's busy fraction over the last minute. state=reserved: the GPU was handed "
                "to the replica (CUDA_VISIBLE_DEVICES, or held only by its verl worker group) "
                "but its engine holds no memory on it yet; a reserved GPU that stays idle is a "
                "server that never started generating. Sorted idlest first."
            ),
            [
                q(owners_busy),
            ],
            grid=(8, 18, 6, 26),
            unit="short",
            transformations=[
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True, names.CLUSTER: True, names.JOB: True},
                        "indexByName": columns(
                            *BY_REPLICA,
                            names.ROLLOUT_MODE,
                            names.ACTOR_NAME,
                            names.OWNER_STATE,
                            names.NODE_NAME,
                            names.GPU,
                            names.GPU_UUID,
                            names.INSTANCE,
                            "Value",
                        ),
                        "renameByName": {
                            "Value": "busy",
                            names.RAY_JOB_ID: "Ray job",
                            names.ACTOR_NAME: "actor",
                            names.NODE_NAME: "node",
                            names.ROLLOUT_MODE: "mode",
                        },
                    },
                }
            ],
            overrides=[
                {
                    "matcher": {"id": "byName", "options": "busy"},
                    "properties": [
                        {"id": "unit", "value": "percentunit"},
                        {
                            "id": "thresholds",
                            "value": {
                                "mode": "absolute",
                                "steps": [
                                    {"color": "red", "value": None},
                                    {"color": "orange", "value": 0.3},
                                    {"color": "green", "value": 0.7},
                                ],
                            },
                        },
                        {"id": "custom.cellOptions", "value": {"type": "color-background"}},
                    ],
                }
            ],
            sort_by=[{"desc": False, "displayName": "busy"}],
        ),
        row("Exporter health", y=34),
        table_panel(
            "GPU exporters",
            (
                "Per node: whether Prometheus can scrape fsd-gpu-exporter and whether the "
                "exporter can read NVML."
            ),
            [
                q(by("max", exporter, sel(names.UP, equals(names.JOB, names.JOB_GPU), IN_CLUSTER))),
                q(by("max", exporter, sel(names.GPU_NVML_UP, IN_CLUSTER))),
            ],
            grid=(8, 12, 0, 35),
            unit="short",
            transformations=[
                {"id": "merge", "options": {}},
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True},
                        "indexByName": columns(*exporter, "Value #A", "Value #B"),
                        "renameByName": {
                            "Value #A": "scrape up",
                            "Value #B": "NVML up",
                            names.NODE_NAME: "node",
                        },
                    },
                },
            ],
            overrides=[_up_down_cells("byRegexp", "scrape up|NVML up")],
            sort_by=[],
        ),
        timeseries_panel(
            "NVML errors per second",
            (
                "Failing NVML calls per exporter and function (fsd_gpu_nvml_errors_total); a "
                "flat zero line per exporter that has had no error."
            ),
            [
                q(nvml_errors, legend(names.NODE_NAME, names.NVML_FUNCTION)),
            ],
            grid=(8, 12, 12, 35),
            unit="short",
            min=0,
        ),
        table_panel(
            "Busy-time source per node",
            "How each exporter measures busy time (fsd_gpu_busy_source_info{method}).",
            [
                q(
                    by(
                        "count",
                        (*exporter, names.BUSY_SOURCE_METHOD),
                        sel(names.GPU_BUSY_SOURCE_INFO, IN_CLUSTER),
                    )
                ),
            ],
            grid=(6, 24, 0, 43),
            unit="short",
            transformations=[
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True},
                        "renameByName": {"Value": "GPUs", names.NODE_NAME: "node"},
                    },
                }
            ],
            overrides=[],
            sort_by=[],
        ),
    ]
    return _dashboard(
        "FSD / GPU idleness",
        "fsd-gpu-idleness",
        "Busy and idle GPU time per GPU, per owner role and per Ray job, from fsd-gpu-exporter; "
        "idle rollout GPU-hours; reserved GPUs; exporter health. Needs the recording rules that "
        "`fsd-daemon assets install --prometheus-rules DIR` installs.",
        ["fsd-daemon", "gpu"],
        ("Rollout overview", "/d/fsd-rollout-overview"),
        variables,
        panels,
    )


DASHBOARDS = {"rollout-overview.json": rollout_overview, "gpu-idleness.json": gpu_idleness}


def render(build: Any) -> str:
    return json.dumps(build(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fsd_daemon.mixin.dashboards")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="regenerate the committed JSON")
    mode.add_argument("--check", action="store_true", help="exit 1 when a file is stale")
    parser.add_argument("--dir", type=Path, default=DASHBOARDS_DIR)
    args = parser.parse_args(argv)
    stale = []
    for name, build in DASHBOARDS.items():
        path = args.dir / name
        text = render(build)
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.write:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
        else:
            stale.append(str(path))
    if stale:
        print(
            "stale dashboards (run python -m fsd_daemon.mixin.dashboards --write): "
            + ", ".join(stale),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
