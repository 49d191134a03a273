"""Drift check: what fsd_daemon depends on, compared with released verl, vLLM, SGLang and Ray.

Run by hand when a new release comes out (not in CI: it downloads wheels)::

    python bench/drift_check.py                       # the newest releases on PyPI
    python bench/drift_check.py --sglang 0.5.10 --vllm 0.33.0 --verl 0.9.1 --ray 2.44.1
    python bench/drift_check.py --wheels DIR          # wheels already downloaded into DIR

Each wheel is fetched with ``pip download --no-deps NAME[==VERSION]`` and read as a zip: its
sources are parsed (``ast``), never imported or installed. Checked, each against the project's
own table of it:

- vLLM and SGLang (:mod:`fsd_daemon.recognition.engines`): every series the table lists for the
  release (or,
  for a release it does not know, for its newest shape): defined, of the same type, with the
  same label names (the collector's base labels plus the family's own);
- verl (:mod:`fsd_daemon.recognition.verl`, the table of what verl creates): every ``*HttpServer*``
  class, every actor name verl's rollout code builds (rendered with sample values)
  recognised by the default patterns;
  every Ray actor class verl creates for GPU work known to the GPU role table; the rollout
  config keys that switch metrics on, and RL-Insight's switch;
- Ray: the state API fields the daemon reads (``ray/util/state/common.py``) and what Ray's own
  service-discovery file lists (``PrometheusServiceDiscoveryWriter``).

Prints one line per check (``ok`` or ``DIFF``), exits 0 when nothing differs, 1 when something
does, 2 when a wheel cannot be had. docs/upstream.md records the last run.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from fsd_daemon.discovery.base import ActorRecord
from fsd_daemon.mixin import names
from fsd_daemon.recognition import engines, verl
from fsd_daemon.recognition.recognise import Recogniser, ServerIdentity
from fsd_daemon.recognition.verl import DEFAULT_GPU_ROLES, DEFAULT_PATTERNS

PACKAGES = ("verl", names.ENGINE_VLLM, names.ENGINE_SGLANG, "ray")
# The server class an actor name of no other form is checked as.
_VLLM_SERVER = next(f for f in verl.SERVER_FORMS if f.engine == names.ENGINE_VLLM)


# --- Reading a release -------------------------------------------------------------------------


class Tree:
    """The Python sources (and YAML) of one release, from a wheel or a directory."""

    def __init__(self, files: Mapping[str, str], name: str) -> None:
        self.files = dict(files)
        self.name = name

    @classmethod
    def from_wheel(cls, path: Path) -> Tree:
        with zipfile.ZipFile(path) as wheel:
            files = {
                info.filename: wheel.read(info).decode("utf-8", "replace")
                for info in wheel.infolist()
                if info.filename.endswith((".py", ".yaml"))
            }
        return cls(files, path.name)

    @classmethod
    def from_dir(cls, root: Path) -> Tree:
        files = {
            p.relative_to(root).as_posix(): p.read_text(encoding="utf-8", errors="replace")
            for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in (".py", ".yaml")
        }
        return cls(files, str(root))

    def under(self, *folders: str) -> Iterator[tuple[str, str]]:
        for path, text in self.files.items():
            if any(path.startswith(folder) for folder in folders):
                yield path, text

    def parsed(self, *folders: str) -> Iterator[tuple[str, ast.Module]]:
        for path, text in self.under(*folders):
            if path.endswith(".py"):
                try:
                    yield path, ast.parse(text)
                except SyntaxError:
                    continue


@dataclass(frozen=True)
class Finding:
    component: str
    item: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'DIFF'} {self.component}: {self.item}: {self.detail}"


def _strings(node: ast.AST) -> list[str]:
    return [
        n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]


# --- Engines -----------------------------------------------------------------------------------

_KIND_OF_CALLEE = (
    ("counter", engines.COUNTER),
    ("gauge", engines.GAUGE),
    ("histogram", engines.HISTOGRAM),
)


@dataclass(frozen=True)
class Definition:
    name: str  # as exposed: counters with _total
    kind: str
    # Label names written as string literals in labelnames, and whether a variable (the
    # collector's base labels) is part of it too.
    literal_labels: tuple[str, ...]
    uses_base: bool


def _kind(call: ast.Call) -> str | None:
    callee = ast.unparse(call.func).lower()
    for word, kind in _KIND_OF_CALLEE:
        if word in callee:
            return kind
    return None


def _assignments(module: ast.Module) -> dict[str, ast.expr]:
    """What each plain name in ``module`` is assigned (the last assignment wins)."""
    return {
        t.id: node.value
        for node in ast.walk(module)
        if isinstance(node, ast.Assign)
        for t in node.targets
        if isinstance(t, ast.Name)
    }


def metric_definitions(tree: Tree, prefix: str, folders: Sequence[str]) -> dict[str, Definition]:
    """Every ``Counter/Gauge/Histogram(name="<prefix>...", labelnames=...)`` call under
    ``folders``; names defined indirectly (a tuple of names looped over) get their type from
    the call that consumes them and no label check."""
    found: dict[str, Definition] = {}
    for _, module in tree.parsed(*folders):
        # labelnames=pos_labelnames: follow a plain name to what it was assigned (one level).
        assigned = _assignments(module)
        for node in ast.walk(module):
            if not isinstance(node, ast.Call):
                continue
            kind = _kind(node)
            keywords = {k.arg: k.value for k in node.keywords if k.arg}
            name_node = keywords.get("name")
            if kind is None or not (
                isinstance(name_node, ast.Constant) and str(name_node.value).startswith(prefix)
            ):
                continue
            name = str(name_node.value)
            if kind == engines.COUNTER and not name.endswith("_total"):
                name += "_total"
            labels = keywords.get("labelnames")
            if isinstance(labels, ast.Name) and labels.id in assigned:
                labels = assigned[labels.id]
            literal = tuple(_strings(labels)) if labels is not None else ()
            uses_base = labels is not None and any(
                isinstance(n, ast.Name | ast.Attribute) for n in ast.walk(labels)
            )
            found[name] = Definition(name, kind, literal, uses_base)
    return found


def _mentioned(tree: Tree, name: str, folders: Sequence[str]) -> bool:
    bare = name.removesuffix("_total")
    return any(f'"{bare}"' in text or f'"{name}"' in text for _, text in tree.under(*folders))


def base_labels(tree: Tree, engine: engines.Engine, folders: Sequence[str]) -> dict[str, set[str]]:
    """The base label names of each side, as the release's source writes them: vLLM's
    ``labelnames = [...]``; SGLang's scheduler labels dict (the one with tp_rank) and its
    tokenizer labels dict (in ``tokenizer_metric_labels`` or, before 0.5.23,
    ``init_metric_collector_watchdog``)."""
    out: dict[str, set[str]] = {}
    for _, module in tree.parsed(*folders):
        for func in ast.walk(module):
            if not isinstance(func, ast.FunctionDef):
                continue
            for node in ast.walk(func):
                if (
                    engine is engines.VLLM
                    and isinstance(node, ast.Assign)
                    and any(ast.unparse(t) == "labelnames" for t in node.targets)
                    and isinstance(node.value, ast.List)
                ):
                    out.setdefault(engines.ENGINE_SIDE, set(_strings(node.value)))
                if engine is engines.SGLANG and isinstance(node, ast.Dict):
                    keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
                    if names.MODEL_NAME not in keys:
                        continue
                    if names.SGLANG_TP_RANK in keys:
                        out.setdefault(engines.SCHEDULER_SIDE, {str(k) for k in keys})
                    elif func.name in ("tokenizer_metric_labels", "init_metric_collector_watchdog"):
                        out.setdefault(engines.TOKENIZER_SIDE, {str(k) for k in keys})
    return out


def check_engine(tree: Tree, engine: engines.Engine, version: str) -> list[Finding]:
    """The table's series of ``version`` (its newest shape for an unknown release) against the
    release's source."""
    component = f"{engine.label} {version}"
    try:
        shape = engine.shape(version)
        against = f"table shape of {version}"
    except ValueError:
        shape = engine.newest
        against = f"not in the table: compared with its newest shape ({shape.versions[-1]})"
    findings = [Finding(component, "table", True, against)]
    folders = sorted(
        {str(PurePosixPath(s).parent) + "/" for s in shape.sources} | set(shape.sources)
    )
    defined = metric_definitions(tree, engine.prefix, folders)
    bases = base_labels(tree, engine, folders)
    for side, labels in shape.base_labels.items():
        found = bases.get(side)
        ok = found == set(labels)
        detail = (
            "as in the table" if ok else f"table {sorted(labels)}, release {sorted(found or [])}"
        )
        findings.append(Finding(component, f"{side} base labels", ok, detail))
    for series in shape.series:
        # A counter turned gauge loses its _total: look the bare name up as well.
        definition = defined.get(series.name) or defined.get(series.name.removesuffix("_total"))
        if definition is None:
            if _mentioned(tree, series.name, folders):
                findings.append(
                    Finding(component, series.name, True, "defined indirectly (labels not checked)")
                )
            else:
                findings.append(Finding(component, series.name, False, "not defined any more"))
            continue
        problems = []
        if definition.kind != series.kind:
            problems.append(f"type {definition.kind}, table {series.kind}")
        base = bases.get(series.side, set()) if definition.uses_base else set()
        exported = base | set(definition.literal_labels)
        expected = set(shape.labels_of(series))
        if exported != expected:
            problems.append(f"labels {sorted(exported)}, table {sorted(expected)}")
        findings.append(
            Finding(component, series.name, not problems, "; ".join(problems) or "as in the table")
        )
    return findings


