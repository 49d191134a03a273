"""What verl creates, in one table: server forms, GPU holders, roles, modes, metrics switches.

Every entry cites the upstream file (and the verl releases) it was read from; ``docs/upstream.md``
records the checks and ``bench/drift_check.py`` compares this table with released verl. Everything
else in fsd_daemon reads verl's facts from here: recognition (:mod:`fsd_daemon.discovery
.recognise`, through :data:`DEFAULT_PATTERNS`), GPU ownership (:data:`DEFAULT_GPU_ROLES`, the
worker-group forms), doctor and the rules (:data:`METRICS_FIX_BY_ENGINE`), the report (roles) and
the simulation (the classes it defines and the names it gives actors: :meth:`ServerForm.actor_name`,
:func:`worker_group_prefix`, :func:`worker_name`). A new server form is one :class:`ServerForm`
entry; a new GPU worker-group class one :class:`WorkerGroupForm` entry (or one
:class:`GpuHolder` entry for a trainer's or reward model's worker).

A server is recognised by its actor NAME plus a class FAMILY, never by one exact class list:
recipes subclass verl's servers under names of their own (``AsyncFlowHttpServer``,
``NeMoGymvLLMHttpServer``, ``PartialRolloutvLLMHttpServer``, ``vLLMHttpServerForPartial``,
``DynamoHttpServer``), and they keep verl's actor names.

Every pattern here is matched with ``re.ASCII`` against strings bounded in length beforehand
(see :mod:`fsd_daemon.recognition.recognise`): ``[0-9]`` and ``\\w`` never match non-ASCII digits
or letters, and every repetition is bounded, so no crafted name makes matching slow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fsd_daemon.mixin import names

# Engines a pattern may name: the engine label's values (dynamo is NVIDIA Dynamo's frontend,
# verl-recipe's dynamo/).
ENGINES = names.ENGINES
DEFAULT_METRICS_PATH = "/metrics"
# trtllm-serve answers /metrics with JSON iteration stats; its Prometheus text is mounted at
# /prometheus/metrics, and only with return_perf_metrics on
# (NVIDIA/TensorRT-LLM tensorrt_llm/serve/openai_server.py, register_routes / mount_metrics).
TRTLLM_METRICS_PATH = "/prometheus/metrics"

# --- Roles -------------------------------------------------------------------------------------
# What a GPU holder or a server is used for (the role label's values).
ROLE_ROLLOUT = names.ROLE_ROLLOUT
ROLE_REWARD = "reward"  # verl's reward model servers (RewardLoopManager): ..._server_reward_...
ROLE_TEACHER = (
    "teacher"  # on-policy distillation's teacher servers (verl 0.8+): ..._server_teacher_
)
ROLE_TRAIN = "train"  # the trainer's workers (actor, critic, reference)
# Roles an actor's name may say; "prefill" and "decode" are halves of a rollout replica.
NAME_ROLES = (ROLE_REWARD, ROLE_TEACHER)
# Roles whose actors are given GPUs ahead of use (their CUDA_VISIBLE_DEVICES is a reservation).
SERVING_ROLES = (ROLE_ROLLOUT, ROLE_REWARD, ROLE_TEACHER)
# The name word of a disaggregated decode server (vllm_pd_replica.py, sglang_pd_replica.py).
DECODE = "decode"

# --- What a pattern's named groups are called ----------------------------------------------------
# The table's patterns and a user's alike (RecognitionPattern.name). The role and replica groups
# fill the labels of the same name, so a renamed label renames its group.
GROUP_ROLE = names.ROLE
GROUP_REPLICA = names.REPLICA
GROUP_NODE = "node"  # node rank within the replica, or the index of a decode server
GROUP_SUFFIX = "suffix"  # verl's name_suffix: the teacher key
GROUP_MODE = "mode"  # a worker group's rollout mode (colocate / standalone)
GROUP_ENGINE = "engine"  # the engine, where one class serves several
PATTERN_GROUPS = frozenset(
    {GROUP_ROLE, GROUP_REPLICA, GROUP_NODE, GROUP_SUFFIX, GROUP_MODE, GROUP_ENGINE}
)


@dataclass(frozen=True)
class RecognitionPattern:
    """How to recognise one kind of rollout server among the cluster's actors.

    ``class_name`` and ``name`` are regular expressions matched (ASCII only) against the whole
    actor class name and the whole actor name. ``name`` may capture the named groups ``role``,
    ``replica``, ``node`` (node rank within the replica, or the index of a decode server),
    ``suffix`` (verl's ``name_suffix``: the teacher key) and ``engine``; a missing role means
    ``rollout``.
    """

    class_name: str
    name: str
    engine: str
    # Only node rank 0 of a multi-node replica runs the HTTP server (verl 0.6+); roles listed
    # here serve HTTP on every index (verl's disaggregated decode servers).
    every_index_serves_roles: tuple[str, ...] = (DECODE,)
    # Where the server serves Prometheus text. Written as __metrics_path__ when not /metrics.
    metrics_path: str = DEFAULT_METRICS_PATH
    # False for servers that have no metrics route at all (verl <= 0.5): they are listed with
    # the label metrics_route="absent" so that rules tell "down" from "never had metrics".
    has_metrics_route: bool = True


# Any class of the server family: verl's own and every recipe subclass end their class name in
# HttpServer, possibly followed by a qualifier (vLLMHttpServerForPartial).
_FAMILY = r"[A-Za-z0-9_]{0,64}HttpServer[A-Za-z0-9_]{0,64}"
# verl 0.6+ names (verl/workers/rollout/*/..._async_server.py, launch_servers):
#   {prefix}server[_reward|_teacher]_{replica}_{node_rank}{name_suffix}
#   {prefix}server_decode_{replica}_{index}{name_suffix}       (vllm_pd_replica.py)
# where name_suffix is "" or "_" + the teacher key with "/" replaced by "_".
_ROLE_REPLICA_NODE = (
    r"_server(?:_(?P<role>[a-z]{1,32}))?_(?P<replica>[0-9]{1,9})(?:_(?P<node>[0-9]{1,9}))?"
)
_SUFFIX = r"(?:[_\-.](?P<suffix>[A-Za-z0-9_\-.]{1,256}))?"


def _verl_name(prefix: str) -> str:
    return prefix + _ROLE_REPLICA_NODE + _SUFFIX


# Any lower-case prefix ("vllm_", "vllm_omni_"): vLLMRollout names servers by rollout name.
_ANY_PREFIX = r"[a-z0-9]{1,32}(?:_[a-z0-9]{1,32}){0,3}?"
# The parts of a name template (ServerForm.name_template, str.format): the role word with its
# underscore or "", the replica, the node rank (or decode index), and "_" + suffix or "".
_VERL_TEMPLATE = "{role}{replica}_{node}{suffix}"


@dataclass(frozen=True)
class ServerForm:
    """One rollout server class verl (or a recipe) creates, and how it names its actors.

    ``class_name`` is the exact class (the simulation defines a class of that name; the GPU
    role table maps it to rollout); ``name_template`` renders an actor name as upstream does;
    ``pattern`` recognises it (its class regex is the family, so that subclasses match too).
    """

    class_name: str
    pattern: RecognitionPattern
    name_template: str  # str.format(role=, replica=, node=, suffix=); see actor_name
    releases: str  # the verl releases that create it, as checked
    source: str  # the upstream file, at those releases
    name_roles: tuple[str, ...] = NAME_ROLES  # the role words its names may carry

    @property
    def engine(self) -> str:
        return self.pattern.engine

    def actor_name(self, replica: int, node: int = 0, role: str = "", suffix: str = "") -> str:
        """The actor name upstream gives replica ``replica``'s server on node rank ``node``
        (``role`` one of ``name_roles`` or "" for rollout; ``suffix`` the teacher key)."""
        if role and role not in self.name_roles:
            raise ValueError(f"{self.class_name} names carry no role {role!r}")
        return self.name_template.format(
            role=f"{role}_" if role else "",
            replica=replica,
            node=node,
            suffix=f"_{suffix}" if suffix else "",
        )


SERVER_FORMS: tuple[ServerForm, ...] = (
    # TRT-LLM: one server per replica, no node rank.
    ServerForm(
        "TRTLLMHttpServer",
        RecognitionPattern(
            _FAMILY,
            r"trtllm_server(?:_(?P<role>reward))?_(?P<replica>[0-9]{1,9})" + _SUFFIX,
            names.ENGINE_TRTLLM,
            metrics_path=TRTLLM_METRICS_PATH,
        ),
        "trtllm_server_{role}{replica}{suffix}",
        "0.9.1, main 1dda039b",
        "verl/workers/rollout/trtllm_rollout/trtllm_async_server.py (TRTLLMReplica.launch_servers)",
        name_roles=(ROLE_REWARD,),
    ),
    # The name's prefix is the replica's engine (RolloutReplica._get_server_name_prefix), so a
    # server of the family is recognised by it whatever its class is called.
    ServerForm(
        "vLLMHttpServer",
        RecognitionPattern(
            _FAMILY, _verl_name(r"vllm(?:_[a-z0-9]{1,32}){0,2}?"), names.ENGINE_VLLM
        ),
        "vllm_server_" + _VERL_TEMPLATE,
        "0.6.0 to main 1dda039b",
        "verl/workers/rollout/vllm_rollout/vllm_async_server.py (launch_servers); decode "
        "servers: verl/workers/rollout/vllm_rollout/vllm_pd_replica.py",
        name_roles=(*NAME_ROLES, DECODE),
    ),
    ServerForm(
        "SGLangHttpServer",
        RecognitionPattern(_FAMILY, _verl_name("sglang"), names.ENGINE_SGLANG),
        "sglang_server_" + _VERL_TEMPLATE,
        "0.6.0 to main 1dda039b",
        "verl/workers/rollout/sglang_rollout/async_sglang_server.py (launch_servers); decode "
        "servers: verl/workers/rollout/sglang_rollout/sglang_pd_replica.py",
        name_roles=(*NAME_ROLES, DECODE),
    ),
    ServerForm(
        "DynamoHttpServer",
        RecognitionPattern(_FAMILY, _verl_name("dynamo"), names.ENGINE_DYNAMO),
        "dynamo_server_" + _VERL_TEMPLATE,
        "verl-recipe 48ea0a79",
        "verl-recipe dynamo/dynamo_async_server.py (DynamoReplica)",
    ),
    # verl <= 0.5 (verl/workers/rollout/async_server.py at v0.5.0): AsyncvLLMServer and
    # AsyncSGLangServer named async_llm_server_{dp_rank}; their FastAPI app serves only
    # /v1/chat/completions, no /metrics.
    ServerForm(
        "AsyncvLLMServer",
        RecognitionPattern(
            r"AsyncvLLMServer",
            r"async_llm_server_(?P<replica>[0-9]{1,9})",
            names.ENGINE_VLLM,
            has_metrics_route=False,
        ),
        "async_llm_server_{replica}",
        "<= 0.5 (read at v0.5.0)",
        "verl/workers/rollout/async_server.py at v0.5.0",
        name_roles=(),
    ),
    ServerForm(
        "AsyncSGLangServer",
        RecognitionPattern(
            r"AsyncSGLangServer",
            r"async_llm_server_(?P<replica>[0-9]{1,9})",
            names.ENGINE_SGLANG,
            has_metrics_route=False,
        ),
        "async_llm_server_{replica}",
        "<= 0.5 (read at v0.5.0; 0.4.x spells it AsyncSglangServer)",
        "verl/workers/rollout/async_server.py at v0.5.0",
        name_roles=(),
    ),
)
SERVER_FORMS_BY_CLASS: Mapping[str, ServerForm] = {f.class_name: f for f in SERVER_FORMS}

# A server of the family under any other name prefix: the engine comes from the class
# (recipes' NeMoGymvLLMHttpServer, PartialRolloutvLLMHttpServer, ...).
_CLASS_ENGINE_PATTERNS = (
    RecognitionPattern(
        r"[A-Za-z0-9_]{0,64}vLLM" + _FAMILY, _verl_name(_ANY_PREFIX), names.ENGINE_VLLM
    ),
    RecognitionPattern(
        r"[A-Za-z0-9_]{0,64}SGLang" + _FAMILY, _verl_name(_ANY_PREFIX), names.ENGINE_SGLANG
    ),
)


def _patterns() -> tuple[RecognitionPattern, ...]:
    """The forms' patterns (each once, in table order), then the class-engine fallbacks; legacy
    forms (exact classes) last, as their names carry no engine."""
    ordered: list[RecognitionPattern] = []
    modern = [f.pattern for f in SERVER_FORMS if f.pattern.has_metrics_route]
    legacy = [f.pattern for f in SERVER_FORMS if not f.pattern.has_metrics_route]
    for pattern in (*modern, *_CLASS_ENGINE_PATTERNS, *legacy):
        if pattern not in ordered:
            ordered.append(pattern)
    return tuple(ordered)


DEFAULT_PATTERNS: tuple[RecognitionPattern, ...] = _patterns()

# --- Rollout modes and GPU holders --------------------------------------------------------------
# verl's rollout modes (verl/workers/rollout/replica.py, RolloutMode at main 1dda039b): the
# values of the GPU exporter's rollout_mode label.
MODE_HYBRID = "hybrid"  # rollout engine and trainer share the trainer's GPUs (WorkerDict)
MODE_COLOCATED = "colocated"  # its own worker group, in the trainer's placement group
MODE_STANDALONE = "standalone"  # its own worker group on its own GPUs (fully async training)
ROLLOUT_MODES = (MODE_HYBRID, MODE_COLOCATED, MODE_STANDALONE)


@dataclass(frozen=True)
class WorkerGroupForm:
    """A verl worker-group class that is given a rollout replica's GPUs in colocated and
    standalone mode (``RolloutReplica.get_ray_class_with_init_args``). Its actors hold no
    HTTP server: the replica's server actor (and the engine processes it starts) run on the
    same GPUs. Role, replica, teacher key and mode are read from the worker-group name."""

    class_name: str
    engine: str  # "" where every engine uses it
    releases: str  # the verl releases that create it, as checked
    source: str  # the upstream file, at those releases


# verl/single_controller/ray/base.py RayWorkerGroup._create_worker (0.6.0 to main 1dda039b):
# each worker is named f"{name_prefix}{ClassName}_{pg_idx}:{local_rank}", and its runtime_env
# carries WG_PREFIX=name_prefix. RolloutReplica.init_colocated / init_standalone name the group
# rollout_[reward_|teacher_]{colocate|standalone}_{replica}{name_suffix}, name_suffix being ""
# or "_" + the teacher key (0.6.0: standalone only, no role; 0.7.x: reward; 0.8+: teacher and
# suffix too).
WORKER_GROUP_FORMS: tuple[WorkerGroupForm, ...] = (
    WorkerGroupForm(
        "CheckpointEngineWorker",
        "",
        "0.7.1 to main 1dda039b",
        "verl/workers/rollout/replica.py, verl/checkpoint_engine/base.py",
    ),
    WorkerGroupForm(
        "vLLMAsyncRollout",
        names.ENGINE_VLLM,
        "0.6.0 to 0.7.0",
        "verl/workers/rollout/vllm_rollout/vllm_async_server.py (_rollout_worker_actor_cls)",
    ),
    WorkerGroupForm(
        "ServerAdapter",
        names.ENGINE_SGLANG,
        "0.6.0 to 0.7.0",
        "verl/workers/rollout/sglang_rollout/async_sglang_server.py (_rollout_worker_actor_cls)",
    ),
)
WORKER_GROUP_FORMS_BY_CLASS: Mapping[str, WorkerGroupForm] = {
    f.class_name: f for f in WORKER_GROUP_FORMS
}
# The environment variable that carries a worker's group name prefix (_create_worker).
WORKER_GROUP_PREFIX_ENV = "WG_PREFIX"
# The worker-group name prefix of a rollout replica (WG_PREFIX), matched whole. The name
# prefix says "colocate" where the mode is called "colocated".
ROLLOUT_WORKER_GROUP_PREFIX = (
    r"rollout_(?:(?P<role>reward|teacher)_)?(?P<mode>colocate|standalone)_"
    r"(?P<replica>[0-9]{1,9})(?:_(?P<suffix>[A-Za-z0-9_\-.]{1,256}))?"
)
WORKER_GROUP_MODES = {"colocate": MODE_COLOCATED, "standalone": MODE_STANDALONE}
# The rank part of a worker's name after its class: _{pg_idx}:{local_rank}.
WORKER_RANK_SUFFIX = r"_[0-9]{1,9}:[0-9]{1,9}"


def worker_group_prefix(mode: str, replica: int, role: str = "", suffix: str = "") -> str:
    """A rollout replica's worker-group name prefix as RolloutReplica.init_colocated /
    init_standalone build it (``mode`` one of MODE_COLOCATED, MODE_STANDALONE)."""
    word = {v: k for k, v in WORKER_GROUP_MODES.items()}[mode]
    role_part = f"{role}_" if role in NAME_ROLES else ""
    return f"rollout_{role_part}{word}_{replica}{f'_{suffix}' if suffix else ''}"


def worker_name(prefix: str, class_name: str, pg_index: int, local_rank: int) -> str:
    """A worker's actor name as RayWorkerGroup._create_worker builds it."""
    return f"{prefix}{class_name}_{pg_index}:{local_rank}"


@dataclass(frozen=True)
class GpuHolder:
    """A verl Ray actor class, other than a server form or a rollout worker group, that holds
    GPUs, and its role."""

    class_name: str
    role: str
    releases: str  # the verl releases it was found in, as checked
    source: str  # the upstream file


# The trainer's fused worker class in hybrid mode (create_colocated_worker_cls), named
# f"{random 6 characters}WorkerDict_{pg}:{rank}": its GPUs are the hybrid replicas' GPUs.
HYBRID_TRAINER_CLASS = "WorkerDict"
_OLDER = "before 0.9.1 (not in 0.9.1; kept from the earlier role table, not re-checked)"
GPU_HOLDERS: tuple[GpuHolder, ...] = (
    GpuHolder(
        "ActorRolloutRefWorker",
        ROLE_TRAIN,
        "0.9.1, main 1dda039b",
        "verl/workers/engine_workers.py",
    ),
    GpuHolder(
        "TrainingWorker", ROLE_TRAIN, "0.9.1, main 1dda039b", "verl/workers/engine_workers.py"
    ),
    # The separated (fully async) trainer's actor and reference workers, an
    # ActorRolloutRefWorker subclass (created in separation/utils.py as ray.remote(...)).
    GpuHolder(
        "DetachActorWorker",
        ROLE_TRAIN,
        "0.9.1, main 1dda039b",
        "verl/experimental/separation/engine_workers.py",
    ),
    # verl's colocated (hybrid) engine: actor, rollout and reference in one worker class.
    GpuHolder(
        HYBRID_TRAINER_CLASS,
        ROLE_TRAIN,
        "0.6.0 to main 1dda039b",
        "verl/single_controller/ray/base.py (create_colocated_worker_cls)",
    ),
    GpuHolder("AsyncActorRolloutRefWorker", ROLE_TRAIN, _OLDER, "verl/workers/fsdp_workers.py"),
    GpuHolder("CriticWorker", ROLE_TRAIN, _OLDER, "verl/workers/fsdp_workers.py"),
    GpuHolder("RewardModelWorker", ROLE_REWARD, _OLDER, "verl/workers/fsdp_workers.py"),
    GpuHolder(
        "RewardLoopWorker",
        ROLE_REWARD,
        "0.9.1, main 1dda039b",
        "verl/experimental/reward_loop/reward_loop.py",
    ),
    # vLLM-Omni's server (a vLLMRollout named by its rollout name, vllm_omni_server_...):
    # recognised as a server by its name prefix; named here for its GPUs.
    GpuHolder("vLLMOmniHttpServer", ROLE_ROLLOUT, _OLDER, "verl/workers/rollout/vllm_rollout/"),
)

# Actor classes verl wraps in ray.remote whose names end in Worker but that hold no GPU: not GPU
# holders, so the role table need not know them (bench/drift_check.py reports them as such).
CPU_ACTORS: Mapping[str, str] = {
    "AgentLoopWorker": "CPU actor: runs agent loops, calls the servers over HTTP",
    "ExecutionWorker": "CPU actor: a tool's sandbox execution pool",
    "SearchExecutionWorker": "CPU actor: the search tool's execution pool",
    "VisualExecutionWorker": "CPU actor: the image tool's execution pool",
}

# Which role a GPU holder plays, by Ray actor class name (exact match first, then regex).
DEFAULT_GPU_ROLES: Mapping[str, str] = {
    # Colocated and standalone replicas' worker groups: rollout unless their worker-group name
    # says reward or teacher.
    **{form.class_name: ROLE_ROLLOUT for form in WORKER_GROUP_FORMS},
    **{form.class_name: ROLE_ROLLOUT for form in SERVER_FORMS},
    **{c.class_name: c.role for c in GPU_HOLDERS},
    # The rest of the server family (recipe subclasses, ...ForPartial, DynamoHttpServer).
    _FAMILY: ROLE_ROLLOUT,
}

# --- What a verl user sets to get the metrics --------------------------------------------------
# verl/trainer/config/rollout/rollout.yaml at main 1dda039b (and 0.6.0 to 0.9.1; 0.6.0 has no
# prometheus section), under the trainer's actor_rollout_ref.rollout.
ROLLOUT_CONFIG_FILE = "verl/trainer/config/rollout/rollout.yaml"
ROLLOUT_CONFIG_PATH = "actor_rollout_ref.rollout"


@dataclass(frozen=True)
class ConfigSwitch:
    """One key of verl's rollout config that switches an engine's metrics on."""

    key: tuple[str, ...]  # its path in rollout.yaml
    on: str  # the value that switches metrics on
    default: str  # verl's default (metrics off)
    why: str

    @property
    def dotted(self) -> str:
        """The key within the rollout config: ``prometheus.enable``."""
        return ".".join(self.key)

    @property
    def setting(self) -> str:
        """What a user writes on the command line: ``actor_rollout_ref.rollout.k=v``."""
        return f"{ROLLOUT_CONFIG_PATH}.{self.dotted}={self.on}"


LOG_STATS = ConfigSwitch(
    ("disable_log_stats",),
    "False",
    "True",
    "vLLM serves /metrics without any vllm: series while disable_log_stats is True (default)",
)
PROMETHEUS = ConfigSwitch(
    ("prometheus", "enable"),
    "True",
    "False",
    "SGLang gets --enable-metrics (a /metrics route) only from it, and LLMServerManager refuses "
    "it with disable_log_stats=True (verl/workers/rollout/llm_server.py)",
)
METRICS_SWITCHES = (LOG_STATS, PROMETHEUS)
# What to set, per engine, for its series to appear.
METRICS_FIX_BY_ENGINE: Mapping[str, str] = {
    names.ENGINE_VLLM: LOG_STATS.setting,
    names.ENGINE_SGLANG: f"{PROMETHEUS.setting} and {LOG_STATS.setting}",
}
# verl >= 0.9 (verl/utils/tracking.py RLInsightLogger.ENABLE_ENV; sglang_rollout/
# async_sglang_server.py sets enable_metrics with prometheus.enable or this).
RL_INSIGHT_ENV = "VERL_RL_INSIGHT_ENABLE"
RL_INSIGHT = f"{RL_INSIGHT_ENV}=1"
# ... with trainer.logger including this logger's name (verl/utils/tracking.py).
RL_INSIGHT_LOGGER = "rl_insight"

# --- The run's other metric endpoints ----------------------------------------------------------
# Found by fsd_daemon/recognition/endpoints.py for doctor; what each upstream file says is
# summarised there.


@dataclass(frozen=True)
class EndpointKind:
    """A metrics server of a verl run that is not a rollout server, by the Ray actor serving it."""

    component: str  # short name, used in doctor's subject
    class_name: str  # the Ray actor class, exactly
    name: str  # regex the whole actor name must match (ASCII, bounded)
    namespace: str  # "" = any namespace (the driver's anonymous one)
    port: int  # 0 = chosen at run time: the address cannot be known
    source: str  # upstream file and version
    # What to set when the address cannot be known (port 0) or does not answer.
    fix: str


TRANSFER_QUEUE = EndpointKind(
    component="TransferQueue",
    class_name="TransferQueueController",
    name=r"TransferQueueController",
    namespace="transfer_queue",
    port=0,
    source="transferqueue 0.1.11 transfer_queue/interface.py, controller.py (start_metrics)",
    fix=(
        "set transfer_queue.metrics.enabled=True and a fixed transfer_queue.metrics.port=PORT "
        "in the verl job's config (0, the default, picks a port at run time that only the "
        "controller knows), then scrape NODE_IP:PORT (a static job); its storage units' "
        "endpoints always use run-time ports"
    ),
)
ASYNC_FLOW = EndpointKind(
    component="AsyncFlow",
    class_name="PrometheusMetricsServer",
    name=r"prometheus_server_[0-9a-f]{8}",
    namespace="",
    port=9400,
    source="verl-recipe 48ea0a79 async_flow/utils/metric/prometheus_metrics_server.py",
    fix=(
        "the server is bound to 127.0.0.1 unless told otherwise: start it with "
        "AF_PROMETHEUS_METRICS_BIND_ALL=true (or AF_PROMETHEUS_METRICS_BIND=NODE_IP) and "
        "AF_PROMETHEUS_METRICS_ENABLE=true in the environment of start_prometheus_servers, then "
        "scrape NODE_IP:9400 (a static job)"
    ),
)
METRICS_ENDPOINTS = (TRANSFER_QUEUE, ASYNC_FLOW)
