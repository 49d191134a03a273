"""Every metric, label, scrape-job, rule and alert name the project relies on, in one place.

Rules (:mod:`fsd_daemon.mixin.rules`), dashboards, the report, ``fsd-daemon doctor`` and the
tests import these constants instead of spelling names themselves, so a rename upstream (vLLM
renamed ``gpu_cache_usage_perc`` to ``kv_cache_usage_perc``) is one edit here.

Upstream names were checked against the sources (see docs/upstream.md for the list):
vLLM 0.33 and 0.34 ``vllm/v1/metrics/loggers.py``; SGLang 0.5.10 and 0.5.23
``python/sglang/srt/observability/metrics_collector.py``; verl main (1dda039b)
``verl/trainer/config/rollout/rollout.yaml``. Which engine release exports which of these
series, with which labels, is :mod:`fsd_daemon.recognition.engines`.

Recording rules follow Prometheus' ``level:metric:operations`` convention.
"""

from __future__ import annotations

from collections.abc import Iterable

# --- Scrape jobs (prometheus.yml job_name; fsd_daemon.prometheus.scrape_config writes them) ---
JOB_ROLLOUT = "rollout"
JOB_GPU = "gpu"
JOB_RAY = "ray"
JOB_DAEMON = "fsd_daemon"
# The jobs fsd-daemon writes target files for, in the order doctor checks them.
TARGET_JOBS = (JOB_ROLLOUT, JOB_GPU, JOB_RAY)

# --- Target labels (written by fsd-daemon into the file_sd files) ------------------------------
CLUSTER = "cluster"
RAY_JOB_ID = "ray_job_id"
ROLE = "role"
REPLICA = "replica"
ENGINE = "engine"
# The half of a prefill/decode disaggregated replica ("prefill" or "decode"); absent when the
# replica is not disaggregated. Both halves are role="rollout" (docs/upstream.md).
DISAGGREGATION = "disaggregation"
# The teacher key, only on role="teacher" targets: two teachers may both have replica 0.
TEACHER = "teacher"
# "absent" on verl <= 0.5 servers, which have no metrics route at all; absent otherwise.
METRICS_ROUTE = "metrics_route"
ACTOR_NAME = "actor_name"
NODE_IP = "node_ip"
NODE_NAME = "node_name"
INSTANCE = "instance"
JOB = "job"
# Put on target series by Ray / fsd-daemon (fsd_daemon/pipeline/render.py); dashboards hide them in
# tables.
NODE_ID = "node_id"
RAY_NAMESPACE = "ray_namespace"
# The Ray session a rollout server's actor belongs to (actor and job ids repeat across sessions).
RAY_SESSION = "ray_session"
# "true" or "false" on gpu.json and ray.json node targets.
IS_HEAD_NODE = "is_head_node"
MODEL_NAME = "model_name"  # put on every series by vLLM and SGLang themselves
# Prometheus' per-target metrics path (set per group in the target file, e.g. TRT-LLM's).
METRICS_PATH = "__metrics_path__"
DEFAULT_METRICS_PATH = "/metrics"

# Which of Ray's own metrics endpoints a ray.json target is, as Ray's service-discovery file
# (PrometheusServiceDiscoveryWriter, ray/_private/metrics_agent.py, Ray 2.44.1 and 2.60) lists
# them: every alive node's metrics export port, and the addresses the dashboard and the
# autoscaler put in the GCS key-value store (DashboardMetricsAddress, AutoscalerMetricsAddress).
RAY_COMPONENT = "ray_component"
RAY_COMPONENT_NODE = "node"
RAY_COMPONENT_DASHBOARD = "dashboard"
RAY_COMPONENT_AUTOSCALER = "autoscaler"
# The GCS key-value store keys (namespace None) of the components other than the nodes.
RAY_COMPONENT_KV_KEYS = {
    RAY_COMPONENT_DASHBOARD: "DashboardMetricsAddress",
    RAY_COMPONENT_AUTOSCALER: "AutoscalerMetricsAddress",
}
# The fields of Ray's state API node records that discovery reads (NodeState,
# python/ray/util/state/common.py, the same in Ray 2.44.1 and 2.60); the static cluster file
# (fsd_daemon/discovery/static.py) repeats the first three. These are Ray's words: the node labels
# above reuse them, but a label rename must leave these alone.
RAY_NODE_ID_FIELD = "node_id"
RAY_NODE_IP_FIELD = "node_ip"
RAY_NODE_NAME_FIELD = "node_name"
RAY_IS_HEAD_NODE_FIELD = "is_head_node"

