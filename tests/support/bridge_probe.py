"""Resolve every ALIVE actor named ``vllm_server*`` through a real ``RayBridge`` and print the
answers as JSON lines; run as a separate process (e.g. inside a mount namespace whose /tmp is
read-only): ``python -m tests.support.bridge_probe GCS_ADDRESS DASHBOARD_URL``."""

from __future__ import annotations

import sys
import time

import orjson

from fsd_daemon.discovery.ray_bridge import RayBridge
from fsd_daemon.discovery.ray_state import RayStateSource


def main(gcs_address: str, dashboard_url: str) -> int:
    actors = [
        a
        for a in RayStateSource(dashboard_url, timeout=5).snapshot().actors
        if a.name.startswith("vllm_server")
    ]
    bridge = RayBridge(gcs_address, timeout=5.0)
    try:
        if not bridge.wait_ready(90):
            print(orjson.dumps({"problem": bridge.problem()}).decode(), flush=True)
            return 1
        for _ in range(10):
            answers = bridge.resolve_addresses(actors)
            if answers:
                for actor in actors:
                    answer = answers.get(actor.actor_id)
                    value = answer.address if answer else None
                    print(orjson.dumps({"name": actor.name, "address": value}).decode())
                return 0
            time.sleep(1)
        print(orjson.dumps({"problem": bridge.problem()}).decode(), flush=True)
        return 1
    finally:
        bridge.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