# --- verl --------------------------------------------------------------------------------------

_VERL_ROLLOUT = ("verl/workers/rollout/", "verl/experimental/")
_SERVER_CLASS = re.compile(r"\w*HttpServer\w*\Z")
# Sample values for the f-string parts of an actor name, by the last word of the expression.
_SAMPLES = {
    "replica_rank": "3",
    "node_rank": "0",  # only node rank 0 serves HTTP: the name the daemon must recognise
    "i": "2",
    "_pd_server_index": "2",
    "name_suffix": "_Qwen_Qwen3-8B",
}


def _render(joined: ast.JoinedStr, prefix: str) -> str | None:
    parts = []
    for value in joined.values:
        if isinstance(value, ast.Constant):
            parts.append(str(value.value))
            continue
        assert isinstance(value, ast.FormattedValue)
        word = ast.unparse(value.value).split(".")[-1].removesuffix("()")
        if "prefix" in word:
            parts.append(prefix)
        elif word in _SAMPLES:
            parts.append(_SAMPLES[word])
        else:
            return None
    return "".join(parts)


def gpu_worker_classes(tree: Tree, defined: set[str]) -> set[str]:
    """Ray actor classes verl creates for GPU work: every class a worker group is built from
    (``RayClassWithInitArgs(cls=...)``, following ``X = ray.remote(Cls)`` one level; verl
    0.6-0.7.0's ``vLLMAsyncRollout`` / ``ServerAdapter``, >= 0.7.1's ``CheckpointEngineWorker``),
    and every class ending in ``Worker`` that verl wraps in ``ray.remote`` (the trainer's, set
    through its role-to-worker mapping)."""
    found: set[str] = set()

    def remote_class(node: ast.AST, assigned: Mapping[str, ast.AST]) -> str | None:
        if isinstance(node, ast.Name) and node.id in assigned:
            node = assigned[node.id]
        if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("ray.remote"):
            node = node.args[0] if node.args else node
        word = ast.unparse(node).split(".")[-1]
        return word if word in defined else None

    for _, module in tree.parsed("verl/"):
        assigned = _assignments(module)
        for node in ast.walk(module):
            if not isinstance(node, ast.Call):
                continue
            callee = ast.unparse(node.func)
            if callee.endswith("RayClassWithInitArgs"):
                for arg in [*node.args[:1], *(k.value for k in node.keywords if k.arg == "cls")]:
                    cls = remote_class(arg, assigned)
                    if cls:
                        found.add(cls)
            elif callee.endswith("ray.remote") and node.args:
                word = ast.unparse(node.args[0]).split(".")[-1]
                if word.endswith("Worker") and word in defined:
                    found.add(word)
    return found


