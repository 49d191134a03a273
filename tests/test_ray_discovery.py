"""Against a real local Ray cluster: verl-like jobs (separate drivers, anonymous namespaces,
verl's class and actor names, real HTTP /metrics) found, labelled, dropped and kept."""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fsd_daemon.config import default_cluster
from fsd_daemon.sim.harness import DaemonProcess, LocalRayCluster, read_groups, wait_for
from fsd_daemon.sim.launch import start_job
from tests.support.cli import run_cli

pytestmark = pytest.mark.ray

POLL = 2.0


def test_job_found_with_labels_and_addresses_then_removed(
    ray_cluster: LocalRayCluster, tmp_path: Path
) -> None:
    """Rollout (vLLM, SGLang, 2 node ranks each) and reward servers appear within two polls of
    serving, with their labels and real addresses; node rank 1 is not a target; after the job
    ends they go."""
    with DaemonProcess(
        ray_cluster.address, tmp_path / "out", **{"daemon.poll_interval_seconds": POLL}
    ) as d:
        wait_for(lambda: (tmp_path / "out" / "gpu.json").exists())
        job = start_job(
            ray_cluster.address,
            "--vllm",
            "2",
            "--sglang",
            "1",
            "--reward",
            "1",
            "--nodes-per-replica",
            "2",
        )
        try:
            ready, polls_before = time.monotonic(), d.polls()
            expected = {
                "vllm_server_0_0",
                "vllm_server_1_0",
                "sglang_server_0_0",
                "vllm_server_reward_0_0",
            }
            waited = wait_for(lambda: set(d.by_actor()) == expected, timeout=30)
            # The poll that was running when they served may have listed too early; the next
            # one finds them (a third may finish before the check above looks).
            polls = d.polls() - polls_before
            assert polls <= 3, f"targets appeared {polls:.0f} polls after the servers served"
            found = d.by_actor()
            for name, group in found.items():
                labels = group["labels"]
                assert group["targets"] == [job.addresses[name]]
                assert labels["ray_job_id"] == job.job_id
                assert labels["ray_namespace"] == job.info["namespace"]
                assert labels["node_ip"] == "127.0.0.1"
                # No cluster set: the derived default (the host name outside Slurm).
                assert labels["cluster"] == default_cluster(os.environ)[0]
                assert labels["actor_name"] == name
                assert len(labels["node_id"]) == 56
                assert "model_name" not in labels
                body = urllib.request.urlopen(
                    f"http://{group['targets'][0]}/metrics", timeout=5
                ).read()
                assert (b"vllm:num_requests_running" in body) or (
                    b"sglang:num_running_reqs" in body
                )
            assert found["sglang_server_0_0"]["labels"]["engine"] == "sglang"
            assert found["vllm_server_1_0"]["labels"]["replica"] == "1"
            assert found["vllm_server_reward_0_0"]["labels"]["role"] == "reward"
            assert found["vllm_server_0_0"]["labels"]["role"] == "rollout"
            print(
                f"pick-up after serving: {waited:.2f}s, {polls:.0f} polls (poll {POLL}s), "
                f"{time.monotonic() - ready:.2f}"
            )
        finally:
            job.stop()
        wait_for(lambda: d.rollout() == [], timeout=POLL * 3 + 10)
        # Servers may die across two polls: the removals logged for the job add up to 4.
        removed = re.findall(r"-(\d+) rollout targets? \(job " + job.job_id + r"\)", d.output())
        assert sum(int(n) for n in removed) == 4, removed
        gpu = read_groups(tmp_path / "out" / "gpu.json")
        assert [g["targets"] for g in gpu] == [["127.0.0.1:9847"]]
        ray_targets = read_groups(tmp_path / "out" / "ray.json")
        # The node, and Ray's dashboard (and autoscaler, where it runs): tests/test_ray_targets.py.
        (node,) = [g for g in ray_targets if g["labels"]["ray_component"] == "node"]
        assert node["labels"]["is_head_node"] == "true"
        port = int(node["targets"][0].rsplit(":", 1)[1])
        assert port > 0


