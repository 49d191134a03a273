"""The table of inference engines: what each exports, release by release, as the project reads it.

One entry per engine. Each says its metric prefix, which of its series answer the questions the
rules ask (:class:`Reads`), which of its labels are ranks that report the same batch (reduced
with ``max``; every other label is summed), which label names the prefill/decode half, and the
exact series shape of each checked release: every series the rules and dashboards read, its
type, and its label names, each shape citing the upstream file it was read from. The rules
(:mod:`fsd_daemon.mixin.rules`), the dashboards, the simulated servers
(:mod:`fsd_daemon.sim.rollout_server`) and the drift check (``bench/drift_check.py``) read this
table; adding an engine or a release is one entry here. Names are the constants of
:mod:`fsd_daemon.mixin.names`.

Read from the released wheels (``pip download --no-deps``): vLLM 0.33.0 and 0.34.0
(identical metric definitions), SGLang 0.5.10 and 0.5.23.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from fsd_daemon.mixin import names as n

COUNTER = "counter"
GAUGE = "gauge"
HISTOGRAM = "histogram"
# Which collector writes a series, and so which base labels it carries. vLLM has one.
ENGINE_SIDE = "engine"
TOKENIZER_SIDE = "tokenizer"
SCHEDULER_SIDE = "scheduler"


class Reads(enum.Enum):
    """A question the rules ask of every engine that can answer it."""

    REQUESTS_RUNNING = "requests running"
    REQUESTS_WAITING = "requests waiting"
    KV_CACHE_USAGE = "KV cache usage (0-1)"
    GENERATION_TOKENS = "generated tokens"
    PROMPT_TOKENS = "prompt tokens"
    REQUESTS_FINISHED = "finished requests"
    REQUESTS_ABORTED = "aborted requests"
    PREEMPTIONS = "preempted (retracted) requests"
    REQUESTS_PAUSED = "requests paused by a weight sync"
    TTFT = "time to first token histogram"
    ITL = "inter-token latency histogram"
    QUEUE_TIME = "queue time histogram"
    E2E_LATENCY = "end-to-end request latency histogram"
    RESPONSE_LENGTH = "generated tokens per request histogram"
    MAX_TOKENS = "max_tokens per request histogram"
    # Prefix cache: a pair of token counters (hits, queries) or a 0-1 gauge.
    PREFIX_CACHE_HITS = "prefix cache hit tokens"
    PREFIX_CACHE_QUERIES = "prefix cache queried tokens"
    PREFIX_CACHE_HIT_RATE = "prefix cache hit rate gauge (0-1)"
    # Speculative decoding: counters (drafts, draft tokens, accepted tokens) or 0-1 gauges.
    SPEC_DRAFTS = "speculative drafts"
    SPEC_DRAFT_TOKENS = "speculative draft tokens"
    SPEC_ACCEPTED_TOKENS = "speculative accepted tokens"
    SPEC_ACCEPT_RATE = "speculative acceptance rate gauge (0-1)"
    SPEC_ACCEPT_LENGTH = "speculative mean acceptance length gauge"
    PREFILL_TIME = "per-request prefill time histogram"
    DECODE_TIME = "per-request decode time histogram"
    IDLE_SECONDS = "engine idle seconds counter"


@dataclass(frozen=True)
class Series:
    """One series family as exposed (counters with ``_total``, histograms by base name)."""

    name: str
    kind: str
    side: str
    # Label names beyond the side's base labels (finished_reason, is_streaming, ...).
    extra_labels: tuple[str, ...] = ()
    # When the engine exports it only under a setting (empty: always, with metrics on).
    only_when: str = ""


@dataclass(frozen=True)
class Shape:
    """The series of one or more releases that define them identically."""

    versions: tuple[str, ...]
    # The upstream files (inside the wheel) the names and labels were read from.
    sources: tuple[str, ...]
    # Base label names of each side, always present.
    base_labels: Mapping[str, tuple[str, ...]]
    series: tuple[Series, ...]
    # Base labels present only in some set-ups (SGLang's dp_rank under data parallelism).
    optional_labels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def labels_of(self, series: Series) -> tuple[str, ...]:
        return (*self.base_labels[series.side], *series.extra_labels)

    def by_name(self) -> dict[str, Series]:
        return {s.name: s for s in self.series}


@dataclass(frozen=True)
class Engine:
    """What the rules need to know about one engine (the ``engine`` target label value)."""

    label: str
    prefix: str
    reads: Mapping[Reads, str]
    shapes: tuple[Shape, ...]  # oldest first
    # Labels of ranks that all report the same batch: reduced with max before summing.
    rank_labels: tuple[str, ...] = ()
    # The engine's own label naming the prefill/decode half of a disaggregated deployment,
    # whose values are names.DISAGGREGATION_PREFILL / _DECODE (anything else: not split).
    disaggregation_label: str = ""

    @property
    def newest(self) -> Shape:
        return self.shapes[-1]

    def shape(self, version: str) -> Shape:
        for shape in self.shapes:
            if version in shape.versions:
                return shape
        known = ", ".join(v for s in self.shapes for v in s.versions)
        raise ValueError(f"unknown {self.label} version {version!r}; known: {known}")


_VLLM_SERIES = (
    Series(n.VLLM_REQUESTS_RUNNING, GAUGE, ENGINE_SIDE),
    Series(n.VLLM_REQUESTS_WAITING, GAUGE, ENGINE_SIDE),
    Series(n.VLLM_KV_CACHE_USAGE, GAUGE, ENGINE_SIDE),
    Series(n.VLLM_SLEEP_STATE, GAUGE, ENGINE_SIDE, (n.SLEEP_STATE,)),
    Series(n.VLLM_PROMPT_TOKENS, COUNTER, ENGINE_SIDE),
    Series(n.VLLM_GENERATION_TOKENS, COUNTER, ENGINE_SIDE),
    Series(n.VLLM_PREEMPTIONS, COUNTER, ENGINE_SIDE),
    Series(n.VLLM_REQUEST_SUCCESS, COUNTER, ENGINE_SIDE, (n.FINISHED_REASON,)),
    Series(n.VLLM_PREFIX_CACHE_QUERIES, COUNTER, ENGINE_SIDE),
    Series(n.VLLM_PREFIX_CACHE_HITS, COUNTER, ENGINE_SIDE),
    Series(n.VLLM_TTFT, HISTOGRAM, ENGINE_SIDE),
    Series(n.VLLM_ITL, HISTOGRAM, ENGINE_SIDE),
    Series(n.VLLM_E2E_LATENCY, HISTOGRAM, ENGINE_SIDE),
    Series(n.VLLM_QUEUE_TIME, HISTOGRAM, ENGINE_SIDE),
    Series(n.VLLM_PREFILL_TIME, HISTOGRAM, ENGINE_SIDE),
    Series(n.VLLM_DECODE_TIME, HISTOGRAM, ENGINE_SIDE),
    Series(n.VLLM_GENERATION_TOKENS_HISTOGRAM, HISTOGRAM, ENGINE_SIDE),
    Series(n.VLLM_MAX_TOKENS_HISTOGRAM, HISTOGRAM, ENGINE_SIDE),
    # vllm/v1/spec_decode/metrics.py (SpecDecodingProm): only with a speculative_config.
    Series(n.VLLM_SPEC_DRAFTS, COUNTER, ENGINE_SIDE, only_when=n.SPECULATIVE_CONFIG),
    Series(n.VLLM_SPEC_DRAFT_TOKENS, COUNTER, ENGINE_SIDE, only_when=n.SPECULATIVE_CONFIG),
    Series(n.VLLM_SPEC_ACCEPTED_TOKENS, COUNTER, ENGINE_SIDE, only_when=n.SPECULATIVE_CONFIG),
)

VLLM = Engine(
    label=n.ENGINE_VLLM,
    prefix=n.VLLM_PREFIX,
    reads={
        Reads.REQUESTS_RUNNING: n.VLLM_REQUESTS_RUNNING,
        Reads.REQUESTS_WAITING: n.VLLM_REQUESTS_WAITING,
        Reads.KV_CACHE_USAGE: n.VLLM_KV_CACHE_USAGE,
        Reads.GENERATION_TOKENS: n.VLLM_GENERATION_TOKENS,
        Reads.PROMPT_TOKENS: n.VLLM_PROMPT_TOKENS,
        Reads.REQUESTS_FINISHED: n.VLLM_REQUEST_SUCCESS,
        Reads.PREEMPTIONS: n.VLLM_PREEMPTIONS,
        Reads.TTFT: n.VLLM_TTFT,
        Reads.ITL: n.VLLM_ITL,
        Reads.QUEUE_TIME: n.VLLM_QUEUE_TIME,
        Reads.E2E_LATENCY: n.VLLM_E2E_LATENCY,
        Reads.RESPONSE_LENGTH: n.VLLM_GENERATION_TOKENS_HISTOGRAM,
        Reads.MAX_TOKENS: n.VLLM_MAX_TOKENS_HISTOGRAM,
        Reads.PREFIX_CACHE_HITS: n.VLLM_PREFIX_CACHE_HITS,
        Reads.PREFIX_CACHE_QUERIES: n.VLLM_PREFIX_CACHE_QUERIES,
        Reads.SPEC_DRAFTS: n.VLLM_SPEC_DRAFTS,
        Reads.SPEC_DRAFT_TOKENS: n.VLLM_SPEC_DRAFT_TOKENS,
        Reads.SPEC_ACCEPTED_TOKENS: n.VLLM_SPEC_ACCEPTED_TOKENS,
        Reads.PREFILL_TIME: n.VLLM_PREFILL_TIME,
        Reads.DECODE_TIME: n.VLLM_DECODE_TIME,
    },
    shapes=(
        Shape(
            versions=("0.33.0", "0.34.0"),
            sources=("vllm/v1/metrics/loggers.py", "vllm/v1/spec_decode/metrics.py"),
            # PrometheusStatLogger: labelnames = ["model_name", "engine"] (engine: the index of
            # a data-parallel engine; Prometheus renames it exported_engine on our targets).
            base_labels={ENGINE_SIDE: (n.MODEL_NAME, n.VLLM_ENGINE_INDEX)},
            series=_VLLM_SERIES,
        ),
    ),
)

# SGLang's scheduler labels: scheduler_metrics_mixin.py (0.5.10) and
# SchedulerMetricsCollector.init_new in metrics_collector.py (0.5.23); dp_rank only under DP.
_SGLANG_SCHEDULER_LABELS = (
    n.MODEL_NAME,
    n.SGLANG_ENGINE_TYPE,
    n.SGLANG_TP_RANK,
    n.SGLANG_PP_RANK,
    n.SGLANG_MOE_EP_RANK,
)
_SGLANG_SCHEDULER_SERIES = (
    Series(n.SGLANG_REQUESTS_RUNNING, GAUGE, SCHEDULER_SIDE),
    Series(n.SGLANG_REQUESTS_WAITING, GAUGE, SCHEDULER_SIDE),
    Series(n.SGLANG_TOKEN_USAGE, GAUGE, SCHEDULER_SIDE),
    Series(n.SGLANG_CACHE_HIT_RATE, GAUGE, SCHEDULER_SIDE),
    Series(n.SGLANG_PAUSED_REQUESTS, GAUGE, SCHEDULER_SIDE),
    Series(n.SGLANG_RETRACTED_REQUESTS, COUNTER, SCHEDULER_SIDE),
    Series(n.SGLANG_QUEUE_TIME, HISTOGRAM, SCHEDULER_SIDE),
    # Set from each batch's statistics; 0 unless speculative decoding runs.
    Series(n.SGLANG_SPEC_ACCEPT_RATE, GAUGE, SCHEDULER_SIDE),
    Series(n.SGLANG_SPEC_ACCEPT_LENGTH, GAUGE, SCHEDULER_SIDE),
)


def _sglang_tokenizer_series(streaming: tuple[str, ...]) -> tuple[Series, ...]:
    """TokenizerMetricsCollector's series the rules read; ``streaming`` is the extra label of
    those split by streaming (0.5.23: is_streaming), empty where there is none."""
    return (
        Series(n.SGLANG_PROMPT_TOKENS, COUNTER, TOKENIZER_SIDE, streaming),
        Series(n.SGLANG_GENERATION_TOKENS, COUNTER, TOKENIZER_SIDE, streaming),
        Series(n.SGLANG_REQUESTS, COUNTER, TOKENIZER_SIDE, streaming),
        Series(n.SGLANG_ABORTED_REQUESTS, COUNTER, TOKENIZER_SIDE),
        Series(n.SGLANG_TTFT, HISTOGRAM, TOKENIZER_SIDE, streaming),
        Series(n.SGLANG_ITL, HISTOGRAM, TOKENIZER_SIDE),
        Series(n.SGLANG_E2E_LATENCY, HISTOGRAM, TOKENIZER_SIDE, streaming),
    )


SGLANG = Engine(
    label=n.ENGINE_SGLANG,
    prefix=n.SGLANG_PREFIX,
    reads={
        Reads.REQUESTS_RUNNING: n.SGLANG_REQUESTS_RUNNING,
        Reads.REQUESTS_WAITING: n.SGLANG_REQUESTS_WAITING,
        Reads.KV_CACHE_USAGE: n.SGLANG_TOKEN_USAGE,
        Reads.GENERATION_TOKENS: n.SGLANG_GENERATION_TOKENS,
        Reads.PROMPT_TOKENS: n.SGLANG_PROMPT_TOKENS,
        Reads.REQUESTS_FINISHED: n.SGLANG_REQUESTS,
        Reads.REQUESTS_ABORTED: n.SGLANG_ABORTED_REQUESTS,
        Reads.PREEMPTIONS: n.SGLANG_RETRACTED_REQUESTS,
        Reads.REQUESTS_PAUSED: n.SGLANG_PAUSED_REQUESTS,
        Reads.TTFT: n.SGLANG_TTFT,
        Reads.ITL: n.SGLANG_ITL,
        Reads.QUEUE_TIME: n.SGLANG_QUEUE_TIME,
        Reads.E2E_LATENCY: n.SGLANG_E2E_LATENCY,
        Reads.PREFIX_CACHE_HIT_RATE: n.SGLANG_CACHE_HIT_RATE,
        Reads.SPEC_ACCEPT_RATE: n.SGLANG_SPEC_ACCEPT_RATE,
        Reads.SPEC_ACCEPT_LENGTH: n.SGLANG_SPEC_ACCEPT_LENGTH,
        Reads.IDLE_SECONDS: n.SGLANG_SCHEDULER_IDLE,
    },
    shapes=(
        Shape(
            versions=("0.5.10",),
            sources=(
                "sglang/srt/observability/metrics_collector.py",
                "sglang/srt/observability/scheduler_metrics_mixin.py",
                "sglang/srt/managers/tokenizer_manager.py",
            ),
            # Tokenizer labels: TokenizerManager.init_metric_collector_watchdog, model_name only.
            base_labels={
                TOKENIZER_SIDE: (n.MODEL_NAME,),
                SCHEDULER_SIDE: _SGLANG_SCHEDULER_LABELS,
            },
            optional_labels={SCHEDULER_SIDE: (n.SGLANG_DP_RANK,)},
            series=(*_SGLANG_SCHEDULER_SERIES, *_sglang_tokenizer_series(())),
        ),
        Shape(
            versions=("0.5.23",),
            sources=("sglang/srt/observability/metrics_collector.py",),
            # tokenizer_metric_labels(): model_name and engine_type; the token and request
            # counters, TTFT and e2e latency add is_streaming ("true" / "false").
            base_labels={
                TOKENIZER_SIDE: (n.MODEL_NAME, n.SGLANG_ENGINE_TYPE),
                SCHEDULER_SIDE: _SGLANG_SCHEDULER_LABELS,
            },
            optional_labels={SCHEDULER_SIDE: (n.SGLANG_DP_RANK,)},
            series=(
                *_SGLANG_SCHEDULER_SERIES,
                Series(n.SGLANG_SCHEDULER_IDLE, COUNTER, SCHEDULER_SIDE),
                *_sglang_tokenizer_series((n.SGLANG_IS_STREAMING,)),
            ),
        ),
    ),
    # Every tensor/pipeline/expert rank of one scheduler reports the same batch (by default
    # only attn_tp_rank 0 reports at all); dp_rank schedulers hold different requests.
    rank_labels=(n.SGLANG_TP_RANK, n.SGLANG_PP_RANK, n.SGLANG_MOE_EP_RANK),
    # DisaggregationMode.to_engine_type: "prefill", "decode", else "unified".
    disaggregation_label=n.SGLANG_ENGINE_TYPE,
)

# Engines whose series are checked upstream, in rule order. TRT-LLM and Dynamo are targets too
# (names.ENGINES) but no rule reads their series until their names are checked.
ENGINES: tuple[Engine, ...] = (VLLM, SGLANG)
BY_LABEL: Mapping[str, Engine] = {e.label: e for e in ENGINES}


def answering(question: Reads) -> list[tuple[Engine, str]]:
    """The engines that answer ``question``, with the series each reads, in table order."""
    return [(e, e.reads[question]) for e in ENGINES if question in e.reads]


def newest_series(engine: Engine, name: str) -> Series:
    """The newest release's definition of series ``name`` (KeyError when it has none)."""
    return engine.newest.by_name()[name]


def ranks_reduced(engine: Engine, expr: str) -> str:
    """``expr`` (a series of ``engine``) with its rank labels reduced by max: the ranks of one
    scheduler report the same batch. Every other label stays, to be summed by the caller."""
    if not engine.rank_labels:
        return expr
    return f"max without ({', '.join(engine.rank_labels)}) (\n{expr}\n)"
