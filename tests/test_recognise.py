"""Which actors are rollout servers, by class family and name, as verl and its recipes name them.

Upstream sources (details and commits in docs/upstream.md):
- verl-project/verl verl/workers/rollout/vllm_rollout/vllm_async_server.py (vLLMReplica
  .launch_servers: ``{prefix}server[_reward|_teacher]_{replica}_{node_rank}{name_suffix}``),
  .../sglang_rollout/async_sglang_server.py (same scheme, ``sglang_``),
  .../trtllm_rollout/trtllm_async_server.py (``trtllm_server[_reward]_{replica}{name_suffix}``),
  .../vllm_rollout/vllm_pd_replica.py and .../sglang_rollout/sglang_pd_replica.py (prefill
  ``{engine}_server_{r}_0``, decode ``{engine}_server_decode_{r}_{i}``),
  verl/experimental/teacher_loop/teacher_model.py (name_suffix = teacher key, "/" -> "_").
- verl v0.6.1 / v0.7.0 recipe/fully_async_policy/vllm_rollout/vllm_async_server.py
  (vLLMHttpServerForPartial); verl 80eb57ea verl/experimental/fully_async_policy/
  sglang_rollout/sglang_async_server.py (SGLangHttpServerForPartial); same actor names.
- verl-project/verl-recipe async_flow/vllm_rollout/vllm_async_server.py (AsyncFlowHttpServer),
  nemo_gym/replica.py (NeMoGymvLLMHttpServer), partial_rollout/vllm_rollout/
  vllm_async_server.py (PartialRolloutvLLMHttpServer), dynamo/dynamo_async_server.py
  (DynamoHttpServer, prefix ``dynamo_``), dynamo/dynamo_thunderagent.py.
- verl v0.5.0 verl/workers/rollout/async_server.py (``async_llm_server_{dp_rank}``, no /metrics).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsd_daemon.config import load_config
from fsd_daemon.discovery.base import ActorRecord
from fsd_daemon.recognition.recognise import (
    MAX_ACTOR_NAME_LENGTH,
    Recogniser,
    Rejected,
    ServerIdentity,
    bounded_number,
)
from fsd_daemon.recognition.verl import DEFAULT_PATTERNS, RecognitionPattern
from fsd_daemon.sim.harness import DaemonProcess, LocalRayCluster, wait_for
from tests.support.scripted_driver import scripted_driver


def actor(class_name: str, name: str) -> ActorRecord:
    # The recogniser caches by actor id: every distinct actor gets its own.
    return ActorRecord(f"{class_name}/{name}", class_name, name, "01000000", "ns", "node1", 1)


DEFAULT = Recogniser(load_config(None, environ={}).patterns)
PROM = "/prometheus/metrics"


def ident(
    engine: str,
    replica: str,
    role: str = "rollout",
    *,
    node: int = 0,
    disaggregation: str = "",
    teacher: str = "",
    metrics_path: str = "/metrics",
    has_metrics_route: bool = True,
) -> ServerIdentity:
    return ServerIdentity(
        engine, role, replica, node, disaggregation, teacher, metrics_path, has_metrics_route
    )


@pytest.mark.parametrize(
    ("class_name", "name", "expected"),
    [
        # verl 0.6-0.9 vLLMReplica / SGLangReplica: {engine}_server_{replica}_{node_rank}
        ("vLLMHttpServer", "vllm_server_3_0", ident("vllm", "3")),
        ("SGLangHttpServer", "sglang_server_0_0", ident("sglang", "0")),
        ("vLLMHttpServer", "vllm_server_reward_1_0", ident("vllm", "1", "reward")),
        # teacher_model.py: name_suffix = key.replace("/", "_") -> label "teacher"
        ("vLLMHttpServer", "vllm_server_teacher_2_0", ident("vllm", "2", "teacher")),
        (
            "vLLMHttpServer",
            "vllm_server_teacher_0_0_Qwen_Qwen3-8B",
            ident("vllm", "0", "teacher", teacher="Qwen_Qwen3-8B"),
        ),
        (
            "SGLangHttpServer",
            "sglang_server_teacher_1_0_math",
            ident("sglang", "1", "teacher", teacher="math"),
        ),
        # vllm_pd_replica.py: decode servers serve on every index, labelled as decode
        (
            "vLLMHttpServer",
            "vllm_server_decode_2_1",
            ident("vllm", "2", disaggregation="decode", node=1),
        ),
        (
            "SGLangHttpServer",
            "sglang_server_decode_0_0",
            ident("sglang", "0", disaggregation="decode"),
        ),
        ("vLLMHttpServer", "vllm_server_4_0_actor", ident("vllm", "4")),
        # trtllm_async_server.py: no node rank; Prometheus text at /prometheus/metrics
        ("TRTLLMHttpServer", "trtllm_server_5", ident("trtllm", "5", metrics_path=PROM)),
        (
            "TRTLLMHttpServer",
            "trtllm_server_reward_1",
            ident("trtllm", "1", "reward", metrics_path=PROM),
        ),
        ("TRTLLMHttpServer", "trtllm_server_0_7", ident("trtllm", "0", metrics_path=PROM)),
        # verl 0.6.1-0.7.x fully async: ...ForPartial classes, verl's actor names
        ("vLLMHttpServerForPartial", "vllm_server_0_0", ident("vllm", "0")),
        ("SGLangHttpServerForPartial", "sglang_server_1_0", ident("sglang", "1")),
        # verl-recipe subclasses keep vLLMReplica's names
        ("AsyncFlowHttpServer", "vllm_server_2_0", ident("vllm", "2")),
        ("NeMoGymvLLMHttpServer", "vllm_server_0_0", ident("vllm", "0")),
        ("PartialRolloutvLLMHttpServer", "vllm_server_3_0", ident("vllm", "3")),
        ("DynamoHttpServer", "dynamo_server_0_0", ident("dynamo", "0")),
        ("DynamoThunderAgentHttpServer", "dynamo_server_1_0", ident("dynamo", "1")),
        ("vLLMOmniHttpServer", "vllm_omni_server_1_0", ident("vllm", "1")),
        # vLLMRollout._get_server_name_prefix: "{rollout name}_" -> engine from the class
        ("vLLMHttpServer", "custom_server_6_0", ident("vllm", "6")),
        # verl <= 0.5: listed, marked as having no metrics route
        (
            "AsyncvLLMServer",
            "async_llm_server_7",
            ident("vllm", "7", has_metrics_route=False),
        ),
        (
            "AsyncSGLangServer",
            "async_llm_server_2",
            ident("sglang", "2", has_metrics_route=False),
        ),
    ],
)
def test_verl_servers_are_recognised(class_name: str, name: str, expected: ServerIdentity) -> None:
    """Every verl class and name form gives engine, role, disaggregation, teacher, replica."""
    assert DEFAULT.identify(actor(class_name, name)) == expected


@pytest.mark.parametrize(
    ("class_name", "name"),
    [
        ("vLLMHttpServer", "vllm_server_3_1"),  # node rank 1 of a multi-node replica: no HTTP
        ("vLLMHttpServer", "vllm_server_reward_0_2"),
        ("DynamoHttpServer", "dynamo_server_0_1"),  # slave nodes: frontend runs on node 0
        ("ActorRolloutRefWorker", "vllm_server_0_0"),  # right name, wrong class
        ("vLLMHttpServer", ""),  # unnamed
        ("vLLMHttpServer", "my_custom_name"),
        ("TaskRunner", "task_runner"),
        ("AsyncFlowLLMServerManager", "vllm_server_0_0"),  # not of the HttpServer family
    ],
)
def test_other_actors_are_not_targets(class_name: str, name: str) -> None:
    """Non-zero node ranks, other classes and unknown names are not scrape targets."""
    assert DEFAULT.identify(actor(class_name, name)) is None


def test_user_pattern_first_and_cache_forgets_gone_actors() -> None:
    """A user pattern wins over the defaults; the per-actor cache drops actors that left."""
    patterns = (
        RecognitionPattern(
            class_name="vLLMHttpServer", name=r"vllm_server_(?P<replica>\d+)_0", engine="sglang"
        ),
        *load_config(None, environ={}).patterns,
    )
    r = Recogniser(patterns)
    assert r.identify(actor("vLLMHttpServer", "vllm_server_1_0")) == ServerIdentity(
        "sglang", "rollout", "1", 0
    )
    r.forget(set())
    assert r._cache == {}


# Crafted names: Python's int() refuses more than 4,300 digits, and
# "server_1_" repeated made the old name pattern take quadratic time (0.57 s at 18,000 chars).
CRAFTED = [
    "vllm_server_0_" + "1" * 4301,
    "vllm_server_" + "1" * 4301 + "_0",
    "server_1_" * 2000 + "!",
    "a_" * 9000,
    "vllm_server_" + "1_" * 9000,
]


@pytest.mark.parametrize("name", CRAFTED, ids=lambda n: f"{n[:14]}...{len(n)}")
@pytest.mark.timeout(20)
def test_crafted_long_names_are_refused_before_any_regex(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A name over the bound is refused (logged once, not a server) without being matched:
    no int() on thousands of digits, no regex over thousands of characters."""
    r = Recogniser(DEFAULT_PATTERNS)
    a = actor("vLLMHttpServer", name)
    with caplog.at_level(logging.WARNING):
        verdict = r.classify(a)
        assert r.classify(a) is verdict  # cached: judged and logged once
    assert isinstance(verdict, Rejected) and verdict.reason == "name_too_long"
    assert len([rec for rec in caplog.records if "ignored" in rec.message]) == 1
    assert r.name_groups("vLLMHttpServer", name) == {}