# Label values.
ROLE_ROLLOUT = "rollout"
ENGINE_VLLM = "vllm"
ENGINE_SGLANG = "sglang"
ENGINE_TRTLLM = "trtllm"
# NVIDIA Dynamo's frontend (verl-recipe dynamo/). Its own metric names are not checked against
# Dynamo's source yet, so no rule reads them: a dynamo target counts in up{} only.
ENGINE_DYNAMO = "dynamo"
ENGINES = (ENGINE_VLLM, ENGINE_SGLANG, ENGINE_TRTLLM, ENGINE_DYNAMO)  # every engine label value
DISAGGREGATION_PREFILL = "prefill"
DISAGGREGATION_DECODE = "decode"
METRICS_ROUTE_ABSENT = "absent"

# One series per rollout server after the rules' aggregation. instance and actor_name stay
# because a disaggregated replica has several servers (one prefill, N decode);
# disaggregation and teacher stay so that a replica's prefill and decode servers, and two
# teachers that both have replica 0, remain told apart by label, not only by instance.
REPLICA_LABELS = (
    CLUSTER,
    RAY_JOB_ID,
    ROLE,
    TEACHER,
    REPLICA,
    DISAGGREGATION,
    ENGINE,
    INSTANCE,
    ACTOR_NAME,
    NODE_IP,
    MODEL_NAME,
)
# One series per replica: its servers (prefill and decode halves) summed.
ROLLOUT_REPLICA_LABELS = (CLUSTER, RAY_JOB_ID, ROLE, TEACHER, REPLICA, ENGINE)
# Per job and role; teacher stays so that two teachers (two models) are never summed together.
JOB_ROLE_LABELS = (CLUSTER, RAY_JOB_ID, ROLE, TEACHER)
JOB_ROLE_ENGINE_LABELS = (*JOB_ROLE_LABELS, ENGINE)
# Who holds a GPU, as the GPU exporter labels it and as rollout targets carry it: the join key
# between engine state (rollout job) and GPU time (gpu job).
GPU_OWNER_JOIN = (CLUSTER, RAY_JOB_ID, REPLICA)
# The GPU exporter's labels (fsd_daemon/gpu/collector.py): the GPU's index and UUID on its node.
GPU = "gpu"
GPU_UUID = "uuid"
# A GPU's identity: busy time and ownership come from the same exporter target.
GPU_IDENTITY = (CLUSTER, JOB, INSTANCE, GPU)