def _actor_name_templates(module: ast.Module) -> Iterator[ast.JoinedStr]:
    """The f-strings that name a server actor: assigned to ``name`` / ``actor_name`` (as a
    variable or a keyword), or spelling ``server_`` anywhere (``ray.get_actor(f"...")``)."""
    for node in ast.walk(module):
        value: ast.AST | None = None
        if (
            isinstance(node, ast.Assign)
            and any(
                isinstance(t, ast.Name) and t.id in ("name", "actor_name") for t in node.targets
            )
        ) or (isinstance(node, ast.keyword) and node.arg == "actor_name"):
            value = node.value
        elif isinstance(node, ast.JoinedStr):
            text = "".join(str(v.value) for v in node.values if isinstance(v, ast.Constant))
            if "server_" in text and "/" not in text and " " not in text:
                value = node
        if isinstance(value, ast.JoinedStr):
            yield value


def _server_prefix(module: ast.Module) -> str:
    """What the file's ``_get_server_name_prefix`` returns (verl's vLLM default: "vllm_")."""
    for func in ast.walk(module):
        if isinstance(func, ast.FunctionDef) and func.name == "_get_server_name_prefix":
            for node in ast.walk(func):
                if isinstance(node, ast.Return) and isinstance(node.value, ast.Constant):
                    return str(node.value.value)
    return "vllm_"