def test_two_jobs_told_apart_and_one_ending_leaves_the_other(
    ray_cluster: LocalRayCluster, tmp_path: Path
) -> None:
    """Two jobs at once both appear, each with its own job id and namespace; ending one leaves
    the other's targets untouched (unlike a prometheus.yml rewrite, which erases the first)."""
    with DaemonProcess(
        ray_cluster.address, tmp_path / "out", **{"daemon.poll_interval_seconds": 0.5}
    ) as d:
        a = start_job(ray_cluster.address, "--vllm", "2")
        b = start_job(ray_cluster.address, "--vllm", "0", "--sglang", "1", "--legacy", "1")
        try:
            try:
                wait_for(lambda: len(d.rollout()) == 4, timeout=30)
            except AssertionError:
                print(d.rollout(), b.info, d.output()[-4000:])
                raise
            jobs = {g["labels"]["ray_job_id"] for g in d.rollout()}
            assert jobs == {a.job_id, b.job_id}
            namespaces = {g["labels"]["ray_namespace"] for g in d.rollout()}
            assert namespaces == {a.info["namespace"], b.info["namespace"]}
            legacy = d.by_actor()["async_llm_server_0"]
            assert legacy["targets"] == [b.addresses["async_llm_server_0"]]  # "ip:port" string form
            a.stop()
            wait_for(
                lambda: {g["labels"]["ray_job_id"] for g in d.rollout()} == {b.job_id}, timeout=20
            )
            assert len(d.rollout()) == 2
        finally:
            a.stop()
            b.stop()


def test_server_that_serves_late_appears_when_it_serves(
    ray_cluster: LocalRayCluster, tmp_path: Path
) -> None:
    """verl creates the actor, then launches HTTP: the target appears once the port exists."""
    with DaemonProcess(
        ray_cluster.address, tmp_path / "out", **{"daemon.poll_interval_seconds": 0.5}
    ) as d:
        job = start_job(ray_cluster.address, "--vllm", "1", "--launch-delay", "3")
        try:
            wait_for(lambda: len(d.rollout()) == 1, timeout=10)
            assert "has no address yet" in d.output()
        finally:
            job.stop()


def test_dashboard_outage_keeps_files_byte_identical(
    ray_cluster: LocalRayCluster, tmp_path: Path
) -> None:
    """The state API stops answering (dashboard paused): files stay byte for byte, health
    degrades, the daemon stays alive, and it is back to normal within a poll of Ray returning."""
    settings = {
        "daemon.poll_interval_seconds": 0.5,
        "ray.request_timeout_seconds": 1.0,
        "daemon.max_backoff_seconds": 1.0,
        "daemon.grace_period_seconds": 0.5,
    }
    with DaemonProcess(ray_cluster.address, tmp_path / "out", **settings) as d:
        job = start_job(ray_cluster.address, "--vllm", "2")
        try:
            wait_for(lambda: len(d.rollout()) == 2, timeout=30)
            files = {p.name: p.read_bytes() for p in (tmp_path / "out").glob("*.json")}
            ray_cluster.pause_dashboard()
            try:
                paused = time.monotonic()
                wait_for(lambda: d.health()[0] == 503, timeout=15)
                # Four failed polls and many grace periods (0.5 s) since the dashboard stopped.
                failed = _failed_polls(d)
                wait_for(
                    lambda: _failed_polls(d) >= failed + 4 and time.monotonic() - paused > 4,
                    timeout=30,
                )
                assert {p.name: p.read_bytes() for p in (tmp_path / "out").glob("*.json")} == files
                assert d.proc.poll() is None
                assert "keeping the files as they are" in d.output()
            finally:
                ray_cluster.resume_dashboard()
            resumed = d.polls()
            back = wait_for(lambda: d.health()[0] == 200, timeout=15)
            polls = d.polls() - resumed
            print(f"healthy again {back:.2f}s, {polls:.0f} polls after the dashboard resumed")
            # The poll in flight at the resume may still fail; the next one succeeds (a third
            # may finish before the check above looks).
            assert polls <= 3, f"healthy again only {polls:.0f} polls after Ray returned"
            assert {p.name: p.read_bytes() for p in (tmp_path / "out").glob("*.json")} == files
            assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
                "gpu.json",
                "ray.json",
                "rollout.json",
            ]
        finally:
            job.stop()


