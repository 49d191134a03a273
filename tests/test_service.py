"""The service around the poll, and the poll's own gates, against a described cluster
(StaticCluster): last-resort handling, all-or-nothing reloads, capped backoff, the keeper
without watching, wake(), health stages, the start-up and Ray-restart gates, quiet logs for
persisting conditions, one reload per edit, fast re-polls while the cluster changes, IPv6."""

from __future__ import annotations

import functools
import logging
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from fsd_daemon.config import Config, load_config
from fsd_daemon.discovery.base import ActorRecord, ClusterSnapshot, Resolution, SourceError
from fsd_daemon.discovery.static import StaticCluster
from fsd_daemon.pipeline.poll import Poll, PollResult
from fsd_daemon.plumbing.atomic_files import WriteError
from fsd_daemon.service.daemon import FAST_POLL_WINDOW_SECONDS, Service
from fsd_daemon.sim.harness import healthz, targets_in
from fsd_daemon.sim.harness import wait_for as _wait_for
from tests.support.clusterfile import cluster, node, server

# This module's waits: 10 s at most, checked every 20 ms.
wait_for = functools.partial(_wait_for, timeout=10.0, step=0.02)


class Running:
    """A Service's loop in a thread (no signals there), stopped on leaving."""

    def __init__(self, service: Service, *, watch: bool = True) -> None:
        self.service = service
        self.thread = threading.Thread(target=service.run, kwargs={"watch": watch}, daemon=True)

    def __enter__(self) -> Service:
        self.thread.start()
        return self.service

    def __exit__(self, *exc: object) -> None:
        self.service.request_stop()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


@pytest.fixture
def paths(tmp_path: Path) -> dict[str, Path]:
    paths = {
        "cluster": tmp_path / "cluster.json",
        "out": tmp_path / "targets",
        "config": tmp_path / "fsd.toml",
    }
    paths["cluster"].write_bytes(orjson.dumps(cluster(server(0), server(1))))
    write_config(paths)
    return paths


def write_config(paths: dict[str, Path], extra: str = "", **daemon: Any) -> None:
    settings = {
        "output_dir": str(paths["out"]),
        "poll_interval_seconds": 0.1,
        "grace_period_seconds": 0.5,
        "max_backoff_seconds": 0.4,
        "cluster": "one",
        "metrics_listen": "127.0.0.1:0",
        **daemon,
    }
    lines = ["[daemon]", *(f"{k} = {orjson.dumps(v).decode()}" for k, v in settings.items())]
    lines += ["[ray]", f'address = "file:{paths["cluster"]}"', extra]
    paths["config"].write_text("\n".join(lines) + "\n")


def make_service(paths: dict[str, Path], **kwargs: Any) -> Service:
    def load() -> Config:
        return load_config(paths["config"], environ={})

    return Service(load(), config_loader=load, config_path=str(paths["config"]), **kwargs)


# -- nothing after a poll or on reload ends the loop -----------------------------------------------