# --- vLLM V1 (0.33, 0.34: vllm/v1/metrics/loggers.py) -----------------------------------------
VLLM_PREFIX = "vllm:"
# vLLM's own label on every series: the data-parallel engine index. Prometheus renames it
# exported_engine on rollout targets, whose target label "engine" wins.
VLLM_ENGINE_INDEX = "engine"
VLLM_REQUESTS_RUNNING = "vllm:num_requests_running"
VLLM_REQUESTS_WAITING = "vllm:num_requests_waiting"
VLLM_KV_CACHE_USAGE = "vllm:kv_cache_usage_perc"  # 0-1 despite the name
VLLM_GENERATION_TOKENS = "vllm:generation_tokens_total"
VLLM_PROMPT_TOKENS = "vllm:prompt_tokens_total"
VLLM_REQUEST_SUCCESS = "vllm:request_success_total"  # + finished_reason
VLLM_PREEMPTIONS = "vllm:num_preemptions_total"
VLLM_TTFT = "vllm:time_to_first_token_seconds"  # histograms: add _bucket/_sum/_count
VLLM_ITL = "vllm:inter_token_latency_seconds"
VLLM_E2E_LATENCY = "vllm:e2e_request_latency_seconds"
VLLM_QUEUE_TIME = "vllm:request_queue_time_seconds"
VLLM_GENERATION_TOKENS_HISTOGRAM = "vllm:request_generation_tokens"
VLLM_MAX_TOKENS_HISTOGRAM = "vllm:request_params_max_tokens"
# Prefix cache, in tokens: hits / queries is the hit rate.
VLLM_PREFIX_CACHE_QUERIES = "vllm:prefix_cache_queries_total"
VLLM_PREFIX_CACHE_HITS = "vllm:prefix_cache_hits_total"
# Per request: time in the PREFILL and in the DECODE phase (histograms).
VLLM_PREFILL_TIME = "vllm:request_prefill_time_seconds"
VLLM_DECODE_TIME = "vllm:request_decode_time_seconds"
# Speculative decoding (vllm/v1/spec_decode/metrics.py), exported only with a speculative
# config (verl: MTP): accepted / draft tokens is the acceptance rate.
VLLM_SPEC_DRAFTS = "vllm:spec_decode_num_drafts_total"
VLLM_SPEC_DRAFT_TOKENS = "vllm:spec_decode_num_draft_tokens_total"
VLLM_SPEC_ACCEPTED_TOKENS = "vllm:spec_decode_num_accepted_tokens_total"
SPECULATIVE_CONFIG = "speculative_config"  # the vLLM setting that turns the series on
# 1 on the series of the current state; "awake" is 0 while the engine sleeps.
VLLM_SLEEP_STATE = "vllm:engine_sleep_state"
SLEEP_STATE = "sleep_state"
SLEEP_AWAKE = "awake"
SLEEP_WEIGHTS_OFFLOADED = "weights_offloaded"  # sleep level 1
SLEEP_DISCARD_ALL = "discard_all"  # sleep level 2
FINISHED_REASON = "finished_reason"
FINISHED_LENGTH = "length"  # hit max_tokens: the response was truncated
FINISHED_ABORT = "abort"
FINISHED_STOP = "stop"

# --- SGLang (0.5.10, 0.5.23: python/sglang/srt/observability/metrics_collector.py) ------------
SGLANG_PREFIX = "sglang:"
SGLANG_REQUESTS_RUNNING = "sglang:num_running_reqs"
SGLANG_REQUESTS_WAITING = "sglang:num_queue_reqs"
SGLANG_TOKEN_USAGE = "sglang:token_usage"
SGLANG_GENERATION_TOKENS = "sglang:generation_tokens_total"
SGLANG_PROMPT_TOKENS = "sglang:prompt_tokens_total"
SGLANG_REQUESTS = "sglang:num_requests_total"
SGLANG_ABORTED_REQUESTS = "sglang:num_aborted_requests_total"
SGLANG_RETRACTED_REQUESTS = "sglang:num_retracted_requests_total"  # SGLang's preemption
SGLANG_PAUSED_REQUESTS = "sglang:num_paused_reqs"  # paused by an async weight sync
SGLANG_TTFT = "sglang:time_to_first_token_seconds"
SGLANG_ITL = "sglang:inter_token_latency_seconds"
SGLANG_E2E_LATENCY = "sglang:e2e_request_latency_seconds"
SGLANG_QUEUE_TIME = "sglang:queue_time_seconds"
SGLANG_CACHE_HIT_RATE = "sglang:cache_hit_rate"  # 0-1, the last prefill batches'
SGLANG_SPEC_ACCEPT_RATE = "sglang:spec_accept_rate"  # 0-1, accepted / draft tokens
SGLANG_SPEC_ACCEPT_LENGTH = "sglang:spec_accept_length"  # mean accepted tokens per step
# 0.5.23+: wall time the scheduler had no runnable or queued work (the engine's own idle time).
SGLANG_SCHEDULER_IDLE = "sglang:scheduler_idle_seconds_total"
# Scheduler series carry these: every tensor/pipeline/expert rank reports the same batch.
SGLANG_TP_RANK = "tp_rank"
SGLANG_PP_RANK = "pp_rank"
SGLANG_MOE_EP_RANK = "moe_ep_rank"
SGLANG_DP_RANK = "dp_rank"
# prefill / decode / unified (DisaggregationMode.to_engine_type): scheduler series, and since
# 0.5.23 the tokenizer's too.
SGLANG_ENGINE_TYPE = "engine_type"
SGLANG_ENGINE_UNIFIED = "unified"
# 0.5.23+: "true" / "false" on the tokenizer's token and request counters, TTFT and e2e latency.
SGLANG_IS_STREAMING = "is_streaming"

