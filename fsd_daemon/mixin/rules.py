"""The Prometheus recording rules and alerts, built from code: plain data in, YAML files out.

``python -m fsd_daemon.mixin.rules --write`` regenerates
``fsd_daemon/assets/prometheus/rules/*.rules.yml``; ``--check`` exits 1 when a committed file
differs from what this module generates (tests/test_rules.py runs the same comparison). Every
metric, label and rule name comes from :mod:`fsd_daemon.mixin.names`.

The unit tests of the rules stay hand-written YAML (``rules/tests/*.rules.test.yml``, run with
``promtool test rules``): they are the independent statement of what each rule must answer.
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from fsd_daemon.mixin import names as n
from fsd_daemon.recognition import engines
from fsd_daemon.recognition.verl import (
    ENGINES,
    LOG_STATS,
    METRICS_FIX_BY_ENGINE,
    SERVING_ROLES,
    TRTLLM_METRICS_PATH,
)

RULES_DIR = Path(__file__).resolve().parent.parent / "assets" / "prometheus" / "rules"
_WIDTH = 100  # comment and description lines wrap here


@dataclass(frozen=True)
class Record:
    name: str
    expr: str
    comment: str  # the question the series answers, written above the rule


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    comment: str
    summary: str
    description: str
    severity: str = "warning"
    for_: str | None = None


@dataclass(frozen=True)
class Group:
    name: str
    rules: tuple[Record | Alert, ...]


@dataclass(frozen=True)
class RuleFile:
    filename: str
    header: str
    groups: tuple[Group, ...]


# The label lists that rules aggregate by, written out once: one series per rollout server,
# per replica (its prefill and decode servers summed), per job and role, and per job, role
# and engine (see the label tuples in fsd_daemon.mixin.names for why each label stays).
PER_SERVER = n.by(n.REPLICA_LABELS)
PER_REPLICA = n.by(n.ROLLOUT_REPLICA_LABELS)
PER_JOB_ROLE = n.by(n.JOB_ROLE_LABELS)
PER_JOB_ROLE_ENGINE = n.by(n.JOB_ROLE_ENGINE_LABELS)
_ROLLOUT = f'{n.ROLE}="{n.ROLE_ROLLOUT}"'
# Which servers' token counters a replica's or a job's sum reads. In a prefill/decode
# disaggregated replica every request passes through two servers: the prefill server computes
# the prompt and emits only the request's first token, the decode server continues from the
# transferred KV cache and generates the response. Summing every server would count prompts
# on decode servers and first tokens on prefill servers a second time. So generation counts
# where disaggregation!="prefill" (decode servers and non-disaggregated ones) and prompt tokens
# where disaggregation!="decode" (prefill servers and non-disaggregated ones). A missing label
# matches both, so a non-disaggregated replica is summed as before (docs/upstream.md).
_GENERATING = f'{n.DISAGGREGATION}!="{n.DISAGGREGATION_PREFILL}"'
_PREFILLING = f'{n.DISAGGREGATION}!="{n.DISAGGREGATION_DECODE}"'
# verl <= 0.5 targets: listed (they hold GPUs) but without any metrics route, so down forever.
_NO_ROUTE = f'{n.METRICS_ROUTE}="{n.METRICS_ROUTE_ABSENT}"'
_HAS_ROUTE = f'{n.METRICS_ROUTE}!="{n.METRICS_ROUTE_ABSENT}"'
_RATE = "rate({}[1m])"


def _indent(text: str, by: int = 2) -> str:
    return textwrap.indent(text, " " * by)


def _engine_labels_applied(expr: str, engine: engines.Engine) -> str:
    """``expr`` of one engine, its halves and ranks settled: where the engine names the
    prefill/decode half itself (SGLang's engine_type), that value becomes the disaggregation
    label (any other value leaves the target's label as it is); rank labels, whose series
    report the same batch, are reduced with max. Every other label stays, to be summed."""
    # One label_replace per half, with the value spelled out: no "$1" for Grafana to expand.
    halves = (n.DISAGGREGATION_PREFILL, n.DISAGGREGATION_DECODE)
    for half in halves if engine.disaggregation_label else ():
        expr = (
            f"label_replace(\n{_indent(expr)},\n"
            f'  "{n.DISAGGREGATION}", "{half}", "{engine.disaggregation_label}", "{half}"\n)'
        )
    return engines.ranks_reduced(engine, _indent(expr)) if engine.rank_labels else expr


def per_replica(question: engines.Reads, template: str = "{}", agg: str = "sum") -> str:
    """One series per rollout server: for each engine that answers ``question``, its series
    (put into ``template``) with ranks reduced by max and everything else (vLLM's data-parallel
    engines, SGLang's dp ranks, 0.5.23's is_streaming) aggregated with ``agg``."""
    parts = [
        f"{agg} by ({PER_SERVER}) (\n"
        f"{_indent(_engine_labels_applied(template.format(name), engine))}\n)"
        for engine, name in engines.answering(question)
    ]
    return "\nor\n".join(parts)


def per_job_role_buckets(question: engines.Reads) -> str:
    """Bucket rates per job, role and engine (engines' bucket boundaries differ). Every label
    but le is summed: duplicate ranks scale all buckets alike and leave quantiles unchanged."""
    return "\nor\n".join(
        f"sum by ({PER_JOB_ROLE_ENGINE}, le) (\n  rate({n.bucket(name)}[1m])\n)"
        for _, name in engines.answering(question)
    )


def _verl_fix_template() -> str:
    """Alert text naming the verl key to set, chosen by the target's engine label."""
    return (
        f'{{{{ if eq $labels.engine "{n.ENGINE_SGLANG}" }}}}'
        f"{METRICS_FIX_BY_ENGINE[n.ENGINE_SGLANG]}"
        f"{{{{ else }}}}{METRICS_FIX_BY_ENGINE[n.ENGINE_VLLM]}{{{{ end }}}}"
    )


def _route_fix_template() -> str:
    """What to do about a 404, by engine: verl's keys for vLLM and SGLang; TRT-LLM mounts its
    Prometheus text only with its perf metrics on (docs/upstream.md); for any other engine
    (Dynamo) fsd-daemon knows no fix, and says so rather than name a vLLM key."""
    verl = f"Set {_verl_fix_template()} in the verl job's config and restart the job."
    return (
        f'{{{{ if eq $labels.engine "{n.ENGINE_VLLM}" "{n.ENGINE_SGLANG}" }}}}{verl}'
        f'{{{{ else if eq $labels.engine "{n.ENGINE_TRTLLM}" }}}}TRT-LLM serves Prometheus text '
        f"at {TRTLLM_METRICS_PATH} only with its perf metrics on (return_perf_metrics): turn them "
        "on in the engine's config."
        "{{ else }}fsd-daemon does not know where this engine serves metrics: check its "
        "configuration.{{ end }}"
    )


# --- GPU time ---------------------------------------------------------------------------------

GPU_HEADER = """\
GPU busy/idle time, per GPU and per owner role, from fsd-gpu-exporter (scrape job "gpu").

Inputs (fsd-gpu-exporter, one target per Ray node, target labels node_id, node_ip, node_name,
is_head_node, cluster):
  fsd_gpu_busy_seconds_total{gpu, uuid, gpu_model, node}   integrated busy time; rate() = 0-1
  fsd_gpu_owner_info{gpu, uuid, node, role, replica, actor_class, actor_name, ray_job_id, pid,
                     state="active"|"reserved"} 1          one series per GPU and owner process

GPU identity is (cluster, job, instance, gpu): busy time and ownership of one GPU come from the
same exporter target, so they share every target label.

Ownership semantics (what "per role" means):
  * A GPU counts once for every distinct (role, replica, ray_job_id) that owns it, whatever the
    number of owner processes (vLLM engine cores, TP workers) or their state: "reserved" GPUs
    (handed to a rollout server through CUDA_VISIBLE_DEVICES, no memory held yet) count as owned,
    which is the point: they are the idle GPUs a job paid for.
  * A GPU shared by two roles (verl's colocated "hybrid engine": train and rollout on the same
    GPUs) appears under both roles with the same busy fraction, so it is busy for rollout while
    training runs on it. Per-role GPU counts therefore may add up to more than the GPUs present.
  * A GPU with no owner at all is kept, with role="none" and no replica or ray_job_id label.

Asleep versus idle: a rollout GPU's time is split into asleep (its engine sleeps: in colocated
training the trainer has the GPU), awake-busy and awake-idle (the idle rollout resource). The
engine state comes from replica:fsd_rollout_engine_asleep:bool (fsd-rollout.rules.yml, joined on
cluster, ray_job_id, replica); a replica without that series (SGLang, old vLLM, metrics off)
counts as awake.

The rate window is 1m: it needs a scrape interval of 30s or less (the project default is 15s)."""

_GPU_LABELS = (*n.GPU_IDENTITY[:3], n.NODE_NAME, n.NODE_IP, "gpu", "uuid")
_OWNED = (
    f"max by ({n.by((*_GPU_LABELS, n.ROLE, n.REPLICA, n.RAY_JOB_ID))}) (\n  {n.GPU_OWNER_INFO}\n)"
)
_ID = n.by(n.GPU_IDENTITY)
_ROLLOUT_GPU_BUSY = f'{n.GPU_ROLE_BUSY_RATIO}{{{n.ROLE}="{n.ROLE_ROLLOUT}"}}'
_JOIN = n.by(n.GPU_OWNER_JOIN)
# The exporter's owner series know role, replica and Ray job, not a teacher's key.
_GPU_JR = n.by((n.CLUSTER, n.RAY_JOB_ID, n.ROLE))


def _gpu_state_records() -> tuple[Record, ...]:
    asleep = n.gpu_rollout_state_ratio(n.ASLEEP)
    replica_asleep = f"max by ({_JOIN}) (\n  {n.replica_engine_state(n.ASLEEP)}{{{_ROLLOUT}}}\n)"
    per_gpu = {
        n.ASLEEP: (
            "(\n"
            f"    0 * {_ROLLOUT_GPU_BUSY}\n"
            f"  + on ({_JOIN}) group_left ()\n"
            f"{_indent(replica_asleep, 4)}\n"
            ")\n"
            f"or\n0 * {_ROLLOUT_GPU_BUSY}",
            "Per rollout GPU: is its engine asleep? (1 asleep, 0 awake; a replica without a "
            "sleep-state series counts as awake.) Labels: those of "
            f"{n.GPU_ROLE_BUSY_RATIO}.",
        ),
        n.AWAKE_BUSY: (
            f"(1 - {asleep}) * {_ROLLOUT_GPU_BUSY}",
            "Per rollout GPU: what fraction of the last minute was its engine awake and the GPU "
            "busy? (0-1)",
        ),
        n.AWAKE_IDLE: (
            f'(1 - {asleep}) * {n.GPU_ROLE_IDLE_RATIO}{{{n.ROLE}="{n.ROLE_ROLLOUT}"}}',
            "Per rollout GPU: what fraction of the last minute was its engine awake and the GPU "
            "idle? (0-1; the idle rollout resource. asleep + awake_busy + awake_idle = 1.)",
        ),
    }
    records: list[Record] = []
    for state, (expr, comment) in per_gpu.items():
        records.append(Record(n.gpu_rollout_state_ratio(state), expr, comment))
    for state in n.GPU_STATES:
        records.append(
            Record(
                n.replica_rollout_state_gpus(state),
                f"sum by ({_JOIN}) ({n.gpu_rollout_state_ratio(state)})",
                f"Per rollout replica: how many of its GPUs' worth of time is {_words(state)}?",
            )
        )
    for state in n.GPU_STATES:
        records.append(
            Record(
                n.job_rollout_state_gpus(state),
                f"sum by ({n.CLUSTER}, {n.RAY_JOB_ID}) ({n.gpu_rollout_state_ratio(state)})",
                f"Per Ray job: how many rollout GPUs' worth of time is {_words(state)}? "
                "(The three states add up to the job's rollout GPUs.)",
            )
        )
    return tuple(records)


def _words(state: str) -> str:
    return {n.ASLEEP: "asleep", n.AWAKE_BUSY: "awake and busy", n.AWAKE_IDLE: "awake and idle"}[
        state
    ]


def gpu_file() -> RuleFile:
    records = (
        Record(
            n.GPU_BUSY_RATIO,
            f"clamp_max(rate({n.GPU_BUSY_SECONDS}[1m]), 1)",
            "Per GPU: what fraction of the last minute did a kernel run on this GPU? (0-1) "
            "Clamped at 1 because sampling jitter can make the counter run slightly ahead of "
            "wall time.",
        ),
        Record(
            n.GPU_IDLE_RATIO,
            f"1 - {n.GPU_BUSY_RATIO}",
            "Per GPU: what fraction of the last minute was this GPU idle? (0-1)",
        ),
        Record(
            n.GPU_ROLE_BUSY_RATIO,
            "(\n"
            f"{_indent(_OWNED, 4)}\n"
            f"  * on ({_ID}) group_left (gpu_model)\n"
            f"    {n.GPU_BUSY_RATIO}\n"
            ")\n"
            f"or on ({_ID})\n"
            "  label_replace(\n"
            f"    max by ({n.by((*_GPU_LABELS, 'gpu_model'))}) (\n"
            f"      {n.GPU_BUSY_RATIO}\n"
            "    ),\n"
            f'    "{n.ROLE}", "none", "", ""\n'
            "  )",
            "Per GPU and owner: how busy is each GPU, labelled with who holds it (role, replica, "
            'ray_job_id)? Unowned GPUs get role="none". Labels: cluster, job, instance, '
            "node_name, node_ip, gpu, uuid, gpu_model, role, replica, ray_job_id.\n"
            'Owner info is the "many" side so that a GPU with several owners (colocated roles) '
            "joins without a duplicate-match error; the per-GPU busy ratio is unique per GPU "
            "identity.",
        ),
        Record(
            n.GPU_ROLE_IDLE_RATIO,
            f"1 - {n.GPU_ROLE_BUSY_RATIO}",
            f"Per GPU and owner: the idle fraction, same labels as {n.GPU_ROLE_BUSY_RATIO}.",
        ),
        Record(
            n.CLUSTER_ROLE_BUSY_RATIO,
            f"avg by ({n.CLUSTER}, {n.ROLE}) ({n.GPU_ROLE_BUSY_RATIO})",
            "Per cluster and role: what fraction of the role's GPU time was busy? (mean over "
            "its GPUs)",
        ),
        Record(
            n.CLUSTER_ROLE_IDLE_RATIO,
            f"avg by ({n.CLUSTER}, {n.ROLE}) ({n.GPU_ROLE_IDLE_RATIO})",
            "Per cluster and role: what fraction of the role's GPU time was idle?",
        ),
        Record(
            n.JOB_ROLE_GPU_BUSY_RATIO,
            f"avg by ({_GPU_JR}) ({n.GPU_ROLE_BUSY_RATIO})",
            "Per Ray job and role: what fraction of the job's GPU time in this role was busy? "
            '(role="none" has no ray_job_id: its series carries only cluster and role.)',
        ),
        Record(
            n.JOB_ROLE_GPUS,
            f"count by ({_GPU_JR}) ({n.GPU_ROLE_BUSY_RATIO})",
            "Per Ray job and role: how many GPUs does the job hold in this role?",
        ),
        Record(
            n.JOB_ROLLOUT_IDLE_GPUS,
            f"sum by ({n.CLUSTER}, {n.RAY_JOB_ID}) "
            f'({n.GPU_ROLE_IDLE_RATIO}{{{n.ROLE}="{n.ROLE_ROLLOUT}"}})',
            "Per Ray job: how many rollout GPUs' worth of time is idle right now? (sum of idle "
            "fractions: 2.5 = two and a half GPUs doing nothing; asleep engines count as idle "
            f"here, see {n.job_rollout_state_gpus(n.AWAKE_IDLE)} for the sleep-aware count)",
        ),
        Record(
            n.JOB_ROLLOUT_IDLE_GPU_HOURS,
            f"sum_over_time({n.JOB_ROLLOUT_IDLE_GPUS}[1h:15s]) / 240",
            "Per Ray job: how many rollout GPU-hours were idle in the last hour? A 15s-step "
            "subquery integrates the idle-GPU count (15s = 1/240 h), so the result does not "
            "depend on the rule evaluation interval and counts only the time the job held GPUs.",
        ),
        *_gpu_state_records(),
    )
    alerts = (
        Alert(
            n.ALERT_ROLLOUT_GPUS_IDLE,
            f'{n.JOB_ROLE_GPU_BUSY_RATIO}{{{n.ROLE}="{n.ROLE_ROLLOUT}"}} < 0.1',
            "Are a job's rollout GPUs sitting idle? Fires when the mean busy fraction of the "
            "job's rollout GPUs stays under 10% for 15 minutes: longer than a training step "
            "normally keeps disaggregated rollout GPUs waiting.",
            summary="Rollout GPUs of Ray job {{ $labels.ray_job_id }} are only "
            "{{ $value | humanizePercentage }} busy",
            description="The rollout GPUs of Ray job {{ $labels.ray_job_id }} in cluster "
            '{{ $labels.cluster }} have been under 10% busy for 15 minutes. Open the "FSD / GPU '
            'idleness" dashboard: if every replica is idle, check whether the trainer is stuck '
            "or the job has finished and left its rollout servers running (stop the job); if a "
            "few replicas are busy and the rest idle, the rollout batch has a long tail "
            "(consider partial rollout or a smaller response length); if the GPUs are "
            '"reserved", the servers never started generating (check the rollout actors\' '
            "logs).",
            for_="15m",
        ),
        Alert(
            n.ALERT_GPU_EXPORTER_MISSING,
            f'absent(up{{job="{n.JOB_GPU}"}})',
            'Is nothing scraping GPU exporters at all? (no gpu.json targets, or no "gpu" job)',
            summary="No GPU exporter targets are being scraped",
            description='Prometheus has no target in scrape job "gpu", so GPU busy and idle '
            "time is not recorded. Check that fsd-daemon writes gpu.json (fsd-daemon targets; "
            "journalctl -u fsd-daemon), that targets.write_gpu is true, and that prometheus.yml "
            'has the "gpu" job with file_sd on the daemon\'s output directory (fsd-daemon '
            "prometheus-config).",
            severity="critical",
            for_="10m",
        ),
        Alert(
            n.ALERT_GPU_EXPORTER_DOWN,
            f'up{{job="{n.JOB_GPU}"}} == 0',
            "Is the GPU exporter on a node unreachable?",
            summary="GPU exporter on {{ $labels.node_name }} ({{ $labels.instance }}) is down",
            description="Prometheus cannot scrape fsd-gpu-exporter at {{ $labels.instance }} "
            "(node {{ $labels.node_name }}). On that node run `systemctl status "
            "fsd-gpu-exporter` and `journalctl -u fsd-gpu-exporter`; check that it listens on "
            "the node IP and not only on 127.0.0.1 (FSD_EXPORTER_LISTEN in "
            "/etc/default/fsd-daemon) and that the firewall lets Prometheus reach port 9847.",
            for_="5m",
        ),
        Alert(
            n.ALERT_GPU_NVML_DOWN,
            f"{n.GPU_NVML_UP} == 0",
            "Does the GPU exporter run but fail to read the GPUs through NVML?",
            summary="GPU exporter on {{ $labels.node_name }} cannot read NVML",
            description="fsd-gpu-exporter at {{ $labels.instance }} runs but NVML calls fail, "
            "so its GPU series are missing or stale. Check `nvidia-smi` on the node (driver "
            "loaded, GPU not lost) and the exporter's log (journalctl -u fsd-gpu-exporter); the "
            f"{n.GPU_NVML_ERRORS} counter names the failing NVML function.",
            for_="5m",
        ),
    )
    return RuleFile(
        "fsd-gpu.rules.yml",
        GPU_HEADER,
        (Group(n.GROUP_GPU_RECORDS, records), Group(n.GROUP_GPU_ALERTS, alerts)),
    )


# --- Rollout load, the long tail, fsd-daemon --------------------------------------------------

ROLLOUT_HEADER = (
    """\
Rollout server load (vLLM and SGLang under one set of names), asleep versus idle engines, the
long tail of a rollout batch, why a server's metrics are missing, and the health of fsd-daemon.

Inputs: scrape job "rollout" (targets written by fsd-daemon into rollout.json, target labels
engine ("""
    + ", ".join(ENGINES)
    + "), role ("
    + ", ".join(SERVING_ROLES)
    + """), disaggregation (prefill,
decode; absent when the replica is not disaggregated), teacher (the teacher key, on
role="teacher" only), replica, node_ip, node_id, ray_job_id, ray_namespace, ray_session,
actor_name, cluster, and metrics_route="absent" on verl <= 0.5 servers, which have no metrics
route) and scrape job "fsd_daemon" (the daemon's own metrics, 127.0.0.1:9848). No rule reads
TRT-LLM's or Dynamo's own series: their names are not checked against upstream yet.
  vLLM V1:  vllm:num_requests_running, vllm:num_requests_waiting, vllm:kv_cache_usage_perc (0-1),
            vllm:generation_tokens_total, vllm:prompt_tokens_total,
            vllm:request_success_total{finished_reason},
            vllm:num_preemptions_total, vllm:engine_sleep_state{sleep_state}, histograms
            vllm:time_to_first_token_seconds, vllm:inter_token_latency_seconds,
            vllm:request_queue_time_seconds, vllm:request_generation_tokens and
            vllm:request_params_max_tokens. vLLM's own "engine" label (its engine index) is
            renamed exported_engine by Prometheus because the target label "engine" wins.
  SGLang:   sglang:num_running_reqs, sglang:num_queue_reqs, sglang:token_usage (0-1),
            sglang:generation_tokens_total, sglang:prompt_tokens_total,
            sglang:num_requests_total,
            sglang:num_aborted_requests_total, sglang:num_retracted_requests_total,
            sglang:num_paused_reqs, histograms sglang:time_to_first_token_seconds,
            sglang:inter_token_latency_seconds and sglang:queue_time_seconds; scheduler series
            carry tp_rank, pp_rank and, with data parallelism, dp_rank.

Unified per-server series ("replica:" level) keep these labels (one series per rollout server):
  cluster, ray_job_id, role, teacher, replica, disaggregation, engine, instance, actor_name,
  node_ip, model_name
instance and actor_name stay because a disaggregated replica has several servers (one prefill,
N decode); teacher and disaggregation stay so that two teachers with replica 0, and a replica's
prefill and decode servers, are told apart by label. Per-replica series ("cluster_job_replica:")
sum a replica's servers; per-job series ("cluster_job_role:") keep teacher.

Disaggregated replicas: generation tokens are summed over servers with disaggregation!="prefill"
and prompt tokens over servers with disaggregation!="decode" (a prefill server emits only each
request's first token; the decode server generates the rest), so nothing is counted twice.

Summing rules: vLLM engines (data-parallel ranks, exported_engine) are summed. Every SGLang
tensor/pipeline rank of a scheduler reports the same batch, so SGLang is reduced with max over
tp_rank/pp_rank first and summed over dp_rank only. Histogram buckets are summed as they come:
duplicate ranks scale every bucket alike and leave quantiles unchanged."""
)


def _load_records() -> tuple[Record, ...]:
    running = n.REPLICA_REQUESTS_RUNNING
    return (
        Record(
            running,
            per_replica(engines.Reads.REQUESTS_RUNNING),
            "Per rollout server: how many requests is it generating right now?",
        ),
        Record(
            n.REPLICA_REQUESTS_WAITING,
            per_replica(engines.Reads.REQUESTS_WAITING),
            "Per rollout server: how many requests wait in its queue?",
        ),
        Record(
            n.REPLICA_GENERATION_TOKENS_RATE,
            per_replica(engines.Reads.GENERATION_TOKENS, _RATE),
            "Per rollout server: how many tokens per second does it generate? (A prefill "
            "server's own count: its requests' first tokens.)",
        ),
        Record(
            n.REPLICA_PROMPT_TOKENS_RATE,
            per_replica(engines.Reads.PROMPT_TOKENS, _RATE),
            "Per rollout server: how many prompt tokens per second does it process?",
        ),
        Record(
            n.ROLLOUT_REPLICA_GENERATION_TOKENS_RATE,
            f"sum by ({PER_REPLICA}) (\n  {n.REPLICA_GENERATION_TOKENS_RATE}{{{_GENERATING}}}\n)",
            "Per replica: how many tokens per second do its servers generate? A disaggregated"
            " replica's decode servers are summed and its prefill server left out (it emits only "
            "the first token of requests its decode servers then generate).",
        ),
        Record(
            n.ROLLOUT_REPLICA_PROMPT_TOKENS_RATE,
            f"sum by ({PER_REPLICA}) (\n  {n.REPLICA_PROMPT_TOKENS_RATE}{{{_PREFILLING}}}\n)",
            "Per replica: how many prompt tokens per second does it process? A disaggregated"
            " replica's prefill server counts, its decode servers (which receive the prompt's "
            "KV cache from it) do not.",
        ),
        Record(
            n.REPLICA_KV_CACHE_USAGE,
            per_replica(engines.Reads.KV_CACHE_USAGE, agg="max"),
            "Per rollout server: how full is its KV cache? (0-1, the fullest engine or rank)",
        ),
        Record(
            n.REPLICA_REQUESTS_FINISHED_RATE,
            per_replica(engines.Reads.REQUESTS_FINISHED, _RATE),
            "Per rollout server: how many requests does it finish per second? (vLLM: every "
            "finished_reason; SGLang: streaming and non-streaming requests together.)",
        ),
        Record(
            n.JOB_ROLE_REPLICAS,
            f"count by ({PER_JOB_ROLE}) ({running})",
            "Per Ray job and role: how many rollout servers report load?",
        ),
        Record(
            n.JOB_ROLE_REQUESTS_RUNNING,
            f"sum by ({PER_JOB_ROLE}) ({running})",
            "Per Ray job and role: how many requests are being generated in total?",
        ),
        Record(
            n.JOB_ROLE_GENERATION_TOKENS_RATE,
            f"sum by ({PER_JOB_ROLE}) ({n.REPLICA_GENERATION_TOKENS_RATE}{{{_GENERATING}}})",
            "Per Ray job and role: how many tokens per second do all its servers generate? "
            "(prefill servers left out, as per replica)",
        ),
        Record(
            n.JOB_ROLE_PROMPT_TOKENS_RATE,
            f"sum by ({PER_JOB_ROLE}) ({n.REPLICA_PROMPT_TOKENS_RATE}{{{_PREFILLING}}})",
            "Per Ray job and role: how many prompt tokens per second do all its servers "
            "process? (decode servers left out, as per replica)",
        ),
        Record(
            n.JOB_ROLE_REPLICAS_BUSY_RATIO,
            f"sum by ({PER_JOB_ROLE}) ({running} > bool 0)\n/\n"
            f"count by ({PER_JOB_ROLE}) ({running})",
            "Long tail, share form: what fraction of the job's servers still have requests "
            "running? 1 = all busy, 0 = all idle; a small non-zero value held for minutes is the "
            "long tail (a few servers finish the last long responses while the rest of the GPUs "
            "wait).",
        ),
        Record(
            n.JOB_ROLE_REQUESTS_RUNNING_MAX_OVER_AVG,
            f"max by ({PER_JOB_ROLE}) ({running})\n/\n"
            f"clamp_min(avg by ({PER_JOB_ROLE}) ({running}), 1e-9)",
            "Long tail, imbalance form: how much more work does the busiest server have than "
            "the average one? 1 = even; N (the number of servers) = one server has all of it; "
            "0 = no server has work (the clamp turns 0/0 into 0 rather than no result).",
        ),
        Record(
            n.JOB_ROLE_TTFT_BUCKETS,
            per_job_role_buckets(engines.Reads.TTFT),
            "Per Ray job, role and engine: time-to-first-token histogram (bucket rates), for "
            "histogram_quantile(). Engines stay apart because their bucket boundaries differ.",
        ),
        Record(
            n.JOB_ROLE_ITL_BUCKETS,
            per_job_role_buckets(engines.Reads.ITL),
            "Per Ray job, role and engine: inter-token latency histogram (bucket rates).",
        ),
    )


def _sleep_records() -> tuple[Record, ...]:
    running = n.REPLICA_REQUESTS_RUNNING
    asleep = n.replica_engine_state(n.ASLEEP)
    awake = f'{n.VLLM_SLEEP_STATE}{{{n.SLEEP_STATE}="{n.SLEEP_AWAKE}"}}'
    records = [
        Record(
            asleep,
            f"(\n  1 - max by ({PER_SERVER}) (\n    {awake}\n  )\n)\nor\n0 * {running}",
            "Asleep versus idle, per rollout server: is its engine asleep? (1 asleep, 0 awake) "
            f'vLLM sets {n.VLLM_SLEEP_STATE}{{sleep_state="awake"}} to 0 while the engine sleeps '
            "(weights_offloaded or discard_all: verl sleeps it between steps in colocated "
            "training); a server is asleep when none of its engines is awake. A server without "
            "that series (SGLang, older vLLM) counts as awake.",
        ),
        Record(
            n.replica_engine_state(n.AWAKE_BUSY),
            f"(1 - {asleep}) * ({running} > bool 0)",
            "Per rollout server: is its engine awake and generating? (1 or 0)",
        ),
        Record(
            n.replica_engine_state(n.AWAKE_IDLE),
            f"(1 - {asleep}) * ({running} == bool 0)",
            "Per rollout server: is its engine awake with nothing to generate? (1 or 0; the "
            "idle rollout resource, unlike an engine asleep by design)",
        ),
    ]
    for state in n.GPU_STATES:
        records.append(
            Record(
                n.job_role_replicas_in_state(state),
                f"sum by ({PER_JOB_ROLE}) ({n.replica_engine_state(state)})",
                f"Per Ray job and role: how many rollout servers are {_words(state)}?",
            )
        )
    return tuple(records)


def _ratio_of_finished(numerator_selector: str, total: str) -> str:
    """Share of finished requests matching a selector; 0 (not empty) while none matched."""
    return (
        f"(\n  sum by ({PER_JOB_ROLE}) (rate({numerator_selector}[1m]))\n"
        f"  or\n  0 * sum by ({PER_JOB_ROLE}) (rate({total}[1m]))\n)\n"
        f"/\nclamp_min(sum by ({PER_JOB_ROLE}) (rate({total}[1m])), 1e-9)"
    )


def _ratio_of_recorded_finished(reason: str) -> str:
    """vLLM's share of finished requests with ``reason``, read from the per-job finished rate
    recorded earlier in the same group (evaluated in order): the same sums as from the raw
    counter, without a second and third rate() over every server's finished_reason series."""
    vllm = f'{n.ENGINE}="{n.ENGINE_VLLM}"'
    finished = n.JOB_ROLE_REQUESTS_FINISHED_RATE
    return (
        f'(\n  sum by ({PER_JOB_ROLE}) ({finished}{{{vllm}, {n.FINISHED_REASON}="{reason}"}})\n'
        f"  or\n  0 * sum by ({PER_JOB_ROLE}) ({finished}{{{vllm}}})\n)\n"
        f"/\nclamp_min(sum by ({PER_JOB_ROLE}) ({finished}{{{vllm}}}), 1e-9)"
    )


def _long_tail_records() -> tuple[Record, ...]:
    reason = n.FINISHED_REASON
    return (
        Record(
            n.JOB_ROLE_GENERATION_TOKENS_BUCKETS,
            per_job_role_buckets(engines.Reads.RESPONSE_LENGTH),
            "Long tail, response length: per Ray job, role and engine, the histogram of "
            "generated tokens per finished request (bucket rates; vLLM only: SGLang's "
            "equivalent is off by default).",
        ),
        Record(
            n.JOB_ROLE_MAX_TOKENS_BUCKETS,
            per_job_role_buckets(engines.Reads.MAX_TOKENS),
            "Long tail: per Ray job, role and engine, the histogram of the max_tokens the "
            "requests asked for (bucket rates), the cap to compare response lengths with.",
        ),
        Record(
            n.JOB_ROLE_GENERATION_TOKENS_P50,
            f"histogram_quantile(0.5, {n.JOB_ROLE_GENERATION_TOKENS_BUCKETS})",
            "Long tail: median response length (generated tokens) of the last minute.",
        ),
        Record(
            n.JOB_ROLE_GENERATION_TOKENS_P99,
            f"histogram_quantile(0.99, {n.JOB_ROLE_GENERATION_TOKENS_BUCKETS})",
            "Long tail: 99th percentile response length of the last minute. Far above the "
            "median means a few long responses hold the step; at the max_tokens cap means "
            "they are being truncated.",
        ),
        Record(
            n.JOB_ROLE_MAX_TOKENS_P50,
            f"histogram_quantile(0.5, {n.JOB_ROLE_MAX_TOKENS_BUCKETS})",
            "Long tail: the median max_tokens of the last minute (verl's response_length).",
        ),
        Record(
            n.JOB_ROLE_REQUESTS_FINISHED_RATE,
            f"sum by ({PER_JOB_ROLE_ENGINE}, {reason}) (\n"
            f"  rate({n.VLLM_REQUEST_SUCCESS}[1m])\n)\nor\n"
            "label_replace(\n"
            f"  sum by ({PER_JOB_ROLE_ENGINE}) (rate({n.SGLANG_ABORTED_REQUESTS}[1m])),\n"
            f'  "{reason}", "{n.FINISHED_ABORT}", "", ""\n)',
            "Per Ray job, role and engine: finished requests per second by finished_reason "
            "(stop, length = truncated at max_tokens, abort). SGLang reports aborts only.",
        ),
        Record(
            n.JOB_ROLE_TRUNCATED_RATIO,
            _ratio_of_recorded_finished(n.FINISHED_LENGTH),
            "Long tail: what share of the requests finished in the last minute were cut at "
            "max_tokens? (0-1, vLLM) A high share means response_length caps the tail.",
        ),
        Record(
            n.JOB_ROLE_ABORTED_RATIO,
            _ratio_of_recorded_finished(n.FINISHED_ABORT)
            + "\nor\n"
            + _ratio_of_finished(n.SGLANG_ABORTED_REQUESTS, n.SGLANG_REQUESTS),
            "Long tail: what share of the requests finished in the last minute were aborted? "
            "(0-1; partial rollout aborts the tail on purpose)",
        ),
        Record(
            n.REPLICA_PREEMPTIONS_RATE,
            per_replica(engines.Reads.PREEMPTIONS, _RATE),
            "Per rollout server: preemptions per second (vLLM; SGLang calls them retractions): "
            "requests evicted from the KV cache and recomputed later, a cause of long tails.",
        ),
        Record(
            n.JOB_ROLE_PREEMPTIONS_RATE,
            f"sum by ({PER_JOB_ROLE}) ({n.REPLICA_PREEMPTIONS_RATE})",
            "Per Ray job and role: preemptions (retractions) per second.",
        ),
        Record(
            n.REPLICA_REQUESTS_PAUSED,
            per_replica(engines.Reads.REQUESTS_PAUSED),
            "Per SGLang server: how many requests are paused by an async weight sync?",
        ),
        Record(
            n.JOB_ROLE_QUEUE_TIME_BUCKETS,
            per_job_role_buckets(engines.Reads.QUEUE_TIME),
            "Per Ray job, role and engine: queue time histogram (bucket rates). Long queue "
            "times on a few servers mean the load balancer keeps feeding the slow ones.",
        ),
    )


# --- What the engines report about themselves: caches, speculation, phases, idle time -------

Q = engines.Reads


def _counter_ratio(
    numerator: engines.Reads, denominator: engines.Reads, labels: str, engine: engines.Engine
) -> str:
    """sum(rate(numerator)) / sum(rate(denominator)) by ``labels`` for one engine; no result
    while the denominator does not grow (no 0/0)."""
    num, den = (
        _engine_labels_applied(_RATE.format(engine.reads[q]), engine)
        for q in (numerator, denominator)
    )
    return (
        f"sum by ({labels}) (\n{_indent(num)}\n)\n/\n"
        f"(\n  sum by ({labels}) (\n{_indent(den, 4)}\n  )\n  > 0\n)"
    )


def _gauge_average(
    gauge: engines.Reads, guard: engines.Reads | None, engine: engines.Engine
) -> str:
    """Per server, the engine's own 0-1 gauge averaged over the last minute (ranks reduced,
    dp ranks averaged); with ``guard``, only where that gauge is above 0 (SGLang reports its
    speculative-decoding gauges as 0 when speculation is off)."""
    value = f"avg_over_time({engine.reads[gauge]}[1m])"
    if guard is not None:
        value = f"{value}\nand\n(avg_over_time({engine.reads[guard]}[1m]) > 0)"
    return f"avg by ({PER_SERVER}) (\n{_indent(_engine_labels_applied(value, engine))}\n)"


def _per_replica_ratio(
    numerator: engines.Reads,
    denominator: engines.Reads,
    gauge: engines.Reads,
    guard: engines.Reads | None = None,
) -> str:
    """Per server: a 0-1 ratio, from a pair of counters where the engine has them, else from
    the engine's own gauge."""
    parts = []
    for engine in engines.ENGINES:
        if numerator in engine.reads and denominator in engine.reads:
            parts.append(_counter_ratio(numerator, denominator, PER_SERVER, engine))
        elif gauge in engine.reads:
            parts.append(_gauge_average(gauge, guard, engine))
    return "\nor\n".join(parts)


def _per_job_role_ratio(
    numerator: engines.Reads, denominator: engines.Reads, gauge: engines.Reads, replica: str
) -> str:
    """Per job, role and engine: counters summed before dividing (weighted by tokens); for an
    engine with only a gauge, the mean of its servers' ``replica`` series."""
    parts = []
    for engine in engines.ENGINES:
        if numerator in engine.reads and denominator in engine.reads:
            parts.append(_counter_ratio(numerator, denominator, PER_JOB_ROLE_ENGINE, engine))
        elif gauge in engine.reads:
            parts.append(
                f'avg by ({PER_JOB_ROLE_ENGINE}) ({replica}{{{n.ENGINE}="{engine.label}"}})'
            )
    return "\nor\n".join(parts)


def _histogram_mean(question: engines.Reads) -> str:
    """Per job, role and engine: mean observed value of a histogram over the last minute."""
    return "\nor\n".join(
        f"sum by ({PER_JOB_ROLE_ENGINE}) (rate({name}_sum[1m]))\n/\n"
        f"(sum by ({PER_JOB_ROLE_ENGINE}) (rate({name}_count[1m])) > 0)"
        for _, name in engines.answering(question)
    )


def _prefill_share() -> str:
    parts = []
    for engine in engines.ENGINES:
        if Q.PREFILL_TIME in engine.reads and Q.DECODE_TIME in engine.reads:
            prefill_time = engine.reads[Q.PREFILL_TIME]
            decode_time = engine.reads[Q.DECODE_TIME]
            prefill = f"sum by ({PER_JOB_ROLE_ENGINE}) (rate({prefill_time}_sum[1m]))"
            decode = f"sum by ({PER_JOB_ROLE_ENGINE}) (rate({decode_time}_sum[1m]))"
            parts.append(f"{prefill}\n/\n(\n  {prefill}\n  +\n  {decode}\n  > 0\n)")
    return "\nor\n".join(parts)


def _spec_accept_length() -> str:
    """vLLM's mean acceptance length is 1 + accepted / drafts (each draft step also yields the
    target model's own token; vllm/v1/spec_decode/metrics.py); SGLang reports it as a gauge."""
    parts = []
    for engine in engines.ENGINES:
        if Q.SPEC_ACCEPTED_TOKENS in engine.reads and Q.SPEC_DRAFTS in engine.reads:
            parts.append(
                "1 + (\n"
                + _indent(
                    _counter_ratio(
                        Q.SPEC_ACCEPTED_TOKENS, Q.SPEC_DRAFTS, PER_JOB_ROLE_ENGINE, engine
                    )
                )
                + "\n)"
            )
        elif Q.SPEC_ACCEPT_LENGTH in engine.reads:
            length = f"avg_over_time({engine.reads[Q.SPEC_ACCEPT_LENGTH]}[1m]) > 0"
            parts.append(f"avg by ({PER_JOB_ROLE_ENGINE}) (\n  {length}\n)")
    return "\nor\n".join(parts)


def _engine_feature_records() -> tuple[Record, ...]:
    return (
        Record(
            n.REPLICA_PREFIX_CACHE_HIT_RATIO,
            _per_replica_ratio(
                Q.PREFIX_CACHE_HITS, Q.PREFIX_CACHE_QUERIES, Q.PREFIX_CACHE_HIT_RATE
            ),
            "Per rollout server: what share of prompt tokens came from the prefix cache in the "
            "last minute? (0-1; vLLM: prefix_cache_hits / prefix_cache_queries, in tokens; "
            "SGLang: its own cache_hit_rate gauge, averaged.) GRPO's n responses per prompt "
            "should hit; a low rate means the prompts are recomputed.",
        ),
        Record(
            n.JOB_ROLE_PREFIX_CACHE_HIT_RATIO,
            _per_job_role_ratio(
                Q.PREFIX_CACHE_HITS,
                Q.PREFIX_CACHE_QUERIES,
                Q.PREFIX_CACHE_HIT_RATE,
                n.REPLICA_PREFIX_CACHE_HIT_RATIO,
            ),
            "Per Ray job, role and engine: the prefix-cache hit rate (0-1; vLLM weighted by "
            "queried tokens, SGLang the mean of its servers).",
        ),
        Record(
            n.REPLICA_SPEC_ACCEPTANCE_RATIO,
            _per_replica_ratio(
                Q.SPEC_ACCEPTED_TOKENS,
                Q.SPEC_DRAFT_TOKENS,
                Q.SPEC_ACCEPT_RATE,
                Q.SPEC_ACCEPT_LENGTH,
            ),
            "Per rollout server: what share of the speculative (draft, e.g. MTP) tokens did the "
            "target model accept in the last minute? (0-1; only servers running speculative "
            "decoding.)",
        ),
        Record(
            n.JOB_ROLE_SPEC_ACCEPTANCE_RATIO,
            _per_job_role_ratio(
                Q.SPEC_ACCEPTED_TOKENS,
                Q.SPEC_DRAFT_TOKENS,
                Q.SPEC_ACCEPT_RATE,
                n.REPLICA_SPEC_ACCEPTANCE_RATIO,
            ),
            "Per Ray job, role and engine: speculative-decoding acceptance rate (0-1).",
        ),
        Record(
            n.JOB_ROLE_SPEC_ACCEPT_LENGTH,
            _spec_accept_length(),
            "Per Ray job, role and engine: tokens produced per speculative step (accepted "
            "draft tokens plus the target model's own; 1 = no draft token accepted).",
        ),
        Record(
            n.JOB_ROLE_PREFILL_TIME_MEAN,
            _histogram_mean(Q.PREFILL_TIME),
            "Per Ray job, role and engine: mean seconds a finished request spent in prefill "
            "(vLLM request_prefill_time_seconds).",
        ),
        Record(
            n.JOB_ROLE_DECODE_TIME_MEAN,
            _histogram_mean(Q.DECODE_TIME),
            "Per Ray job, role and engine: mean seconds a finished request spent decoding "
            "(vLLM request_decode_time_seconds).",
        ),
        Record(
            n.JOB_ROLE_PREFILL_TIME_SHARE,
            _prefill_share(),
            "Per Ray job, role and engine: what share of the finished requests' prefill plus "
            "decode time was prefill? (0-1) High with long prompts and short responses; RL "
            "rollouts are usually decode-bound.",
        ),
        Record(
            n.REPLICA_ENGINE_IDLE_RATIO,
            per_replica(Q.IDLE_SECONDS, "clamp_max(rate({}[1m]), 1)", agg="avg"),
            "Per rollout server: what fraction of the last minute did the engine itself have "
            "no runnable or queued request? (0-1; SGLang >= 0.5.23 scheduler_idle_seconds_total, "
            "dp ranks averaged.) Compare with the GPU's idle fraction from fsd-gpu-exporter: an "
            "engine busy on an idle GPU waits on something else (CPU, weight sync, network).",
        ),
        Record(
            n.ROLLOUT_REPLICA_ENGINE_IDLE_RATIO,
            f"avg by ({PER_REPLICA}) (\n  {n.REPLICA_ENGINE_IDLE_RATIO}\n)",
            "Per replica: the engine idle fraction averaged over its servers, to set beside "
            "its GPUs' idle fraction (joined on cluster, ray_job_id, replica).",
        ),
    )


def _probe_404() -> str:
    return f"{n.DAEMON_METRICS_PROBE_STATUS}{{{_HAS_ROUTE}}} == 404"


# Engines whose series names are checked upstream (names.ENGINE_PREFIXES): only their targets
# can be told to "export no engine series". TRT-LLM and Dynamo (engine="dynamo", the Dynamo
# frontend) are left out until their metric names are checked in their sources.
_CHECKED_ENGINES = "|".join(engines.BY_LABEL)


def rollout_alerts() -> tuple[Alert, ...]:
    engine_series = (
        f"group by ({n.JOB}, {n.INSTANCE}) ({n.VLLM_REQUESTS_RUNNING})\n"
        f"  or\n  group by ({n.JOB}, {n.INSTANCE}) ({n.SGLANG_REQUESTS_RUNNING})\n"
        f"  or\n  group by ({n.JOB}, {n.INSTANCE}) ({n.SGLANG_REQUESTS})"
    )
    return (
        Alert(
            n.ALERT_ROLLOUT_TARGET_DOWN,
            f'up{{job="{n.JOB_ROLLOUT}", {_HAS_ROUTE}}} == 0\n'
            f"unless on ({n.INSTANCE})\n"
            f'  label_join({_probe_404()}, "{n.INSTANCE}", "", "{n.PROBE_ADDRESS}")',
            "Is a rollout server that Ray still lists not answering Prometheus? (fsd-daemon "
            "removes servers whose actors died, so a target stays down only while its actor is "
            "alive.) Servers without a metrics route are a known cause and left out: a 404 "
            f"({n.ALERT_ROLLOUT_METRICS_ROUTE_MISSING}), so a default verl SGLang job raises one "
            "precise alert per server instead of a target-down storm, and verl <= 0.5 servers "
            f'(metrics_route="absent", {n.ALERT_ROLLOUT_VERL_TOO_OLD}), down by construction.',
            summary="Rollout server {{ $labels.actor_name }} ({{ $labels.engine }}) is not "
            "scrapeable",
            description="Prometheus cannot scrape {{ $labels.instance }}, the "
            "{{ $labels.engine }} server of actor {{ $labels.actor_name }} (role "
            "{{ $labels.role }}, replica {{ $labels.replica }}, Ray job {{ $labels.ray_job_id }}) "
            "on {{ $labels.node_ip }}. Check the target's error on Prometheus' /targets page and "
            "the actor in the Ray dashboard; `fsd-daemon doctor` says which link fails. A hung "
            "server stalls the whole rollout batch.",
            for_="5m",
        ),
        Alert(
            n.ALERT_ROLLOUT_METRICS_ROUTE_MISSING,
            _probe_404(),
            "Does a rollout server answer its metrics path with 404? Prometheus alone sees a "
            "404 as a failed scrape (up == 0) like a dead server; fsd-daemon's probe "
            f"({n.DAEMON_METRICS_PROBE_STATUS}, fsd_daemon/probe.py) tells them apart. SGLang "
            "under verl's defaults has no /metrics route.",
            summary="Rollout server {{ $labels.actor_name }} ({{ $labels.engine }}) has no "
            "metrics route",
            description="{{ $labels.address }}{{ $labels.metrics_path }}, the "
            "{{ $labels.engine }} server of actor {{ $labels.actor_name }} (Ray job "
            "{{ $labels.ray_job_id }}, replica {{ $labels.replica }}), answers HTTP 404: the "
            "engine was started without metrics. " + _route_fix_template(),
            for_="5m",
        ),
        Alert(
            n.ALERT_ROLLOUT_VERL_TOO_OLD,
            f'up{{job="{n.JOB_ROLLOUT}", {_NO_ROUTE}}} == 0',
            "Is a rollout server a verl <= 0.5 one, which has no metrics route at all? fsd-daemon "
            'lists such servers with metrics_route="absent" (they hold GPUs, whose busy and idle '
            "time still shows), so their target is down by construction: this says why, once "
            f"per server, instead of {n.ALERT_ROLLOUT_TARGET_DOWN}. Severity info: nothing is "
            "broken, the metrics need a newer verl.",
            summary="Rollout server {{ $labels.actor_name }} runs verl <= 0.5: no metrics "
            "(upgrade verl to >= 0.6 for metrics)",
            description="{{ $labels.instance }}, the {{ $labels.engine }} server of actor "
            "{{ $labels.actor_name }} (Ray job {{ $labels.ray_job_id }}, replica "
            "{{ $labels.replica }}), was started by verl <= 0.5, whose rollout server app serves "
            "only /v1/chat/completions: there is no metrics route to scrape, so its load, "
            "token and latency panels stay empty (its GPUs' busy and idle time comes from "
            "fsd-gpu-exporter and is still shown). Upgrade verl to >= 0.6 for metrics.",
            severity="info",
            for_="5m",
        ),
        Alert(
            n.ALERT_ROLLOUT_NO_ENGINE_SERIES,
            f'up{{job="{n.JOB_ROLLOUT}", {n.ENGINE}=~"{_CHECKED_ENGINES}"}} == 1\n'
            f"unless on ({n.JOB}, {n.INSTANCE}) (\n  {engine_series}\n)",
            "Is a rollout server scraped fine but without any engine series? vLLM under verl's "
            f"default {LOG_STATS.dotted}={LOG_STATS.default} serves /metrics with only process "
            "and Python series, so every panel of the job is empty and nothing else alerts.",
            summary="Rollout server {{ $labels.actor_name }} ({{ $labels.engine }}) exports no "
            "engine metrics",
            description="Prometheus scrapes {{ $labels.instance }}, the {{ $labels.engine }} "
            "server of actor {{ $labels.actor_name }} (Ray job {{ $labels.ray_job_id }}, "
            "replica {{ $labels.replica }}), but it carries no {{ $labels.engine }}: series: "
            "the engine runs with its statistics off. Set " + _verl_fix_template() + " in the "
            "verl job's config and restart the job.",
            for_="10m",
        ),
    )


def daemon_alerts() -> tuple[Alert, ...]:
    return (
        Alert(
            n.ALERT_DAEMON_DOWN,
            f'up{{job="{n.JOB_DAEMON}"}} == 0 or absent(up{{job="{n.JOB_DAEMON}"}})',
            "Is fsd-daemon's own metrics endpoint unreachable or not configured in Prometheus?",
            summary="fsd-daemon is down or not scraped",
            description='Prometheus cannot scrape fsd-daemon\'s metrics (job "fsd_daemon", '
            "127.0.0.1:9848 on the Ray head node). While the daemon is down, target files are "
            "not updated: new rollout servers are not scraped and gone ones stay listed. Run "
            "`systemctl status fsd-daemon` and `journalctl -u fsd-daemon -e` on the head node; "
            "check that FSD_DAEMON_METRICS_LISTEN is set in /etc/default/fsd-daemon.",
            severity="critical",
            for_="5m",
        ),
        Alert(
            n.ALERT_DAEMON_STALE,
            f"time() - {n.DAEMON_LAST_SUCCESSFUL_POLL} > 120",
            "Has fsd-daemon gone too long without a successful poll of Ray?",
            summary="fsd-daemon has not polled Ray successfully for "
            "{{ $value | humanizeDuration }}",
            description="fsd-daemon on {{ $labels.instance }} runs but its last successful poll "
            "of Ray is {{ $value | humanizeDuration }} old, so the target files are stale. See "
            f"{n.DAEMON_POLL_ERRORS} for the failing step and `journalctl -u fsd-daemon`; usual "
            "causes: Ray's dashboard is down, RAY_ADDRESS is wrong, or the Ray auth token "
            "(RAY_AUTH_TOKEN_PATH) is missing or out of date after a Ray restart.",
            for_="3m",
        ),
        Alert(
            n.ALERT_DAEMON_UNHEALTHY,
            f"{n.DAEMON_HEALTHY} == 0",
            "Does fsd-daemon report itself unhealthy (a poll or a target file write keeps "
            "failing)?",
            summary="fsd-daemon on {{ $labels.instance }} reports itself unhealthy",
            description=f"{n.DAEMON_HEALTHY} has been 0 for 10 minutes: its last poll or a "
            "write of a target file failed (the previous file is kept). Check `journalctl -u "
            "fsd-daemon`, free space and permissions of the output directory "
            f"(/var/lib/fsd-daemon/targets), and {n.DAEMON_POLL_ERRORS} by kind.",
            for_="10m",
        ),
        Alert(
            n.ALERT_DAEMON_DROPPING_TARGETS,
            f"sum by (instance, file, reason) (increase({n.DAEMON_DROPPED_TARGETS}[10m])) > 0",
            "Is fsd-daemon leaving rollout servers out of the target files?",
            summary="fsd-daemon dropped targets from {{ $labels.file }} ({{ $labels.reason }})",
            description="In the last 10 minutes fsd-daemon left targets out of "
            '{{ $labels.file }} for reason "{{ $labels.reason }}", so those servers are not '
            "monitored. Run `fsd-daemon targets` on the head node to see which, and fix the "
            "label value or recognition pattern named in the daemon's log.",
        ),
    )


def rollout_file() -> RuleFile:
    records = _load_records() + _sleep_records() + _long_tail_records() + _engine_feature_records()
    return RuleFile(
        "fsd-rollout.rules.yml",
        ROLLOUT_HEADER,
        (
            Group(n.GROUP_ROLLOUT_RECORDS, records),
            Group(n.GROUP_ROLLOUT_ALERTS, rollout_alerts()),
            Group(n.GROUP_DAEMON_ALERTS, daemon_alerts()),
        ),
    )


def rule_files() -> tuple[RuleFile, ...]:
    return (gpu_file(), rollout_file())


# --- YAML -------------------------------------------------------------------------------------


def as_data(rule_file: RuleFile) -> dict[str, object]:
    """The file as Prometheus reads it (what the rendered YAML must load back to)."""
    groups = []
    for group in rule_file.groups:
        rules: list[dict[str, object]] = []
        for rule in group.rules:
            if isinstance(rule, Record):
                rules.append({"record": rule.name, "expr": rule.expr})
                continue
            alert: dict[str, object] = {"alert": rule.name, "expr": rule.expr}
            if rule.for_:
                alert["for"] = rule.for_
            alert["labels"] = {"severity": rule.severity}
            alert["annotations"] = {"summary": rule.summary, "description": rule.description}
            rules.append(alert)
        groups.append({"name": group.name, "rules": rules})
    return {"groups": groups}


def _comment(text: str, indent: int) -> list[str]:
    prefix = " " * indent + "# "
    lines: list[str] = []
    for paragraph in text.split("\n"):
        lines += textwrap.wrap(paragraph, _WIDTH - len(prefix)) or [""]
    return [(prefix + line).rstrip() for line in lines]


def _scalar(key: str, value: str, indent: int) -> list[str]:
    pad = " " * indent
    if "\n" not in value and _plain_ok(value):
        return [f"{pad}{key}: {value}"]
    body = [(pad + "  " + line).rstrip() for line in value.split("\n")]
    return [f"{pad}{key}: |-", *body]


def _plain_ok(value: str) -> bool:
    try:
        return bool(yaml.safe_load(f"k: {value}") == {"k": value})
    except yaml.YAMLError:
        return False


_TEMPLATE_RE = re.compile(r"\{\{.*?\}\}")
_KEEP = "\x00"  # stands for a space inside {{ ... }} while wrapping


def _folded(key: str, value: str, indent: int) -> list[str]:
    """A folded block scalar; lines break between words, never inside a {{ template }}."""
    pad = " " * indent
    glued = _TEMPLATE_RE.sub(lambda m: m.group(0).replace(" ", _KEEP), value)
    wrapped = textwrap.wrap(glued, _WIDTH - indent - 2, break_long_words=False)
    return [f"{pad}{key}: >-", *(pad + "  " + line.replace(_KEEP, " ") for line in wrapped)]


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(rule_file: RuleFile) -> str:
    """The YAML text of one rule file: a comment per rule, block scalars for long text."""
    out = [f"# {line}".rstrip() for line in rule_file.header.split("\n")]
    out.append(
        "# Generated by `python -m fsd_daemon.mixin.rules --write`: edit fsd_daemon/mixin/rules.py."
    )
    out.append("groups:")
    for group in rule_file.groups:
        out += [f"  - name: {group.name}", "    rules:"]
        for i, rule in enumerate(group.rules):
            if i:
                out.append("")
            out += _comment(rule.comment, 6)
            if isinstance(rule, Record):
                out.append(f"      - record: {rule.name}")
                out += _scalar("expr", rule.expr, 8)
                continue
            out.append(f"      - alert: {rule.name}")
            out += _scalar("expr", rule.expr, 8)
            if rule.for_:
                out.append(f"        for: {rule.for_}")
            out += [
                "        labels:",
                f"          severity: {rule.severity}",
                "        annotations:",
            ]
            out.append(f"          summary: {_quoted(rule.summary)}")
            out += _folded("description", rule.description, 10)
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def stale_files(directory: Path = RULES_DIR) -> list[str]:
    """Names of the rule files in ``directory`` that differ from what the code generates."""
    stale = []
    for rule_file in rule_files():
        path = directory / rule_file.filename
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current != render(rule_file):
            stale.append(rule_file.filename)
    return stale


def write(directory: Path = RULES_DIR) -> list[str]:
    """Write every rule file whose content changed; returns their names."""
    written = []
    for name in stale_files(directory):
        rule_file = next(f for f in rule_files() if f.filename == name)
        (directory / name).write_text(render(rule_file), encoding="utf-8")
        written.append(name)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fsd_daemon.mixin.rules",
        description="Generate the Prometheus rule files from fsd_daemon.mixin.rules.",
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="rewrite the files that changed")
    action.add_argument("--check", action="store_true", help="exit 1 if a file is stale")
    parser.add_argument("--dir", type=Path, default=RULES_DIR, help="rule directory")
    args = parser.parse_args(argv)
    if not args.dir.is_dir():
        print(f"fsd_daemon.mixin.rules: no such directory: {args.dir}", file=sys.stderr)
        return 2
    if args.write:
        for name in write(args.dir):
            print(f"wrote {args.dir / name}")
        return 0
    stale = stale_files(args.dir)
    for name in stale:
        print(
            f"{args.dir / name} is stale: run python -m fsd_daemon.mixin.rules --write",
            file=sys.stderr,
        )
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
