"""A cluster described by a JSON file: the same records as Ray's, with addresses inline.

Used by the benchmarks (a synthetic cluster of any size at the discovery seam), by tests of the
daemon loop, and for dry runs: ``fsd-daemon targets --ray-address file:/path/cluster.json``.

Format::

    {"session": "session_2026-01-01_00-00-00_000000_1",
     "actors": [{"actor_id": "...", "class_name": "vLLMHttpServer", "name": "vllm_server_0_0",
                 "job_id": "01000000", "namespace": "...", "node_id": "...", "pid": 123,
                 "address": ["10.0.0.1", 8000]}],
     "nodes": [{<Ray's node fields>, "is_head": true, "metrics_port": 8080}]}

where Ray's node fields are the three of its state API that discovery reads: ``node_id``,
``node_ip`` (an address such as 10.0.0.1) and ``node_name`` (``names.RAY_NODE_*_FIELD``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import orjson

from fsd_daemon.discovery.base import (
    ActorRecord,
    ClusterSnapshot,
    NodeRecord,
    Resolution,
    SourceError,
)
from fsd_daemon.mixin import names

STATIC_PREFIX = "file:"
# A Ray session name is about 40 characters ("session_2026-01-01_00-00-00_000000_1").
MAX_SESSION_LENGTH = 256

_Cluster = TypeVar("_Cluster", bound="StaticCluster")


class StaticCluster:
    """Both halves of the discovery seam (source and resolver), read from one file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._signature: tuple[int, int, int] | None = None
        self._snapshot = ClusterSnapshot((), ())
        self._addresses: dict[str, Any] = {}
        self._ports: dict[str, int] = {}

    @classmethod
    def from_data(cls: type[_Cluster], data: Mapping[str, Any]) -> _Cluster:
        """An in-memory cluster (benchmarks): no file involved."""
        cluster = cls(os.devnull)
        cluster._load(data)
        cluster._signature = (-1, -1, -1)
        return cluster

    def snapshot(self) -> ClusterSnapshot:
        if self._signature == (-1, -1, -1):
            return self._snapshot
        try:
            st = self.path.stat()
            signature = (st.st_ino, st.st_mtime_ns, st.st_size)
            if signature != self._signature:
                self._load(orjson.loads(self.path.read_bytes()))
                self._signature = signature
        except FileNotFoundError as exc:
            raise SourceError("unreachable", f"{self.path} does not exist") from exc
        except (OSError, orjson.JSONDecodeError) as exc:
            raise SourceError("bad_response", f"{self.path}: {exc}") from exc
        return self._snapshot

    def _load(self, data: Mapping[str, Any]) -> None:
        try:
            actors = []
            addresses: dict[str, Any] = {}
            for a in data.get("actors", []):
                record = ActorRecord(
                    actor_id=str(a["actor_id"]),
                    class_name=str(a.get("class_name", "")),
                    name=str(a.get("name", "")),
                    job_id=str(a.get("job_id", "")),
                    namespace=str(a.get("namespace", "")),
                    node_id=str(a.get("node_id", "")),
                    pid=int(a.get("pid", 0)),
                )
                actors.append(record)
                if "address" in a:
                    value = a["address"]
                    addresses[record.actor_id] = tuple(value) if isinstance(value, list) else value
            nodes = []
            ports: dict[str, int] = {}
            for n in data.get("nodes", []):
                node = NodeRecord(
                    node_id=str(n[names.RAY_NODE_ID_FIELD]),
                    node_ip=str(n[names.RAY_NODE_IP_FIELD]),
                    node_name=str(n.get(names.RAY_NODE_NAME_FIELD, "")),
                    is_head=bool(n.get("is_head", False)),
                )
                nodes.append(node)
                if n.get("metrics_port"):
                    ports[node.node_id] = int(n["metrics_port"])
            session = data.get("session", "")
            if not isinstance(session, str) or len(session) > MAX_SESSION_LENGTH:
                raise ValueError(f"session must be a string of at most {MAX_SESSION_LENGTH}")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SourceError(
                "bad_response", f"{self.path}: malformed cluster file: {exc!r}"
            ) from exc
        self._snapshot = ClusterSnapshot(
            tuple(actors), tuple(nodes), bool(data.get("truncated")), session
        )
        self._addresses = addresses
        self._ports = ports

    def resolve_addresses(self, actors: Iterable[ActorRecord]) -> Mapping[str, Resolution]:
        return {
            a.actor_id: Resolution(self._addresses[a.actor_id])
            for a in actors
            if a.actor_id in self._addresses
        }

    def metrics_ports(self, node_ids: Iterable[str]) -> Mapping[str, int]:
        return {n: self._ports[n] for n in node_ids if n in self._ports}

    def ray_components(self) -> Mapping[str, str] | None:
        return None  # a described cluster has no Ray of its own

    # The description carries every answer: always ready, nothing to restart, nothing fails.

    @property
    def ready(self) -> bool:
        return True

    def wait_ready(self, timeout: float) -> bool:
        return True

    def restart(self) -> None:
        pass

    def problem(self) -> str | None:
        return None

    def close(self) -> None:
        pass