# Engine prefix by engine label value, for "does this server export engine series?". TRT-LLM's
# and Dynamo's prefixes are not checked against their sources: those engines are not listed,
# so neither doctor nor the rules claim their series are missing.
ENGINE_PREFIXES = {ENGINE_VLLM: VLLM_PREFIX, ENGINE_SGLANG: SGLANG_PREFIX}

# --- fsd-gpu-exporter (fsd_daemon/gpu/collector.py) -------------------------------------------
GPU_BUSY_SECONDS = "fsd_gpu_busy_seconds_total"
GPU_OWNER_INFO = "fsd_gpu_owner_info"
GPU_NVML_UP = "fsd_gpu_nvml_up"
GPU_NVML_ERRORS = "fsd_gpu_nvml_errors_total"
NVML_FUNCTION = "function"  # GPU_NVML_ERRORS' label: the failing NVML call
# 1 per GPU; its method label says how busy time is measured (samples, utilization_rates).
GPU_BUSY_SOURCE_INFO = "fsd_gpu_busy_source_info"
BUSY_SOURCE_METHOD = "method"
# GPU_OWNER_INFO's state label (fsd_daemon/gpu/ownership.py): a process holds memory on the GPU
# (active) or the GPU was handed to an actor through CUDA_VISIBLE_DEVICES only (reserved).
OWNER_STATE = "state"
# GPU_OWNER_INFO's verl rollout mode of a replica's GPU: hybrid, colocated or standalone
# (fsd_daemon/recognition/verl.py ROLLOUT_MODES); empty where it cannot be told. Beside it the
# owner series carry TEACHER, the teacher key of a teacher replica's GPUs.
ROLLOUT_MODE = "rollout_mode"
OWNER_ACTIVE = "active"
OWNER_RESERVED = "reserved"
GPU_PREFIX = "fsd_gpu_"

# --- fsd-daemon's own metrics (fsd_daemon/pipeline/selfmetrics.py, fsd_daemon/probe.py) ---------
DAEMON_LAST_SUCCESSFUL_POLL = "fsd_daemon_last_successful_poll_timestamp_seconds"
DAEMON_HEALTHY = "fsd_daemon_healthy"
DAEMON_DROPPED_TARGETS = "fsd_daemon_dropped_targets_total"
DAEMON_POLL_ERRORS = "fsd_daemon_poll_errors_total"
# HTTP status of the last GET of each rollout server's metrics path (0: no HTTP answer).
DAEMON_METRICS_PROBE_STATUS = "fsd_daemon_rollout_metrics_probe_http_status"
# Engine series (vllm:..., sglang:...) found in the last answer of that GET.
DAEMON_METRICS_PROBE_ENGINE_SERIES = "fsd_daemon_rollout_metrics_probe_engine_series"
PROBE_ADDRESS = "address"  # the probe's label for the target address (Prometheus' instance)