def test_unexpected_error_after_a_poll_is_logged_counted_and_the_loop_goes_on(
    paths: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """A keeper that raises (any bug, any I/O error) does not end the daemon: logged, counted
    as poll_errors{kind="internal"}, and polling goes on."""
    service = make_service(paths)
    calls = {"n": 0}

    def broken_check() -> None:
        calls["n"] += 1
        raise OSError(5, "Input/output error")

    # What runs after each poll on the loop (the prometheus.yml keeper is kicked from here).
    service._keep_prometheus_config = broken_check  # type: ignore[method-assign]
    with Running(service) as s:
        wait_for(lambda: calls["n"] >= 3)
        paths["cluster"].write_bytes(orjson.dumps(cluster(server(0), server(1), server(2))))
        wait_for(lambda: len(targets_in(paths["out"] / "rollout.json")) == 3)
        assert s.metrics.poll_errors.labels("internal")._value.get() >= 3
    tracebacks = [r for r in caplog.records if "daemon loop; going on" in r.getMessage()]
    assert len(tracebacks) == 1  # once, not at every poll


def test_reload_is_all_or_nothing(paths: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    """A reload that moves the metrics listener to a busy port, or the output directory under a
    file, is refused as a whole: every setting of the running config stays (the new cluster
    label too), the old listener keeps serving, and one line says why."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    blocker = paths["out"].parent / "a-file"
    blocker.write_text("")
    try:
        with Running(make_service(paths)) as s:
            rollout = paths["out"] / "rollout.json"
            wait_for(lambda: len(targets_in(rollout)) == 2)
            port = s.metrics_port
            assert port
            for bad in (
                {"metrics_listen": f"127.0.0.1:{busy.getsockname()[1]}"},
                {"output_dir": str(blocker / "targets")},
            ):
                caplog.clear()
                write_config(paths, cluster="new", **bad)
                s.request_reload()
                wait_for(lambda: "config reload refused" in caplog.text, timeout=5)
                refused = [r for r in caplog.records if "reload refused" in r.getMessage()]
                assert len(refused) == 1, refused
                key = next(iter(bad))
                assert f"daemon.{key}" in refused[0].getMessage()
                assert s.config.daemon.cluster == "one"
                assert s.config.daemon.output_dir == str(paths["out"])
                assert s.metrics_port == port and healthz(port)[0] == 200
            # Still polling and writing with the old config.
            paths["cluster"].write_bytes(orjson.dumps(cluster(server(0), server(1), server(2))))
            wait_for(lambda: len(targets_in(rollout)) == 3)
            assert b'"new"' not in rollout.read_bytes()
    finally:
        busy.close()


# -- the loop's delay is the capped backoff --------------------------------------------------------


class FailingSource:
    def __init__(self, kind: str = "timeout") -> None:
        self.kind = kind

    def snapshot(self) -> ClusterSnapshot:
        raise SourceError(self.kind, "no answer")


def test_backoff_never_overflows_after_thousands_of_failures(paths: dict[str, Path]) -> None:
    """A six-hour outage (thousands of failed polls) keeps a finite delay at the cap."""
    config = load_config(paths["config"], environ={})
    resolver = StaticCluster(str(paths["cluster"]))
    service = Service(config, source=FailingSource("timeout"), resolver=resolver)
    failed = PollResult(ok=False, error="no answer", error_kind="timeout")
    delays = [service.next_delay(failed, took=5.0) for _ in range(5000)]
    assert max(delays) <= config.daemon.max_backoff_seconds
    assert delays[-1] >= config.daemon.max_backoff_seconds / 2


def test_absent_ray_is_probed_at_the_poll_interval_not_the_backoff_ceiling(
    paths: dict[str, Path],
) -> None:
    """Connection refused (Ray restarting) costs Ray nothing: probe at the poll interval, so a
    Ray that is back is seen within a poll; a slow Ray (timeouts) gets the full backoff."""
    write_config(paths, poll_interval_seconds=1.0, max_backoff_seconds=30.0)
    config = load_config(paths["config"], environ={})
    resolver = StaticCluster(str(paths["cluster"]))
    service = Service(config, source=FailingSource("unreachable"), resolver=resolver)
    refused = PollResult(ok=False, error="refused", error_kind="unreachable")
    assert max(service.next_delay(refused, took=0.01) for _ in range(50)) <= 1.0
    slow = PollResult(ok=False, error="timeout", error_kind="timeout")
    assert max(service.next_delay(slow, took=5.0) for _ in range(50)) > 10.0


# -- the keeper without watching, and wake() -------------------------------------------------------


def test_keeper_runs_after_polls_with_no_watch(paths: dict[str, Path]) -> None:
    """--no-watch must not stop the prometheus.yml keeper: it runs after every poll."""
    prom = paths["out"].parent / "prometheus.yml"
    prom.write_text("scrape_configs: []\n")
    write_config(paths, extra=f'[prometheus]\nconfig_file = "{prom}"\n')
    with Running(make_service(paths), watch=False):
        wait_for(lambda: "job_name: rollout" in prom.read_text(), timeout=5)


def test_wake_polls_now(paths: dict[str, Path]) -> None:
    """wake() (Ray's session link moved) polls at once, not at the next tick a minute away."""
    write_config(paths, poll_interval_seconds=60.0, fast_poll_interval_seconds=60.0)
    with Running(make_service(paths), watch=False) as s:
        rollout = paths["out"] / "rollout.json"
        wait_for(lambda: len(targets_in(rollout)) == 2)
        paths["cluster"].write_bytes(orjson.dumps(cluster(server(0), server(1), server(2))))
        s.wake()
        assert wait_for(lambda: len(targets_in(rollout)) == 3, timeout=2) < 2


# -- health names the failing stage ----------------------------------------------------------------


class TroubledResolver:
    """StaticCluster's answers, plus a problem() as a failing Ray bridge reports it."""

    def __init__(self, inner: StaticCluster, problem: str | None) -> None:
        self.inner = inner
        self.current_problem = problem

    def resolve_addresses(self, actors: Iterable[ActorRecord]) -> Mapping[str, Resolution]:
        return self.inner.resolve_addresses(actors)

    def metrics_ports(self, node_ids: Iterable[str]) -> Mapping[str, int]:
        return self.inner.metrics_ports(node_ids)

    def ray_components(self) -> Mapping[str, str] | None:
        return None  # a described cluster: no Ray components

    @property
    def ready(self) -> bool:
        return True

    def wait_ready(self, timeout: float) -> bool:
        return True

    def restart(self) -> None:
        pass

    def problem(self) -> str | None:
        return self.current_problem

    def close(self) -> None:
        pass


def test_healthz_names_the_resolver_when_it_fails(
    paths: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """A resolver (the Ray bridge) that cannot connect makes /healthz 503 with stage
    "resolver" and its line; the log says it once when it starts and once when it ends."""
    cluster_ = StaticCluster(str(paths["cluster"]))
    resolver = TroubledResolver(cluster_, "Ray bridge cannot connect: InvalidAuthToken")
    with Running(make_service(paths, source=cluster_, resolver=resolver)) as s:
        wait_for(lambda: s.metrics_port is not None)
        port = s.metrics_port
        assert port
        wait_for(lambda: healthz(port)[0] == 503)
        _status, body = healthz(port)
        assert body["problems"] == {"resolver": "Ray bridge cannot connect: InvalidAuthToken"}
        time.sleep(0.5)  # several polls: still one line
        resolver.current_problem = None
        wait_for(lambda: healthz(port)[0] == 200)
    lines = [r.getMessage() for r in caplog.records if "InvalidAuthToken" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "address resolution works again" in caplog.text


# -- the start-up gate, and Ray restarts -----------------------------------------------------------


class SlowResolver:
    """StaticCluster's addresses, withheld while ``answering`` is False (a bridge that is
    still resolving after a restart); counts restart() calls."""

    def __init__(self, inner: StaticCluster) -> None:
        self.inner = inner
        self.answering = False
        self.restarts = 0

    @property
    def ready(self) -> bool:
        return self.answering

    def wait_ready(self, timeout: float) -> bool:
        return self.answering

    def resolve_addresses(self, actors: Iterable[ActorRecord]) -> Mapping[str, Resolution]:
        return self.inner.resolve_addresses(actors) if self.answering else {}

    def metrics_ports(self, node_ids: Iterable[str]) -> Mapping[str, int]:
        return self.inner.metrics_ports(node_ids) if self.answering else {}

    def ray_components(self) -> Mapping[str, str] | None:
        return None  # a described cluster: no Ray components

    def problem(self) -> str | None:
        return None

    def restart(self) -> None:
        self.restarts += 1
        self.answering = False

    def close(self) -> None:
        pass


def test_restarted_daemon_never_writes_fewer_targets_than_it_found(
    paths: dict[str, Path],
) -> None:
    """rollout.json from a previous run holds two servers; after a restart the resolver is
    ready but has not re-resolved them yet: the file keeps both until they are resolved."""
    described = StaticCluster(str(paths["cluster"]))
    config = load_config(paths["config"], environ={})
    first = Poll(config, described, described)
    first.prepare()
    assert first.run_once().ok
    rollout = paths["out"] / "rollout.json"
    before = rollout.read_bytes()
    assert len(targets_in(rollout)) == 2

    resolver = SlowResolver(described)
    resolver.answering = True  # "ready" at once, as the bridge says after connecting ...
    resolver.resolve_addresses = lambda actors: {}  # type: ignore[method-assign]
    restarted = Poll(config, described, resolver)
    restarted.prepare()
    for _ in range(5):
        assert restarted.run_once().ok
        assert rollout.read_bytes() == before
    del resolver.resolve_addresses  # ... and answers a few polls later
    assert restarted.run_once().ok
    assert len(targets_in(rollout)) == 2


def test_ray_restart_never_writes_an_emptier_file(paths: dict[str, Path]) -> None:
    """A new Ray session (new head node): the resolver is restarted and its warm-up applies
    again, so no file is written with servers dropped merely because the new bridge has not
    answered yet."""
    # Both ways a source tells a new session: the session name and the head node.
    old_session = {**cluster(server(0), server(1)), "session": "session_1"}
    paths["cluster"].write_bytes(orjson.dumps(old_session))
    described = StaticCluster(str(paths["cluster"]))
    resolver = SlowResolver(described)
    resolver.answering = True
    config = load_config(paths["config"], environ={})
    poll = Poll(config, described, resolver)
    poll.prepare()
    assert poll.run_once().ok
    rollout = paths["out"] / "rollout.json"
    assert len(targets_in(rollout)) == 2
    new_session = {
        **cluster(server(0, job="02000000"), server(1, job="02000000"), nodes=[node("n-new")]),
        "session": "session_2",
    }
    paths["cluster"].write_bytes(orjson.dumps(new_session))
    for _ in range(5):
        assert poll.run_once().ok
        assert len(targets_in(rollout)) == 2, "written emptier during a Ray restart"
    assert resolver.restarts == 1
    resolver.answering = True

    def only_the_new_session() -> bool:
        assert poll.run_once().ok
        assert len(targets_in(rollout)) >= 2, "written emptier during a Ray restart"
        data = rollout.read_bytes()
        return b"02000000" in data and b"01000000" not in data

    # The old session's targets may stay until their grace period ends.
    wait_for(only_the_new_session, timeout=5)
    assert len(targets_in(rollout)) == 2


# -- quiet logs, one reload per edit ---------------------------------------------------------------


def test_persisting_write_error_is_logged_once_then_when_it_ends(
    paths: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """Twenty polls that cannot write: one ERROR line, /healthz names write:<file>, and one
    line when writing works again."""
    described = StaticCluster(str(paths["cluster"]))
    config = load_config(paths["config"], environ={})
    poll = Poll(config, described, described)
    poll.prepare()
    real_write = poll.writer.write

    def full_disk(name: str, data: bytes, **kw: Any) -> bool:
        raise WriteError(paths["out"] / name, OSError(28, "No space left on device"))

    poll.writer.write = full_disk  # type: ignore[method-assign]
    for i in range(20):
        paths["cluster"].write_bytes(orjson.dumps(cluster(*(server(r) for r in range(i % 3)))))
        poll.run_once()
    _, details = poll.health.check()
    assert "write:rollout.json" in details["problems"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == len(config_files(config)), [r.getMessage() for r in errors]
    poll.writer.write = real_write  # type: ignore[method-assign]
    poll.run_once()
    assert "rollout.json written again" in caplog.text
    assert poll.health.check()[0]


def config_files(config: Config) -> list[str]:
    files = ["rollout.json"]
    if config.targets.write_gpu:
        files.append("gpu.json")
    if config.targets.write_ray:
        files.append("ray.json")
    return files


def test_one_reload_per_edit_and_no_error_on_a_good_reload(
    paths: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """An edit is picked up by the file watch; the SIGHUP that follows it (``systemctl
    reload`` after editing) finds nothing new: one reload per edit. A good reload logs no
    ERROR (restarting the watcher's observer made watchdog log one)."""
    with Running(make_service(paths)) as s:
        rollout = paths["out"] / "rollout.json"
        wait_for(lambda: len(targets_in(rollout)) == 2)
        caplog.clear()
        write_config(paths, cluster="edited")
        wait_for(lambda: b'"edited"' in rollout.read_bytes(), timeout=5)
        s.request_reload()  # what SIGHUP does
        time.sleep(0.5)
        write_config(paths, cluster="edited-again")
        wait_for(lambda: b'"edited-again"' in rollout.read_bytes(), timeout=5)
        s.request_reload()
        time.sleep(0.5)
    reloads = [r for r in caplog.records if r.getMessage() == "config reloaded"]
    assert len(reloads) == 2, [r.getMessage() for r in caplog.records]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- poll sooner while the cluster changes ---------------------------------------------------------


def test_fast_polls_after_a_change_and_normal_interval_when_quiet(paths: dict[str, Path]) -> None:
    write_config(paths, poll_interval_seconds=2.0, fast_poll_interval_seconds=0.25)
    config = load_config(paths["config"], environ={})
    now = [1000.0]
    described = StaticCluster(str(paths["cluster"]))
    service = Service(config, source=described, resolver=described, clock=lambda: now[0])
    changed = PollResult(ok=True, cluster_changed=True)
    unresolved = PollResult(ok=True, unresolved=True)
    quiet = PollResult(ok=True)
    assert service.next_delay(quiet) == 2.0  # a quiet cluster: the normal interval
    assert service.next_delay(changed) == 0.25
    now[0] += 1
    assert service.next_delay(unresolved) == 0.25  # a new server's address is coming
    assert service.next_delay(quiet) == 0.25  # servers come in waves: the next one soon
    now[0] += FAST_POLL_WINDOW_SECONDS
    assert service.next_delay(unresolved) == 2.0  # bounded: a server that never answers
    assert service.next_delay(quiet) == 2.0


def test_new_server_is_picked_up_by_a_fast_poll(paths: dict[str, Path]) -> None:
    """poll interval 3 s, fast interval 0.25 s: a server that appears right after a change is
    in the file well before the next normal tick."""
    write_config(paths, poll_interval_seconds=3.0, fast_poll_interval_seconds=0.25)
    with Running(make_service(paths), watch=False):
        rollout = paths["out"] / "rollout.json"
        wait_for(lambda: len(targets_in(rollout)) == 2)
        time.sleep(0.3)
        paths["cluster"].write_bytes(orjson.dumps(cluster(server(0), server(1), server(2))))
        took = wait_for(lambda: len(targets_in(rollout)) == 3, timeout=5)
        assert took < 1.5, took


# -- IPv6 listen addresses -------------------------------------------------------------------------


def _ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize(
    "listen, host",
    [
        ("127.0.0.1:0", "127.0.0.1"),
        pytest.param(
            "[::1]:0",
            "[::1]",
            marks=pytest.mark.skipif(not _ipv6_available(), reason="no IPv6 loopback here"),
        ),
    ],
)
def test_metrics_listener_serves_ipv4_and_ipv6(
    paths: dict[str, Path], listen: str, host: str
) -> None:
    write_config(paths, metrics_listen=listen)
    with Running(make_service(paths)) as s:
        wait_for(lambda: s.metrics_port is not None)
        port = s.metrics_port
        assert port
        wait_for(lambda: healthz(port, host)[0] == 200)


@pytest.fixture(autouse=True)
def _capture_info(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.INFO, logger="fsd_daemon")
    yield


def test_a_refused_reload_closes_the_resolver_it_built(
    paths: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another Ray address and a listener that cannot bind: the reload is refused, the running
    source stays, and the resolver built for the new address is closed (a Ray bridge would
    otherwise keep its idle thread)."""
    import fsd_daemon.pipeline.poll as poll_module
    from fsd_daemon.pipeline.poll import ReloadRefused

    built: list[Any] = []

    class Closing(StaticCluster):
        closed = False

        def close(self) -> None:
            self.closed = True

    def components(config: Config) -> tuple[Any, Any]:
        made = Closing(str(paths["cluster"]))
        built.append(made)
        return made, made

    monkeypatch.setattr(poll_module, "default_components", components)
    service = make_service(paths)
    running = service.poll.source
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        other = paths["cluster"].with_name("other.json")
        other.write_bytes(paths["cluster"].read_bytes())
        new = load_config(
            paths["config"],
            environ={},
            overrides={
                "ray.address": f"file:{other}",
                "daemon.metrics_listen": f"127.0.0.1:{port}",
            },
        )
        with pytest.raises(ReloadRefused, match="metrics_listen"):
            service.apply_config(new)
    assert service.poll.source is running
    assert [c.closed for c in built] == [True]
    service.shutdown()