def test_targets_command_shows_servers_and_writes_nothing(
    ray_cluster: LocalRayCluster, tmp_path: Path
) -> None:
    """`fsd-daemon targets --json` lists what would be written; the output dir stays empty."""
    job = start_job(ray_cluster.address, "--vllm", "1")
    try:
        result = run_cli(
            "targets",
            "--json",
            "--ray-address",
            ray_cluster.address,
            "--output-dir",
            str(tmp_path / "never"),
        )
        assert result.returncode == 0, result.stderr
        data = json.loads(result.stdout)
        assert [g["targets"][0] for g in data["rollout.json"]] == [job.addresses["vllm_server_0_0"]]
        assert not (tmp_path / "never").exists()
        table = run_cli("targets", "--ray-address", ray_cluster.address)
        assert table.returncode == 0, table.stderr
        assert "vllm_server_0_0" in table.stdout and "ENGINE" in table.stdout
    finally:
        job.stop()


def _poll_durations(d: DaemonProcess) -> tuple[float, float]:
    """From the daemon's fsd_daemon_poll_duration_seconds histogram: (polls finished, polls
    that took longer than 1 s)."""
    for family in text_string_to_metric_families(d.metrics()):
        if family.name == "fsd_daemon_poll_duration_seconds":
            count = next(s.value for s in family.samples if s.name.endswith("_count"))
            quick = next(
                s.value
                for s in family.samples
                if s.name.endswith("_bucket") and float(s.labels["le"]) == 1.0
            )
            return count, count - quick
    raise AssertionError("fsd_daemon_poll_duration_seconds is missing")


def _failed_polls(d: DaemonProcess) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(d.metrics())
        if family.name == "fsd_daemon_poll_errors"
        for s in family.samples
        if s.name == "fsd_daemon_poll_errors_total"
    )


def test_hung_server_delays_neither_the_others_nor_later_polls(
    ray_cluster: LocalRayCluster, tmp_path: Path
) -> None:
    """One server's get_server_address() never returns: the others are written anyway, the hung
    call costs the resolve timeout once (not every poll), and a later job appears promptly."""
    settings = {"daemon.poll_interval_seconds": 0.5, "ray.resolve_timeout_seconds": 2.0}
    with DaemonProcess(ray_cluster.address, tmp_path / "out", **settings) as d:
        wait_for(lambda: (tmp_path / "out" / "gpu.json").exists(), timeout=30)
        stuck = start_job(ray_cluster.address, "--vllm", "2", "--hang", "1")
        try:
            wait_for(lambda: set(d.by_actor()) == {"vllm_server_0_0", "vllm_server_1_0"}, 30)
            # Ten polls while the call hangs: waiting for it (2 s, past the 1 s bucket) costs
            # at most one of them.
            count0, slow0 = _poll_durations(d)
            wait_for(lambda: d.polls() >= count0 + 10, timeout=60)
            count1, slow1 = _poll_durations(d)
            print(f"{slow1 - slow0:.0f} of {count1 - count0:.0f} polls over 1 s while a call hangs")
            assert slow1 - slow0 <= 1, (slow1 - slow0, count1 - count0)
            assert "vllm_server_2_0" not in d.by_actor()
            later = start_job(ray_cluster.address, "--vllm", "0", "--sglang", "1")
            try:
                count0, slow0 = _poll_durations(d)
                took = wait_for(
                    lambda: later.job_id in {g["labels"]["ray_job_id"] for g in d.rollout()}, 20
                )
                count1, slow1 = _poll_durations(d)
                print(
                    f"later job written {took:.2f} s, {count1 - count0:.0f} polls after it "
                    f"served ({slow1 - slow0:.0f} over 1 s)"
                )
                # Found by the next poll, asked and answered within a poll or two; the hung
                # call delays none of them.
                assert count1 - count0 <= 4 and slow1 - slow0 == 0, (count1 - count0, slow1)
            finally:
                later.stop()
        finally:
            stuck.stop()
