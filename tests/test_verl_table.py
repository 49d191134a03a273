"""``fsd_daemon.recognition.verl`` is the one table of what verl creates, and everything reads it.

Two things are checked:

- round trip: every actor name the simulation gives (its servers through
  :func:`fsd_daemon.sim.rollout_server.actor_name`, its worker groups through the table's
  :func:`~fsd_daemon.recognition.verl.worker_group_prefix` /
  :func:`~fsd_daemon.recognition.verl.worker_name`, as
  ``fsd_daemon/sim/verl_modes.py`` builds them) is recognised by the table's patterns with the
  role, replica, teacher key and mode it was given; so is every name of every form in the table
  (upstream files cited per entry in ``fsd_daemon/recognition/verl.py``);
- one place: no module of ``fsd_daemon/`` other than ``verl.py`` spells a verl class name, a
  name-template prefix or a verl key in a string (docstrings and comments, which cite upstream,
  excepted).
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsd_daemon.discovery.base import ActorRecord
from fsd_daemon.gpu.ownership import NameMatcher, RoleMap
from fsd_daemon.recognition import verl
from fsd_daemon.recognition.recognise import Recogniser, ServerIdentity
from fsd_daemon.sim import rollout_server as sim
from fsd_daemon.sim import verl_modes

PACKAGE = Path(verl.__file__).parent
RECOGNISER = Recogniser(verl.DEFAULT_PATTERNS)
SIMULATED_SERVERS = (sim.vLLMHttpServer, sim.SGLangHttpServer, sim.AsyncvLLMServer)
TEACHER_KEY = "Qwen_Qwen3-8B"


def _record(class_name: str, name: str) -> ActorRecord:
    # A fresh actor id per name: the recogniser keeps its verdict per actor id.
    return ActorRecord(
        hashlib.sha1(f"{class_name}/{name}".encode()).hexdigest(), class_name, name, "", "", "", 0
    )


def _classify(class_name: str, name: str) -> ServerIdentity:
    verdict = RECOGNISER.classify(_record(class_name, name))
    assert isinstance(verdict, ServerIdentity), (class_name, name, verdict)
    return verdict


def _cases(form: verl.ServerForm) -> Iterator[tuple[str, int, int, str]]:
    """(role word, replica, node rank, teacher key) for every role a form's names may say."""
    for replica in (0, 3, 123456789):
        yield "", replica, 0, ""
        for role in form.name_roles:
            yield (
                role,
                replica,
                (2 if role == verl.DECODE else 0),
                (TEACHER_KEY if role == verl.ROLE_TEACHER else ""),
            )


def _check(form: verl.ServerForm, name: str, role: str, replica: int, node: int, key: str) -> None:
    identity = _classify(form.class_name, name)
    want_role = verl.ROLE_ROLLOUT if role in ("", verl.DECODE) else role
    assert identity.engine == form.engine, name
    assert identity.role == want_role, name
    assert identity.replica == str(replica), name
    assert identity.node_rank == node, name
    assert identity.disaggregation == (verl.DECODE if role == verl.DECODE else ""), name
    assert identity.teacher == key, name
    assert identity.metrics_path == form.pattern.metrics_path, name
    assert identity.has_metrics_route == form.pattern.has_metrics_route, name


@pytest.mark.parametrize("server_cls", SIMULATED_SERVERS, ids=lambda c: c.__name__)
def test_simulated_server_names_round_trip(server_cls: type) -> None:
    """The simulation's server classes are the table's forms, and the names it gives them
    are recognised with the role and replica they were given."""
    form = verl.SERVER_FORMS_BY_CLASS[server_cls.__name__]
    assert form.engine == server_cls.ENGINE  # type: ignore[attr-defined]
    assert form.pattern.has_metrics_route == server_cls.HAS_METRICS_ROUTE  # type: ignore[attr-defined]
    for role, replica, node, key in _cases(form):
        name = sim.actor_name(server_cls, replica, node, role, key)
        _check(form, name, role, replica, node, key)


