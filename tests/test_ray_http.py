"""What the plain-HTTP state client relies on in Ray's answers, checked against the Ray that
is installed (CI runs this on the newest and the oldest supported Ray): a release that
changes an endpoint or the envelope fails here, not for users. Upstream:
python/ray/util/state/api.py (StateApiClient._make_http_get_request: ``data.result``),
python/ray/util/state/common.py (ListApiResponse; ListApiOptions scales ``timeout`` by 0.8,
and 2.44 refuses the 0 that a timeout below 2.5 s becomes), python/ray/dashboard/modules/job/
job_head.py (``/api/version`` with ``session_name``), python/ray/dashboard/utils.py
(ray_address_to_api_server_url: the dashboard URL in the GCS key-value store)."""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsd_daemon.discovery.base import ClusterSnapshot, SourceError
from fsd_daemon.discovery.ray_auth import resolve_auth
from fsd_daemon.discovery.ray_http import DashboardClient, find_dashboard_url
from fsd_daemon.discovery.ray_state import RayStateSource
from fsd_daemon.sim.harness import wait_for
from fsd_daemon.sim.launch import Job, start_job
from fsd_daemon.sim.rayhead import RayHead
from tests.support.scripted_driver import scripted_driver

pytestmark = pytest.mark.ray

ALIVE = [("state", "=", "ALIVE")]


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayHead]:
    with RayHead(tmp_path_factory.mktemp("rayhead")) as started:
        yield started


@pytest.fixture(scope="module")
def job(head: RayHead) -> Iterator[Job]:
    started = start_job(head.address, "--vllm", "1")
    try:
        yield started
    finally:
        started.stop()


def test_endpoints_and_answer_shape(head: RayHead, job: Job, tmp_path: Path) -> None:
    """The dashboard URL found from the GCS address, the list envelope and its counts, the
    record fields, a count-only (limit=1) listing, and the session name."""
    auth = resolve_auth({"HOME": str(tmp_path)})  # no token: this cluster runs without
    assert find_dashboard_url(head.address, auth, timeout=60) == head.dashboard_url
    client = DashboardClient(head.dashboard_url, auth)
    actors = client.list_state("actors", filters=ALIVE, limit=100, timeout=5)
    for key in ("result", "total", "num_after_truncation", "num_filtered"):
        assert key in actors, key
    record = next(r for r in actors["result"] if r.get("name") == "vllm_server_0_0")
    for key in ("actor_id", "class_name", "job_id", "ray_namespace", "node_id", "pid", "state"):
        assert key in record, key
    one = client.list_state("actors", filters=ALIVE, limit=1, timeout=5)
    assert len(one["result"]) == 1 and one["num_filtered"] == actors["num_filtered"]
    nodes = client.list_state("nodes", filters=ALIVE, limit=10, timeout=5)
    assert {"node_id", "node_ip", "is_head_node"} <= nodes["result"][0].keys()
    session = client.session_name(timeout=5)
    assert session.startswith("session_") and (head.temp_dir / session).is_dir()


def test_a_one_second_timeout_works_on_every_supported_ray(head: RayHead) -> None:
    """ray.request_timeout_seconds = 1: what we send is clamped so that the API server's own
    scaling never reaches 0 (the raw 1 s request shows what Ray does with it)."""
    client = DashboardClient(head.dashboard_url, resolve_auth({}))
    assert client.list_state("nodes", filters=ALIVE, limit=10, timeout=1.0)["result"]
    raw = f"{head.dashboard_url}/api/v0/nodes?limit=10&timeout=1"
    try:
        with urllib.request.urlopen(raw, timeout=10) as reply:
            print("Ray accepts timeout=1 itself:", reply.status)
    except urllib.error.HTTPError as exc:
        print("Ray refuses timeout=1 itself:", exc.code, exc.read()[:200])


def test_state_source_snapshot_and_session(head: RayHead, job: Job) -> None:
    """RayStateSource from the GCS address: the server, the head node, the session name."""
    source = RayStateSource(head.address, timeout=1.0, auth=resolve_auth({}))
    snapshots: list[ClusterSnapshot] = []
    wait_for(lambda: _try_snapshot(source, snapshots), timeout=60, step=0.2)
    snapshot = snapshots[-1]
    assert "vllm_server_0_0" in {a.name for a in snapshot.actors}
    assert [n.is_head for n in snapshot.nodes] == [True]
    assert snapshot.session.startswith("session_")
    assert (head.temp_dir / snapshot.session).is_dir()


def _try_snapshot(source: RayStateSource, into: list[ClusterSnapshot]) -> bool:
    """One poll; False while the dashboard lookup (a poll waits 1 s for it) still runs."""
    try:
        into.append(source.snapshot())
    except SourceError as exc:
        assert exc.kind == "timeout", exc
        return False
    return True


_STEP_DRIVER = """
import sys, time
import ray

ray.init(address=sys.argv[1], namespace="quick", logging_level="ERROR", log_to_driver=False)


@ray.remote(num_cpus=0)
class Server:
    def __init__(self, start_seconds):
        time.sleep(start_seconds)  # PENDING_CREATION until the constructor returns

    def ping(self):
        return True


handles = {}
for line in sys.stdin:
    verb, name, *rest = line.split()
    if verb == "create":
        handles[name] = Server.options(name=name).remote(float(rest[0]))
    elif verb == "wait":
        ray.get(handles[name].ping.remote(), timeout=120)
    elif verb == "kill":
        ray.kill(handles.pop(name))
    print("done", flush=True)
"""


def test_a_server_alive_as_another_dies_is_seen_at_the_next_poll(head: RayHead) -> None:
    """Real Ray, a replacement in verl's order: the new server is created (a full listing
    then finds it still PENDING_CREATION), then it becomes ALIVE as the old one is killed.
    Ray's ALIVE count and total are both as they were; the next poll still lists the new
    server and not the old one (before, the quick poll answered from the old snapshot until
    the next creation: 4.5 s late at every step of the soak bench's churn)."""
    with scripted_driver(_STEP_DRIVER, head.address) as driver:
        _replace_in_two_steps(head, driver)


def _replace_in_two_steps(head: RayHead, driver: subprocess.Popen[str]) -> None:
    def step(command: str) -> None:
        assert driver.stdin is not None and driver.stdout is not None
        driver.stdin.write(command + "\n")
        driver.stdin.flush()
        assert driver.stdout.readline().strip() == "done", command

    def names() -> set[str]:
        return {a.name for a in source.snapshot().actors if a.name.startswith("quick_")}

    source = RayStateSource(head.dashboard_url, timeout=5.0, auth=resolve_auth({}))
    client = DashboardClient(head.dashboard_url, resolve_auth({}))
    step("create quick_old 0")
    step("wait quick_old")
    assert names() == {"quick_old"}
    step("create quick_new 8")
    assert names() == {"quick_old"}, "the new server was ALIVE already: nothing tested"
    step("kill quick_old")
    step("wait quick_new")
    wait_for(
        lambda: (
            "quick_old"
            not in {
                r.get("name")
                for r in client.list_state("actors", filters=ALIVE, limit=1000, timeout=5)["result"]
            }
        ),
        timeout=30,
    )
    assert names() == {"quick_new"}