def _server_class_named(name: str) -> str:
    """The table's server class whose names start as ``name`` does (verl's vLLM server for a
    prefix of its own: vLLMRollout names servers by its rollout name)."""
    for form in verl.SERVER_FORMS:
        if name.startswith(form.name_template.split("{", 1)[0]):
            return form.class_name
    return _VLLM_SERVER.class_name


def check_verl(tree: Tree, version: str) -> list[Finding]:
    component = f"verl {version}"
    findings: list[Finding] = []
    recogniser = Recogniser(DEFAULT_PATTERNS)
    classes: dict[str, str] = {}
    for path, module in tree.parsed("verl/"):
        for node in ast.walk(module):
            if isinstance(node, ast.ClassDef):
                classes.setdefault(node.name, path)
    servers = sorted(c for c in classes if _SERVER_CLASS.match(c) and "Adapter" not in c)
    family = [re.compile(p.class_name, re.ASCII) for p in DEFAULT_PATTERNS]
    for cls in servers:
        ok = any(r.fullmatch(cls) for r in family)
        findings.append(
            Finding(component, f"server class {cls}", ok, classes[cls] if ok else "not recognised")
        )
    seen: set[str] = set()
    for path, module in tree.parsed(*_VERL_ROLLOUT):
        prefix = _server_prefix(module)
        for node in _actor_name_templates(module):
            name = _render(node, prefix)
            template = ast.unparse(node)
            if name is None or template in seen:
                continue
            seen.add(template)
            server_class = _server_class_named(name)
            verdict = recogniser.classify(
                ActorRecord(f"drift-{len(seen)}", server_class, name, "", "", "", 0)
            )
            ok = isinstance(verdict, ServerIdentity)
            detail = (
                f"{name} -> role {verdict.role}, replica {verdict.replica}"
                if isinstance(verdict, ServerIdentity)
                else f"{name} not recognised"
            )
            findings.append(Finding(component, f"actor name {template} ({path})", ok, detail))
    for worker in sorted(gpu_worker_classes(tree, set(classes))):
        role = DEFAULT_GPU_ROLES.get(worker)
        if role is None and worker in verl.CPU_ACTORS:
            findings.append(
                Finding(component, f"worker class {worker}", True, verl.CPU_ACTORS[worker])
            )
            continue
        findings.append(
            Finding(
                component,
                f"GPU worker class {worker}",
                role is not None,
                f"role {role}"
                if role
                else f"not in the GPU role table: counted as role other ({classes[worker]})",
            )
        )
    findings += _verl_metrics_switches(tree, component)
    return findings


