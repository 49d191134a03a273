"""The table of rollout servers fsd_daemon recognises, and of GPU-holding roles.

Every fact here comes from the upstream sources listed in ``docs/upstream.md``; the tests in
``tests/test_recognise.py`` cite the same paths. A server is recognised by its actor NAME plus
a class FAMILY, never by one exact class list: recipes subclass verl's servers under names of
their own (``AsyncFlowHttpServer``, ``NeMoGymvLLMHttpServer``, ``PartialRolloutvLLMHttpServer``,
``vLLMHttpServerForPartial``, ``DynamoHttpServer``), and they keep verl's actor names.

Every pattern here is matched with ``re.ASCII`` against strings bounded in length beforehand
(see :mod:`fsd_daemon.discovery.recognise`): ``[0-9]`` and ``\\w`` never match non-ASCII digits
or letters, and every repetition is bounded, so no crafted name makes matching slow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# Engines a pattern may name. "dynamo" is NVIDIA Dynamo's frontend (verl-recipe's dynamo/).
ENGINES = ("vllm", "sglang", "trtllm", "dynamo")
DEFAULT_METRICS_PATH = "/metrics"
# trtllm-serve answers /metrics with JSON iteration stats; its Prometheus text is mounted at
# /prometheus/metrics, and only with return_perf_metrics on
# (NVIDIA/TensorRT-LLM tensorrt_llm/serve/openai_server.py, register_routes / mount_metrics).
TRTLLM_METRICS_PATH = "/prometheus/metrics"


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
    every_index_serves_roles: tuple[str, ...] = ("decode",)
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


# TRT-LLM: one server per replica, no node rank: trtllm_server[_reward]_{replica}{name_suffix}
# (verl/workers/rollout/trtllm_rollout/trtllm_async_server.py, TRTLLMReplica.launch_servers).
_TRTLLM_NAME = r"trtllm_server(?:_(?P<role>reward))?_(?P<replica>[0-9]{1,9})" + _SUFFIX
# Any lower-case prefix ("vllm_", "vllm_omni_"): vLLMRollout names servers by rollout name.
_ANY_PREFIX = r"[a-z0-9]{1,32}(?:_[a-z0-9]{1,32}){0,3}?"

DEFAULT_PATTERNS: tuple[RecognitionPattern, ...] = (
    # The name's prefix is the replica's engine (RolloutReplica._get_server_name_prefix), so a
    # server of the family is recognised by it whatever its class is called.
    RecognitionPattern(_FAMILY, _TRTLLM_NAME, "trtllm", metrics_path=TRTLLM_METRICS_PATH),
    RecognitionPattern(_FAMILY, _verl_name(r"vllm(?:_[a-z0-9]{1,32}){0,2}?"), "vllm"),
    RecognitionPattern(_FAMILY, _verl_name("sglang"), "sglang"),
    RecognitionPattern(_FAMILY, _verl_name("dynamo"), "dynamo"),
    # Any other prefix: the engine comes from the class.
    RecognitionPattern(r"[A-Za-z0-9_]{0,64}vLLM" + _FAMILY, _verl_name(_ANY_PREFIX), "vllm"),
    RecognitionPattern(r"[A-Za-z0-9_]{0,64}SGLang" + _FAMILY, _verl_name(_ANY_PREFIX), "sglang"),
    # verl <= 0.5 (verl/workers/rollout/async_server.py at v0.5.0): AsyncvLLMServer and
    # AsyncSGLangServer named async_llm_server_{dp_rank}; their FastAPI app serves only
    # /v1/chat/completions, no /metrics.
    RecognitionPattern(
        r"AsyncvLLMServer",
        r"async_llm_server_(?P<replica>[0-9]{1,9})",
        "vllm",
        has_metrics_route=False,
    ),
    RecognitionPattern(
        r"AsyncSGLangServer",
        r"async_llm_server_(?P<replica>[0-9]{1,9})",
        "sglang",
        has_metrics_route=False,
    ),
)

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
        "vllm",
        "0.6.0 to 0.7.0",
        "verl/workers/rollout/vllm_rollout/vllm_async_server.py (_rollout_worker_actor_cls)",
    ),
    WorkerGroupForm(
        "ServerAdapter",
        "sglang",
        "0.6.0 to 0.7.0",
        "verl/workers/rollout/sglang_rollout/async_sglang_server.py (_rollout_worker_actor_cls)",
    ),
)
# The worker-group name prefix of a rollout replica (WG_PREFIX), matched whole. The name
# prefix says "colocate" where the mode is called "colocated".
ROLLOUT_WORKER_GROUP_PREFIX = (
    r"rollout_(?:(?P<role>reward|teacher)_)?(?P<mode>colocate|standalone)_"
    r"(?P<replica>[0-9]{1,9})(?:_(?P<suffix>[A-Za-z0-9_\-.]{1,256}))?"
)
WORKER_GROUP_MODES = {"colocate": MODE_COLOCATED, "standalone": MODE_STANDALONE}
# The rank part of a worker's name after its class: _{pg_idx}:{local_rank}.
WORKER_RANK_SUFFIX = r"_[0-9]{1,9}:[0-9]{1,9}"
# The trainer's fused worker class in hybrid mode (create_colocated_worker_cls), named
# f"{random 6 characters}WorkerDict_{pg}:{rank}": its GPUs are the hybrid replicas' GPUs.
HYBRID_TRAINER_CLASS = "WorkerDict"

# Which role a GPU holder plays, by Ray actor class name (exact match first, then regex).
DEFAULT_GPU_ROLES: Mapping[str, str] = {
    # Colocated and standalone replicas' worker groups (WORKER_GROUP_FORMS): rollout unless
    # their worker-group name says reward or teacher.
    **{form.class_name: "rollout" for form in WORKER_GROUP_FORMS},
    "vLLMHttpServer": "rollout",
    "SGLangHttpServer": "rollout",
    "TRTLLMHttpServer": "rollout",
    "AsyncvLLMServer": "rollout",
    "AsyncSGLangServer": "rollout",
    "vLLMOmniHttpServer": "rollout",
    "RewardModelWorker": "reward",
    "RewardLoopWorker": "reward",
    "ActorRolloutRefWorker": "train",
    "AsyncActorRolloutRefWorker": "train",
    # The separated (fully async) trainer's actor and reference workers, an
    # ActorRolloutRefWorker subclass (verl 0.9.1 verl/experimental/separation/engine_workers.py,
    # created in separation/utils.py as ray.remote(DetachActorWorker)).
    "DetachActorWorker": "train",
    "CriticWorker": "train",
    "TrainingWorker": "train",
    # verl's colocated (hybrid) engine: actor, rollout and reference in one worker class.
    "WorkerDict": "train",
    # The rest of the server family (recipe subclasses, ...ForPartial, DynamoHttpServer).
    _FAMILY: "rollout",
}