@pytest.mark.parametrize(
    "name",
    [
        "vllm_server_\u0663_0",  # ARABIC-INDIC DIGIT THREE: \d would take it as a replica
        "vllm_server_0_\u0661",  # and as a node rank
        "vllm_server_\uff11_0",  # FULLWIDTH DIGIT ONE
        "async_llm_server_\u0967",  # DEVANAGARI DIGIT ONE
        "vllm_server_1234567890_0",  # ten digits: more than a replica number can be
    ],
)
def test_non_ascii_or_oversized_numbers_are_not_replicas(name: str) -> None:
    """Only 1 to 9 ASCII digits are a replica or a node rank."""
    assert DEFAULT.identify(actor("vLLMHttpServer", name)) is None
    assert DEFAULT.identify(actor("AsyncvLLMServer", name)) is None


def test_user_pattern_with_unicode_digits_cannot_smuggle_a_replica() -> None:
    """A user pattern using \\d is matched ASCII-only; a replica group that still captures
    something other than small ASCII numbers is refused, not passed to int()."""
    loose = RecognitionPattern(r"\w+", r"srv_(?P<replica>\w+)_(?P<node>\w+)", "vllm")
    r = Recogniser((loose,))
    assert r.identify(actor("Srv", "srv_\u0663_0")) is None
    verdict = r.classify(actor("Srv", "srv_abc_0"))
    assert isinstance(verdict, Rejected) and verdict.reason == "bad_replica"
    verdict = r.classify(actor("Srv", "srv_1_" + "9" * 50))
    assert isinstance(verdict, Rejected) and verdict.reason == "bad_node_rank"