# --- Prometheus' own series and labels -------------------------------------------------------
UP = "up"  # 1 when the last scrape of a target succeeded
METRIC_NAME = "__name__"
HISTOGRAM_BOUND = "le"  # a histogram bucket's upper bound

# --- Recording rules: GPU time ----------------------------------------------------------------
GPU_BUSY_RATIO = "gpu:fsd_gpu_busy:ratio_rate1m"
GPU_IDLE_RATIO = "gpu:fsd_gpu_idle:ratio_rate1m"
GPU_ROLE_BUSY_RATIO = "gpu_role:fsd_gpu_busy:ratio_rate1m"
GPU_ROLE_IDLE_RATIO = "gpu_role:fsd_gpu_idle:ratio_rate1m"
CLUSTER_ROLE_BUSY_RATIO = "cluster_role:fsd_gpu_busy:ratio_rate1m"
CLUSTER_ROLE_IDLE_RATIO = "cluster_role:fsd_gpu_idle:ratio_rate1m"
JOB_ROLE_GPU_BUSY_RATIO = "cluster_job_role:fsd_gpu_busy:ratio_rate1m"
JOB_ROLE_GPUS = "cluster_job_role:fsd_gpus:count"
JOB_ROLLOUT_IDLE_GPUS = "cluster_job:fsd_gpu_rollout_idle_gpus:sum_rate1m"
JOB_ROLLOUT_IDLE_GPU_HOURS = "cluster_job:fsd_gpu_rollout_idle_gpu_hours:sum1h"

# Sleep-aware accounting of rollout GPU time: asleep (the engine sleeps, the GPU is the
# trainer's), awake-busy, awake-idle. Per GPU the three add up to 1.
ASLEEP = "asleep"
AWAKE_BUSY = "awake_busy"
AWAKE_IDLE = "awake_idle"
GPU_STATES = (ASLEEP, AWAKE_BUSY, AWAKE_IDLE)


def gpu_rollout_state_ratio(state: str) -> str:
    """Per rollout GPU: the fraction of the last minute in ``state`` (0-1)."""
    return f"gpu_role:fsd_gpu_rollout_{_state(state)}:ratio_rate1m"


def replica_rollout_state_gpus(state: str) -> str:
    """Per rollout replica: how many of its GPUs' worth of time is in ``state``."""
    return f"cluster_job_replica:fsd_gpu_rollout_{_state(state)}_gpus:sum_rate1m"


def job_rollout_state_gpus(state: str) -> str:
    """Per Ray job: how many rollout GPUs' worth of time is in ``state``."""
    return f"cluster_job:fsd_gpu_rollout_{_state(state)}_gpus:sum_rate1m"


def replica_engine_state(state: str) -> str:
    """Per rollout server: 1 when its engine is in ``state`` now, else 0."""
    return f"replica:fsd_rollout_engine_{_state(state)}:bool"


def job_role_replicas_in_state(state: str) -> str:
    """Per Ray job and role: how many rollout servers are in ``state`` now."""
    return f"cluster_job_role:fsd_rollout_replicas_{_state(state)}:sum"


def _state(state: str) -> str:
    if state not in GPU_STATES:
        raise ValueError(f"unknown state {state!r}; one of {', '.join(GPU_STATES)}")
    return state


