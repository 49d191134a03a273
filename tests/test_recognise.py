"""Which actors are rollout servers, by class and name, for verl 0.6-0.9 and verl <= 0.5."""

from __future__ import annotations

import pytest

from fsd_daemon.config import RecognitionPattern, load_config
from fsd_daemon.discovery.base import ActorRecord
from fsd_daemon.discovery.recognise import Recogniser, ServerIdentity


def actor(class_name: str, name: str) -> ActorRecord:
    # The recogniser caches by actor id: every distinct actor gets its own.
    return ActorRecord(f"{class_name}/{name}", class_name, name, "01000000", "ns", "node1", 1)


DEFAULT = Recogniser(load_config(None, environ={}).patterns)


@pytest.mark.parametrize(
    ("class_name", "name", "expected"),
    [
        ("vLLMHttpServer", "vllm_server_3_0", ServerIdentity("vllm", "rollout", "3", 0)),
        ("SGLangHttpServer", "sglang_server_0_0", ServerIdentity("sglang", "rollout", "0", 0)),
        ("vLLMHttpServer", "vllm_server_reward_1_0", ServerIdentity("vllm", "reward", "1", 0)),
        ("vLLMHttpServer", "vllm_server_teacher_2_0", ServerIdentity("vllm", "teacher", "2", 0)),
        ("vLLMHttpServer", "vllm_server_decode_2_1", ServerIdentity("vllm", "decode", "2", 1)),
        ("vLLMHttpServer", "vllm_server_4_0_actor", ServerIdentity("vllm", "rollout", "4", 0)),
        ("TRTLLMHttpServer", "trtllm_server_5", ServerIdentity("trtllm", "rollout", "5", 0)),
        ("AsyncvLLMServer", "async_llm_server_7", ServerIdentity("vllm", "rollout", "7", 0)),
        ("AsyncSGLangServer", "async_llm_server_2", ServerIdentity("sglang", "rollout", "2", 0)),
        ("vLLMOmniHttpServer", "vllm_omni_server_1_0", ServerIdentity("vllm", "rollout", "1", 0)),
    ],
)
def test_verl_servers_are_recognised(class_name: str, name: str, expected: ServerIdentity) -> None:
    """verl's class names and actor names give engine, role, replica and node rank."""
    assert DEFAULT.identify(actor(class_name, name)) == expected


@pytest.mark.parametrize(
    ("class_name", "name"),
    [
        ("vLLMHttpServer", "vllm_server_3_1"),  # node rank 1 of a multi-node replica: no HTTP
        ("vLLMHttpServer", "vllm_server_reward_0_2"),
        ("ActorRolloutRefWorker", "vllm_server_0_0"),  # right name, wrong class
        ("vLLMHttpServer", ""),  # unnamed
        ("vLLMHttpServer", "my_custom_name"),
        ("TaskRunner", "task_runner"),
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