def _verl_metrics_switches(tree: Tree, component: str) -> list[Finding]:
    path = verl.ROLLOUT_CONFIG_FILE
    text = tree.files.get(path)
    if text is None:
        return [Finding(component, path, False, "missing")]
    config = yaml.safe_load(text) or {}

    def default(mapping: Mapping[str, object], key: str) -> str:
        return f"default {mapping[key]!r}" if key in mapping else "absent"

    findings = []
    for switch in verl.METRICS_SWITCHES:
        *parents, key = switch.key
        section: Mapping[str, object] = config
        for parent in parents:
            inner = section.get(parent)
            section = inner if isinstance(inner, Mapping) else {}
        findings.append(
            Finding(component, f"rollout.{switch.dotted}", key in section, default(section, key))
        )
    # RL-Insight (verl >= 0.9) also turns SGLang's metrics on; doctor names its switch.
    insight = any(f'"{verl.RL_INSIGHT_ENV}"' in t for _, t in tree.under("verl/"))
    findings.append(
        Finding(
            component,
            verl.RL_INSIGHT_ENV,
            insight,
            "read" if insight else "absent: doctor's RL-Insight hint does not apply",
        )
    )
    return findings


# --- Ray ---------------------------------------------------------------------------------------

# The state API fields the daemon reads (fsd_daemon/discovery/ray_state.py _actor, _node, and
# the state=ALIVE filter).
RAY_ACTOR_FIELDS = (
    "actor_id",
    "class_name",
    "state",
    "job_id",
    "name",
    "node_id",
    "pid",
    "ray_namespace",
)
RAY_NODE_FIELDS = ("node_id", "node_ip", "node_name", "is_head_node", "state")
# What Ray's service-discovery file lists (ray/_private/metrics_agent.py
# PrometheusServiceDiscoveryWriter.get_file_discovery_content): each alive node's metrics export
# port and the two addresses kept in GCS's internal KV, in one group labelled job="ray".
RAY_SD_NODE_KEYS = ("NodeManagerAddress", "MetricsExportPort")
RAY_SD_KV_KEYS = ("AutoscalerMetricsAddress", "DashboardMetricsAddress")
RAY_SD_FILE = "prom_metrics_service_discovery.json"


def _class_fields(module: ast.Module, name: str) -> set[str]:
    for node in ast.walk(module):
        if isinstance(node, ast.ClassDef) and node.name == name:
            return {
                s.target.id
                for s in node.body
                if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
            }
    return set()


def check_ray(tree: Tree, version: str) -> list[Finding]:
    component = f"ray {version}"
    findings: list[Finding] = []
    common = dict(tree.parsed("ray/util/state/common.py")).get("ray/util/state/common.py")
    for cls, wanted in (("ActorState", RAY_ACTOR_FIELDS), ("NodeState", RAY_NODE_FIELDS)):
        fields = _class_fields(common, cls) if common else set()
        missing = sorted(set(wanted) - fields)
        findings.append(
            Finding(
                component,
                f"state API {cls}",
                not missing,
                f"missing {missing}" if missing else "fields present",
            )
        )
    constants = tree.files.get("ray/_private/ray_constants.py", "")
    findings.append(
        Finding(
            component,
            "service-discovery file name",
            f'"{RAY_SD_FILE}"' in constants,
            RAY_SD_FILE
            if f'"{RAY_SD_FILE}"' in constants
            else "PROMETHEUS_SERVICE_DISCOVERY_FILE changed",
        )
    )
    agent = dict(tree.parsed("ray/_private/metrics_agent.py")).get("ray/_private/metrics_agent.py")
    content = None
    for node in ast.walk(agent) if agent else ():
        if isinstance(node, ast.FunctionDef) and node.name == "get_file_discovery_content":
            content = node
    if content is None:
        return [
            *findings,
            Finding(component, "service-discovery content", False, "writer not found"),
        ]
    strings = set(_strings(content))
    kv_keys = {
        n.value.decode()
        for n in ast.walk(content)
        if isinstance(n, ast.Constant) and isinstance(n.value, bytes)
    }
    findings.append(
        Finding(
            component,
            "service-discovery KV addresses",
            kv_keys == set(RAY_SD_KV_KEYS),
            f"lists node metrics ports and {sorted(kv_keys)}",
        )
    )
    node_keys = set(RAY_SD_NODE_KEYS) <= strings
    findings.append(
        Finding(
            component, "service-discovery node fields", node_keys, f"{sorted(RAY_SD_NODE_KEYS)}"
        )
    )
    labelled = {"labels", "job", "ray", "targets"} <= strings
    findings.append(Finding(component, "service-discovery group", labelled, 'one group, job="ray"'))
    writer = next(
        (
            n
            for n in ast.walk(agent)  # type: ignore[arg-type]
            if isinstance(n, ast.ClassDef) and n.name == "PrometheusServiceDiscoveryWriter"
        ),
        None,
    )
    in_session = writer is not None and "session_dir" in ast.unparse(writer)
    findings.append(
        Finding(
            component,
            "service-discovery file place",
            True,
            "session directory, legacy symlink in the temp root" if in_session else "temp root",
        )
    )
    return findings