# --- Recording rules: rollout load ------------------------------------------------------------
REPLICA_REQUESTS_RUNNING = "replica:fsd_rollout_requests_running:sum"
REPLICA_REQUESTS_WAITING = "replica:fsd_rollout_requests_waiting:sum"
REPLICA_GENERATION_TOKENS_RATE = "replica:fsd_rollout_generation_tokens:rate1m"
REPLICA_PROMPT_TOKENS_RATE = "replica:fsd_rollout_prompt_tokens:rate1m"
# Per replica (all its servers): a disaggregated replica's prefill and decode halves summed.
ROLLOUT_REPLICA_GENERATION_TOKENS_RATE = "cluster_job_replica:fsd_rollout_generation_tokens:rate1m"
ROLLOUT_REPLICA_PROMPT_TOKENS_RATE = "cluster_job_replica:fsd_rollout_prompt_tokens:rate1m"
REPLICA_KV_CACHE_USAGE = "replica:fsd_rollout_kv_cache_usage:ratio"
REPLICA_REQUESTS_FINISHED_RATE = "replica:fsd_rollout_requests_finished:rate1m"
# Prefix-cache hit rate (0-1): vLLM's hit / queried tokens, SGLang's own cache_hit_rate.
REPLICA_PREFIX_CACHE_HIT_RATIO = "replica:fsd_rollout_prefix_cache_hit:ratio_rate1m"
JOB_ROLE_PREFIX_CACHE_HIT_RATIO = "cluster_job_role:fsd_rollout_prefix_cache_hit:ratio_rate1m"
# Speculative decoding: accepted / draft tokens (0-1), and accepted tokens per draft step.
REPLICA_SPEC_ACCEPTANCE_RATIO = "replica:fsd_rollout_spec_decode_acceptance:ratio_rate1m"
JOB_ROLE_SPEC_ACCEPTANCE_RATIO = "cluster_job_role:fsd_rollout_spec_decode_acceptance:ratio_rate1m"
JOB_ROLE_SPEC_ACCEPT_LENGTH = "cluster_job_role:fsd_rollout_spec_decode_accept_length:avg_rate1m"
# Per request, mean seconds in the prefill and in the decode phase, and prefill's share.
JOB_ROLE_PREFILL_TIME_MEAN = "cluster_job_role:fsd_rollout_request_prefill_time_seconds:avg_rate1m"
JOB_ROLE_DECODE_TIME_MEAN = "cluster_job_role:fsd_rollout_request_decode_time_seconds:avg_rate1m"
JOB_ROLE_PREFILL_TIME_SHARE = "cluster_job_role:fsd_rollout_request_prefill_time:ratio_rate1m"
# The engine's own idle fraction (SGLang's scheduler_idle_seconds_total), per server and per
# replica, to put beside the GPU's idle fraction from fsd-gpu-exporter.
REPLICA_ENGINE_IDLE_RATIO = "replica:fsd_rollout_engine_idle:ratio_rate1m"
ROLLOUT_REPLICA_ENGINE_IDLE_RATIO = "cluster_job_replica:fsd_rollout_engine_idle:ratio_rate1m"
JOB_ROLE_REPLICAS = "cluster_job_role:fsd_rollout_replicas:count"
JOB_ROLE_REQUESTS_RUNNING = "cluster_job_role:fsd_rollout_requests_running:sum"
JOB_ROLE_GENERATION_TOKENS_RATE = "cluster_job_role:fsd_rollout_generation_tokens:rate1m"
JOB_ROLE_PROMPT_TOKENS_RATE = "cluster_job_role:fsd_rollout_prompt_tokens:rate1m"
JOB_ROLE_REPLICAS_BUSY_RATIO = "cluster_job_role:fsd_rollout_replicas_busy:ratio"
JOB_ROLE_REQUESTS_RUNNING_MAX_OVER_AVG = (
    "cluster_job_role:fsd_rollout_requests_running:max_over_avg"
)
JOB_ROLE_TTFT_BUCKETS = "cluster_job_role:fsd_rollout_time_to_first_token_seconds_bucket:rate1m"
JOB_ROLE_ITL_BUCKETS = "cluster_job_role:fsd_rollout_inter_token_latency_seconds_bucket:rate1m"

