"""Metric, label and rule names shared by the rules, the dashboards, the report and the tests.

Engine metric names are the engines' own (vLLM V1 ``vllm/v1/metrics/loggers.py``, SGLang
``python/sglang/srt/metrics/collector.py``); Prometheus appends ``_total`` to counters and
``_bucket``/``_sum``/``_count`` to histograms. Target labels (``cluster``, ``ray_job_id``,
``role``, ``replica``, ``engine``, ``actor_name``) are set by fsd-daemon's target files.
"""

from __future__ import annotations

# Scrape jobs written by fsd-daemon's prometheus-config.
JOB_ROLLOUT = "rollout"
JOB_GPU = "gpu"
JOB_RAY = "ray"
JOB_DAEMON = "fsd_daemon"

# Target labels.
LABEL_CLUSTER = "cluster"
LABEL_RAY_JOB = "ray_job_id"
LABEL_ROLE = "role"
LABEL_REPLICA = "replica"
LABEL_ENGINE = "engine"
ROLE_ROLLOUT = "rollout"

# vLLM (V1).
VLLM_RUNNING = "vllm:num_requests_running"
VLLM_WAITING = "vllm:num_requests_waiting"
VLLM_GENERATION_TOKENS = "vllm:generation_tokens_total"
VLLM_REQUEST_SUCCESS = "vllm:request_success_total"
VLLM_SLEEP_STATE = "vllm:engine_sleep_state"  # gauge, label sleep_state
VLLM_SLEEP_STATE_LABEL = "sleep_state"
VLLM_AWAKE = "awake"
VLLM_PREEMPTIONS = "vllm:num_preemptions_total"
VLLM_QUEUE_TIME = "vllm:request_queue_time_seconds"
VLLM_REQUEST_GENERATION_TOKENS = "vllm:request_generation_tokens"
VLLM_REQUEST_MAX_TOKENS = "vllm:request_params_max_tokens"

# SGLang.
SGLANG_RUNNING = "sglang:num_running_reqs"
SGLANG_WAITING = "sglang:num_queue_reqs"
SGLANG_GENERATION_TOKENS = "sglang:generation_tokens_total"
SGLANG_PAUSED = "sglang:num_paused_reqs"
SGLANG_RETRACTED = "sglang:num_retracted_requests_total"
SGLANG_QUEUE_TIME = "sglang:queue_time_seconds"

# fsd-gpu-exporter.
GPU_BUSY_SECONDS = "fsd_gpu_busy_seconds_total"
GPU_OWNER_INFO = "fsd_gpu_owner_info"
GPU_OWNER_STATE_RESERVED = "reserved"
