"""Build cluster descriptions for StaticCluster (the discovery seam without Ray)."""

from __future__ import annotations

from typing import Any


def server(
    replica: int,
    *,
    job: str = "01000000",
    engine: str = "vllm",
    node: str = "n0",
    port: int | None = None,
    role: str = "",
    address: Any = None,
) -> dict[str, Any]:
    cls = {"vllm": "vLLMHttpServer", "sglang": "SGLangHttpServer"}[engine]
    role_part = f"{role}_" if role else ""
    name = f"{engine}_server_{role_part}{replica}_0"
    return {
        "actor_id": f"{job}-{engine}-{role}-{replica}",
        "class_name": cls,
        "name": name,
        "job_id": job,
        "namespace": f"ns-{job}",
        "node_id": node,
        "pid": 1000 + replica,
        "address": address if address is not None else ["127.0.0.1", port or 20000 + replica],
    }


def node(
    node_id: str = "n0", ip: str = "127.0.0.1", head: bool = True, port: int = 8080
) -> dict[str, Any]:
    return {
        "node_id": node_id,
        "node_ip": ip,
        "node_name": ip,
        "is_head": head,
        "metrics_port": port,
    }


def cluster(*servers: dict[str, Any], nodes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"actors": list(servers), "nodes": nodes if nodes is not None else [node()]}