# --- Fetching and the command ------------------------------------------------------------------


def fetch(package: str, version: str, into: Path) -> Path:
    """``pip download --no-deps`` of one release (the newest when ``version`` is empty)."""
    spec = f"{package}=={version}" if version else package
    folder = into / (spec.replace("=", "_"))
    folder.mkdir(parents=True, exist_ok=True)
    wheels = sorted(folder.glob(f"{package}-*.whl"))
    if not wheels:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                "-d",
                str(folder),
                spec,
            ],
            check=True,
            timeout=1800,
        )
        wheels = sorted(folder.glob(f"{package}-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip download {spec} brought no wheel")
    return wheels[-1]


def wheel_version(wheel: Path) -> str:
    return wheel.name.split("-")[1]


def check(package: str, tree: Tree, version: str) -> list[Finding]:
    if package == "verl":
        return check_verl(tree, version)
    if package == "ray":
        return check_ray(tree, version)
    return check_engine(tree, engines.BY_LABEL[package], version)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python bench/drift_check.py", description=__doc__.split("\n")[0]
    )
    for package in PACKAGES:
        parser.add_argument(f"--{package}", default="", metavar="VERSION", help="default: newest")
    parser.add_argument("--wheels", type=Path, help="download into / reuse wheels from DIR")
    parser.add_argument("--only", choices=PACKAGES, action="append", help="check only these")
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="read NAME from a source tree instead of a wheel (e.g. verl=checkout of verl main)",
    )
    args = parser.parse_args(argv)
    trees: dict[str, Path] = {}
    for item in args.tree:
        name, _, folder = item.partition("=")
        if name not in PACKAGES or not Path(folder).is_dir():
            print(f"drift_check: --tree wants NAME=DIR with NAME one of {PACKAGES}: {item!r}")
            return 2
        trees[name] = Path(folder)
    differences = 0
    with tempfile.TemporaryDirectory(prefix="fsd-drift-") as scratch:
        cache = args.wheels or Path(scratch)
        for package in args.only or PACKAGES:
            if package in trees:
                version = vars(args)[package] or "tree"
                print(f"# {package} {version} ({trees[package]})")
                for finding in check(package, Tree.from_dir(trees[package]), version):
                    print(finding.line())
                    differences += not finding.ok
                continue
            try:
                wheel = fetch(package, vars(args)[package], cache)
            except (OSError, subprocess.SubprocessError) as exc:
                print(f"drift_check: cannot get {package}: {exc}", file=sys.stderr)
                return 2
            print(f"# {package} {wheel_version(wheel)} ({wheel.name})")
            for finding in check(package, Tree.from_wheel(wheel), wheel_version(wheel)):
                print(finding.line())
                differences += not finding.ok
    print(f"# {differences} difference(s)")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