@pytest.mark.parametrize("form", verl.SERVER_FORMS, ids=lambda f: f.class_name)
def test_every_server_form_round_trips(form: verl.ServerForm) -> None:
    for role, replica, node, key in _cases(form):
        _check(form, form.actor_name(replica, node, role, key), role, replica, node, key)
    # Node rank 1 of a multi-node replica serves no HTTP: not a target (its GPUs are still
    # the replica's: the GPU exporter reads names with name_groups).
    if "{node}" in form.name_template:
        name = form.actor_name(5, 1)
        assert RECOGNISER.classify(_record(form.class_name, name)) is None
        assert RECOGNISER.name_groups(form.class_name, name)["replica"] == "5"
    # And the GPU role table counts every form's GPUs as rollout.
    assert RoleMap(verl.DEFAULT_GPU_ROLES).for_class(form.class_name) == verl.ROLE_ROLLOUT


def test_a_role_a_form_never_names_is_refused() -> None:
    trtllm = verl.SERVER_FORMS_BY_CLASS["TRTLLMHttpServer"]
    with pytest.raises(ValueError, match="no role"):
        trtllm.actor_name(0, role=verl.DECODE)


@pytest.mark.parametrize("form", verl.WORKER_GROUP_FORMS, ids=lambda f: f.class_name)
@pytest.mark.parametrize("mode", [verl.MODE_COLOCATED, verl.MODE_STANDALONE])
@pytest.mark.parametrize("role", ["", verl.ROLE_REWARD, verl.ROLE_TEACHER])
def test_worker_group_names_round_trip(form: verl.WorkerGroupForm, mode: str, role: str) -> None:
    """A rollout replica's worker, named as the simulation names it (RayWorkerGroup's
    ``{prefix}{Class}_{pg}:{rank}``), reads as its replica, role, teacher key and mode."""
    key = TEACHER_KEY if role == verl.ROLE_TEACHER else ""
    prefix = verl.worker_group_prefix(mode, 7, role, key)
    name = verl.worker_name(prefix, form.class_name, 0, 3)
    facts = NameMatcher(verl.DEFAULT_PATTERNS).match(form.class_name, name)
    assert (facts.replica, facts.role, facts.teacher, facts.mode) == ("7", role, key, mode)
    # Before Ray lists the name: the same facts from WG_PREFIX in its start environment.
    assert NameMatcher(verl.DEFAULT_PATTERNS).match(form.class_name, "", prefix) == facts
    assert RoleMap(verl.DEFAULT_GPU_ROLES).for_class(form.class_name) == verl.ROLE_ROLLOUT


def test_simulated_worker_classes_are_the_tables() -> None:
    """The classes the simulation places carry the table's class names (Ray titles them
    ray::ClassName, which is what ownership reads)."""
    assert verl_modes.CheckpointEngineWorker.__name__ in verl.WORKER_GROUP_FORMS_BY_CLASS
    assert verl_modes.WorkerDict.__name__ == verl.HYBRID_TRAINER_CLASS
    roles = RoleMap(verl.DEFAULT_GPU_ROLES)
    assert roles.for_class(verl_modes.WorkerDict.__name__) == verl.ROLE_TRAIN
    for holder in verl.GPU_HOLDERS:
        assert roles.for_class(holder.class_name) == holder.role


def test_every_entry_cites_its_upstream_file_and_releases() -> None:
    entries: list[tuple[str, str, str]] = [
        *((f.class_name, f.source, f.releases) for f in verl.SERVER_FORMS),
        *((f.class_name, f.source, f.releases) for f in verl.WORKER_GROUP_FORMS),
        *((h.class_name, h.source, h.releases) for h in verl.GPU_HOLDERS),
    ]
    for class_name, source, releases in entries:
        assert re.search(r"[a-z_]+/", source), (class_name, source)
        assert re.search(r"[0-9]", releases), (class_name, releases)
    names = [e[0] for e in entries]
    assert len(names) == len(set(names)), "a class is in the table twice"