def test_bounded_number() -> None:
    """Digits become numbers only when short and ASCII."""
    assert bounded_number("007") == 7
    assert bounded_number("123456789") == 123456789
    for text in ("", "1234567890", "\u0663", "1.0", "-1", "1 ", "+1", "\uff11"):
        assert bounded_number(text) is None


_NAME_ALPHABET = st.sampled_from(
    [
        *("vllm", "sglang", "trtllm", "dynamo", "server", "reward", "teacher", "decode"),
        *("_", "-", "0", "1", "9", "\u0663", "\uff11", "a", "\n", ".", "/"),
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    class_name=st.sampled_from(
        ["vLLMHttpServer", "SGLangHttpServerForPartial", "TRTLLMHttpServer", "AsyncvLLMServer"]
    )
    | st.text(max_size=300),
    name=st.lists(_NAME_ALPHABET, max_size=40).map("".join) | st.text(max_size=600),
)
def test_any_class_and_name_never_raise_and_give_sane_identities(
    class_name: str, name: str
) -> None:
    """Property: whatever the strings, classification never raises; a recognised server has
    an ASCII replica of at most 9 digits, a node rank below 10**9, and no newline anywhere."""
    r = Recogniser(DEFAULT_PATTERNS)
    verdict = r.classify(actor(class_name, name))
    r.name_groups(class_name, name)
    if isinstance(verdict, ServerIdentity):
        assert len(name) <= MAX_ACTOR_NAME_LENGTH
        assert verdict.replica == "" or (
            verdict.replica.isascii() and verdict.replica.isdigit() and len(verdict.replica) <= 9
        )
        assert 0 <= verdict.node_rank < 10**9
        assert "\n" not in name


_HOSTILE_DRIVER = """
import sys
import ray
from fsd_daemon.sim.rollout_server import vLLMHttpServer

ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
names = sys.stdin.readline().rstrip().split("|")
handles = [ray.remote(vLLMHttpServer).options(name=n, num_cpus=0).remote() for n in names]
ray.get([h.pid.remote() for h in handles])
print("ready", flush=True)
sys.stdin.read()
"""


def test_hostile_actor_names_on_a_real_cluster_cost_the_daemon_nothing(
    ray_cluster: LocalRayCluster, tmp_path: Path
) -> None:
    """Hostile names as a user of the cluster would make them: real Ray actors of a server class
    named with 4,301 digits, 18,001 crafted characters and an Arabic-Indic digit. The daemon
    (a real process) stays up, lists the one honest server and logs each hostile one once."""
    hostile = ["vllm_server_0_" + "1" * 4301, "server_1_" * 2000 + "!", "vllm_server_\u0663_0"]
    with scripted_driver(_HOSTILE_DRIVER, ray_cluster.address) as driver:
        assert driver.stdin is not None and driver.stdout is not None
        driver.stdin.write("|".join([*hostile, "vllm_server_7_0"]) + "\n")
        driver.stdin.flush()
        assert driver.stdout.readline().strip() == "ready"
        fast: dict[str, Any] = {"daemon.poll_interval_seconds": 0.5}
        with DaemonProcess(ray_cluster.address, tmp_path / "out", **fast) as d:
            try:
                wait_for(lambda: set(d.by_actor()) == {"vllm_server_7_0"}, timeout=60)
            except AssertionError:
                print(d.by_actor().keys(), d.output()[-5000:])
                raise
            seen = d.polls()
            wait_for(lambda: d.polls() >= seen + 5, timeout=30)  # several more polls
            assert d.proc.poll() is None
            assert set(d.by_actor()) == {"vllm_server_7_0"}
            output = d.output()
            assert output.count("name over") == 2, output[-3000:]
            assert "Traceback" not in output