# --- Recording rules: the long tail -----------------------------------------------------------
# Response length (generated tokens per finished request) against the max_tokens asked for.
JOB_ROLE_GENERATION_TOKENS_BUCKETS = (
    "cluster_job_role:fsd_rollout_request_generation_tokens_bucket:rate1m"
)
JOB_ROLE_MAX_TOKENS_BUCKETS = "cluster_job_role:fsd_rollout_request_max_tokens_bucket:rate1m"
JOB_ROLE_GENERATION_TOKENS_P50 = "cluster_job_role:fsd_rollout_request_generation_tokens:p50_rate1m"
JOB_ROLE_GENERATION_TOKENS_P99 = "cluster_job_role:fsd_rollout_request_generation_tokens:p99_rate1m"
JOB_ROLE_MAX_TOKENS_P50 = "cluster_job_role:fsd_rollout_request_max_tokens:p50_rate1m"
# Finished requests per second by finished_reason (stop, length, abort, ...).
JOB_ROLE_REQUESTS_FINISHED_RATE = "cluster_job_role:fsd_rollout_requests_finished:rate1m"
# Share of finished requests cut at max_tokens / aborted (0-1).
JOB_ROLE_TRUNCATED_RATIO = "cluster_job_role:fsd_rollout_requests_truncated:ratio_rate1m"
JOB_ROLE_ABORTED_RATIO = "cluster_job_role:fsd_rollout_requests_aborted:ratio_rate1m"
# Preemptions (vLLM) and retractions (SGLang) per second, per server.
REPLICA_PREEMPTIONS_RATE = "replica:fsd_rollout_preemptions:rate1m"
JOB_ROLE_PREEMPTIONS_RATE = "cluster_job_role:fsd_rollout_preemptions:rate1m"
# Requests SGLang paused for an async weight sync, per server.
REPLICA_REQUESTS_PAUSED = "replica:fsd_rollout_requests_paused:sum"
JOB_ROLE_QUEUE_TIME_BUCKETS = (
    "cluster_job_role:fsd_rollout_request_queue_time_seconds_bucket:rate1m"
)

# --- Rule groups (what doctor expects Prometheus to have loaded) ------------------------------
GROUP_GPU_RECORDS = "fsd-gpu.records"
GROUP_GPU_ALERTS = "fsd-gpu.alerts"
GROUP_ROLLOUT_RECORDS = "fsd-rollout.records"
GROUP_ROLLOUT_ALERTS = "fsd-rollout.alerts"
GROUP_DAEMON_ALERTS = "fsd-daemon.alerts"
RULE_GROUPS = (
    GROUP_GPU_RECORDS,
    GROUP_GPU_ALERTS,
    GROUP_ROLLOUT_RECORDS,
    GROUP_ROLLOUT_ALERTS,
    GROUP_DAEMON_ALERTS,
)

# --- Alerts -----------------------------------------------------------------------------------
ALERT_ROLLOUT_GPUS_IDLE = "FsdRolloutGpusIdle"
ALERT_GPU_EXPORTER_MISSING = "FsdGpuExporterMissing"
ALERT_GPU_EXPORTER_DOWN = "FsdGpuExporterDown"
ALERT_GPU_NVML_DOWN = "FsdGpuNvmlDown"
ALERT_ROLLOUT_TARGET_DOWN = "FsdRolloutTargetDown"
ALERT_ROLLOUT_NO_ENGINE_SERIES = "FsdRolloutNoEngineSeries"
ALERT_ROLLOUT_METRICS_ROUTE_MISSING = "FsdRolloutMetricsRouteMissing"
ALERT_ROLLOUT_VERL_TOO_OLD = "FsdRolloutVerlTooOldForMetrics"
ALERT_DAEMON_DOWN = "FsdDaemonDown"
ALERT_DAEMON_STALE = "FsdDaemonStale"
ALERT_DAEMON_UNHEALTHY = "FsdDaemonUnhealthy"
ALERT_DAEMON_DROPPING_TARGETS = "FsdDaemonDroppingTargets"


# --- Helpers ----------------------------------------------------------------------------------
def by(labels: Iterable[str]) -> str:
    """``("cluster", "role")`` -> ``"cluster, role"``, for ``sum by (...)``."""
    return ", ".join(labels)


def bucket(histogram: str) -> str:
    """The ``_bucket`` series of a histogram."""
    return f"{histogram}_bucket"