# --- One place ---------------------------------------------------------------------------------


def _spelled_facts() -> tuple[re.Pattern[str], list[str]]:
    classes = {
        *(f.class_name for f in verl.SERVER_FORMS),
        *(f.class_name for f in verl.WORKER_GROUP_FORMS),
        *(h.class_name for h in verl.GPU_HOLDERS),
        *verl.CPU_ACTORS,
        *(e.class_name for e in verl.METRICS_ENDPOINTS),
    }
    words = re.compile(
        r"(?<![A-Za-z0-9_])(?:" + "|".join(map(re.escape, sorted(classes))) + r")(?![A-Za-z0-9])"
    )
    pieces = [
        *(s.dotted for s in verl.METRICS_SWITCHES),
        verl.ROLLOUT_CONFIG_PATH,
        verl.RL_INSIGHT_ENV,
        verl.WORKER_GROUP_PREFIX_ENV,
        verl.TRTLLM_METRICS_PATH,
        # The literal head of every name template: "vllm_server_", "async_llm_server_", ...
        *(f.name_template.split("{", 1)[0] for f in verl.SERVER_FORMS),
    ]
    return words, pieces


def _strings(tree: ast.Module) -> Iterator[ast.Constant]:
    """Every string constant (f-string parts included) that is not a docstring."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            yield node


def spelled_outside_the_table(root: Path) -> list[str]:
    words, pieces = _spelled_facts()
    found = []
    for path in sorted(root.rglob("*.py")):
        if path == root / "verl.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in sorted(_strings(tree), key=lambda n: (n.lineno, n.col_offset)):
            text = str(node.value)
            hits = words.findall(text) + [p for p in pieces if p in text]
            if hits:
                found.append(f"{path.relative_to(root.parent)}:{node.lineno}: {sorted(hits)}")
    return found


def test_no_verl_fact_is_spelled_outside_the_table() -> None:
    assert spelled_outside_the_table(PACKAGE) == []


def test_the_walk_finds_what_it_looks_for(tmp_path: Path) -> None:
    """The check above cannot pass by finding nothing: a spelled class, key or name is found,
    a docstring or a comment is not."""
    package = tmp_path / "fsd_daemon"
    package.mkdir()
    (package / "verl.py").write_text('X = "vLLMHttpServer"\n')
    (package / "spelled.py").write_text(
        '"""Cites vLLMHttpServer (vllm_async_server.py)."""\n'
        "# CheckpointEngineWorker, in a comment\n"
        'A = "CheckpointEngineWorker"\n'
        'B = f"vllm_server_{1}_0"\n'
        'C = "actor_rollout_ref.rollout.disable_log_stats=False"\n'
        'D = "CheckpointEngineWorkers hold a context"\n'
    )
    found = spelled_outside_the_table(package)
    assert [line.split(":")[1] for line in found] == ["3", "4", "5"], found


def test_every_pattern_group_is_one_the_readers_know() -> None:
    """The groups the table's patterns capture are the ones recognise.py and gpu/ownership.py
    read (verl.GROUP_*); the role and replica groups are named by the labels they fill, so a
    label renamed in the names module without its group fails here, not in production."""
    regexes = [p.name for p in verl.DEFAULT_PATTERNS]
    regexes += [verl.ROLLOUT_WORKER_GROUP_PREFIX]
    assert regexes
    seen: set[str] = set()
    for regex in regexes:
        groups = set(re.compile(regex).groupindex)
        assert groups <= verl.PATTERN_GROUPS, (regex, groups - verl.PATTERN_GROUPS)
        seen |= groups
    assert {verl.GROUP_ROLE, verl.GROUP_REPLICA, verl.GROUP_NODE, verl.GROUP_SUFFIX} <= seen
    assert verl.GROUP_MODE in seen
