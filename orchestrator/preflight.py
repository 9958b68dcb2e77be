"""Preflight: before the first trial, every node checks that it sees what the trials need.

One tiny Ray task per alive node (pinned with `NodeAffinitySchedulingStrategy`, no CPUs, so it
runs even on a busy node) checks the config's data paths and weights files, a sample of the
case table's images and the store root, and compares what it reads with what the driver reads
(size and a checksum of the first and last MiB): a node that sees another copy of the data, or
no data at all, stops the sweep with exit 2 naming the node, the path and what to do. Nothing is
run or stored before it passes.

Demo data on a cluster: a node that lacks the inputs runs the task's own `check_data` there,
which synthesises demo data deterministically (same config, same bytes), one node at a time;
the node's copy must then match the driver's checksums. Real data is never synthesised, so a
node without it fails with the advice to put the data on shared storage.

On a one-node cluster that is the driver's own node there is nothing to compare: no task runs.
`MEDSWEEP_PREFLIGHT=0` skips the check; `MEDSWEEP_PREFLIGHT_TIMEOUT_S` (default 300) bounds the
wait for a node to answer (a first task on a node may unpack the job's working_dir).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from orchestrator.errors import UserError

if TYPE_CHECKING:
    from orchestrator.config import Config

CHUNK = 1 << 20  # fingerprint: size + sha256 of the first and last MiB
IMAGE_SAMPLE = 8  # case-table files checked per node
DIR_SAMPLE = 4  # files checked inside each configured folder
DIR_SCAN_LIMIT = 2000  # folder entries looked at to find them
MARKER_PREFIX = ".medsweep-preflight-"
STORE_FIELD = "store.root"

Kind = Literal["file", "dir"]


@dataclass(frozen=True)
class Target:
    """A path every node must see, and what the driver saw there."""

    field: str  # the config field it comes from, or a description of the sample
    path: str
    kind: Kind
    fingerprint: str = ""  # files only


@dataclass(frozen=True)
class Probe:
    """What one node checks (picklable: it travels to every node)."""

    targets: tuple[Target, ...]
    store_root: str
    marker: str  # file name of the driver's marker in the store root
    token: str  # its content
    config: dict[str, Any] = field(default_factory=dict)  # for synthesising demo data
    source: str = "<config>"


@dataclass(frozen=True)
class Problem:
    field: str
    path: str
    what: Literal["missing", "unreadable", "differs", "not shared", "not writable", "no answer"]

    def render(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        if self.what == "missing":
            return f"cannot see {self.path}{where}"
        if self.what == "unreadable":
            return f"cannot read {self.path}{where}"
        if self.what == "differs":
            return f"sees another file at {self.path} than the driver{where}"
        if self.what == "no answer":
            return self.path  # what went wrong, e.g. "gave no answer within 300 s"
        if self.what == "not shared":
            return f"does not see the driver's store folder {self.path}{where}: another disk"
        return f"cannot write to the store folder {self.path}{where}"


@dataclass(frozen=True)
class NodeReport:
    node_id: str
    problems: tuple[Problem, ...]
    note: str = ""  # e.g. demo data synthesised on this node


# --- what a node does -------------------------------------------------------------------------
def fingerprint(path: str | Path) -> str:
    """Size plus a sha256 of the first and last MiB: cheap enough for weights files."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        digest.update(str(size).encode())
        digest.update(fh.read(CHUNK))
        if size > 2 * CHUNK:
            fh.seek(size - CHUNK)
            digest.update(fh.read(CHUNK))
    return digest.hexdigest()


def check_node(probe: Probe, node_id: str = "") -> NodeReport:
    """The checks of one node, run where it runs (pure Python, no Ray needed)."""
    problems = [p for t in probe.targets if (p := _check_target(t)) is not None]
    problems += _check_store(probe, node_id)
    return NodeReport(node_id, tuple(problems))


def _check_target(target: Target) -> Problem | None:
    path = Path(target.path)
    exists = path.is_dir() if target.kind == "dir" else path.is_file()
    if not exists:
        return Problem(target.field, target.path, "missing")
    if target.kind == "dir":
        return None if os.access(path, os.R_OK | os.X_OK) else _unreadable(target)
    try:
        mine = fingerprint(path)
    except OSError:
        return _unreadable(target)
    return None if mine == target.fingerprint else Problem(target.field, target.path, "differs")


def _unreadable(target: Target) -> Problem:
    return Problem(target.field, target.path, "unreadable")


def _check_store(probe: Probe, node_id: str) -> list[Problem]:
    root = Path(probe.store_root)
    try:
        seen = (root / probe.marker).read_text()
    except OSError:
        seen = None
    if seen != probe.token:
        return [Problem(STORE_FIELD, probe.store_root, "not shared")]
    scratch = root / f"{probe.marker}.{node_id or socket.gethostname()}.{os.getpid()}"
    try:
        scratch.write_text(node_id)
        scratch.unlink()
    except OSError:
        return [Problem(STORE_FIELD, probe.store_root, "not writable")]
    return []


def synthesise_and_check(probe: Probe, node_id: str = "") -> NodeReport:
    """Let the task's `check_data` write its demo data on this node, then check again."""
    from orchestrator.config import from_dict
    from orchestrator.registry import get_task

    note = ""
    try:
        config = from_dict(probe.config, source=probe.source, check_sweep=False)
        task = get_task(config.experiment.task)(config.task)
        task.check_data()
        note = "; ".join(task.notes)
    except UserError:
        pass  # the task cannot make the data here: report what is missing
    report = check_node(probe, node_id)
    return NodeReport(node_id, report.problems, note)


def _on_node(synthesise: bool, probe: Probe) -> NodeReport:
    """Ray task body: identify this node, then check (and possibly synthesise)."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    return synthesise_and_check(probe, node_id) if synthesise else check_node(probe, node_id)


# --- what the driver does ---------------------------------------------------------------------
def preflight(config: Config, task: Any, timeout_s: float | None = None) -> list[str]:
    """Check every alive node; raise UserError (exit 2) naming node, path and remedy.

    Returns notes for the user (e.g. demo data synthesised on a node).
    """
    import ray

    if os.environ.get("MEDSWEEP_PREFLIGHT", "1") == "0":
        return []
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if _only_the_driver(nodes):
        return []
    timeout = timeout_s or float(os.environ.get("MEDSWEEP_PREFLIGHT_TIMEOUT_S", "300"))
    probe = make_probe(config, task)
    root = Path(probe.store_root)
    created = _make_store_root(root, config.source)
    marker = root / probe.marker
    try:
        marker.write_text(probe.token)
        reports = _run_everywhere(nodes, probe, timeout)
    finally:
        marker.unlink(missing_ok=True)
        if created:  # a refused sweep leaves the store as it was
            with contextlib.suppress(OSError):
                root.rmdir()
    bad = [r for r in reports.values() if r.problems]
    if bad:
        raise _failure(config, nodes, bad, len(nodes))
    return [f"node {_short(r.node_id)}: {r.note}" for r in reports.values() if r.note]


def _make_store_root(root: Path, source: str) -> bool:
    """Create the store folder if needed (the nodes look for a marker in it); True if created."""
    if root.is_dir():
        return False
    try:
        root.mkdir(parents=True)
    except OSError as err:
        raise UserError(
            f"cannot create the store folder {root}: {err.strerror}",
            source=source,
            where=f"field {STORE_FIELD}",
        ) from None
    return True


def _only_the_driver(nodes: list[dict[str, Any]]) -> bool:
    """A one-node cluster on the driver's own node: nothing to compare, no task to run."""
    import ray

    return len(nodes) == 1 and nodes[0]["NodeID"] == ray.get_runtime_context().get_node_id()


def make_probe(config: Config, task: Any) -> Probe:
    """The driver's view: every configured path with its fingerprint, a sample of the case
    table's files, and a fresh marker name and token for the store root."""
    from orchestrator.paths import path_values
    from orchestrator.privacy import redact_tree

    store_root = Path(config.experiment.store.root)
    seen: set[str] = set()
    targets: list[Target] = []
    for name, path in [*path_values(config), *_case_sample(task)]:
        for target in _targets(name, path):
            if target.path not in seen:
                seen.add(target.path)
                targets.append(target)
    return Probe(
        targets=tuple(targets),
        store_root=str(store_root),
        marker=MARKER_PREFIX + secrets.token_hex(8),
        token=secrets.token_hex(16),
        config=redact_tree(config.to_dict()),
        source=config.source,
    )


def _targets(name: str, path: str) -> Iterator[Target]:
    """A configured path (if the driver sees it) and, for a folder, a few files inside it."""
    p = Path(path)
    if p.is_file():
        yield Target(name, path, "file", fingerprint(p))
    elif p.is_dir():
        yield Target(name, path, "dir")
        for inner in _some_files(p, DIR_SAMPLE):
            yield Target(f"a file in {name}", str(inner), "file", fingerprint(inner))


def _some_files(folder: Path, n: int) -> list[Path]:
    """Up to `n` files under `folder` (breadth-first, sorted, bounded)."""
    found: list[Path] = []
    queue, looked = [folder], 0
    while queue and len(found) < n and looked < DIR_SCAN_LIMIT:
        try:
            entries = sorted(os.scandir(queue.pop(0)), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            looked += 1
            if entry.name.startswith("."):
                continue
            if entry.is_file() and len(found) < n:
                found.append(Path(entry.path))
            elif entry.is_dir():
                queue.append(Path(entry.path))
    return found


def _case_sample(task: Any) -> list[tuple[str, str]]:
    """A few files named by the task's case table (images, masks), evenly spaced."""
    from orchestrator.privacy import PATH_COLUMNS

    try:
        cases = task.cases()
        root = task.data_root()
    except (NotImplementedError, UserError):
        return []
    if cases is None or len(cases) == 0:
        return []
    step = max(1, len(cases) // IMAGE_SAMPLE)
    rows = cases.iloc[::step].head(IMAGE_SAMPLE)
    out = []
    for column in [c for c in PATH_COLUMNS if c in cases.columns]:
        for value in rows[column]:
            if not isinstance(value, str):
                continue
            path = Path(value) if os.path.isabs(value) or root is None else Path(root) / value
            if path.is_file():
                out.append((f"a case file (column {column})", str(path)))
    return out


def _run_everywhere(
    nodes: list[dict[str, Any]], probe: Probe, timeout: float
) -> dict[str, NodeReport]:
    """Check all nodes at once, then synthesise demo data one node at a time where needed."""
    reports = _ask(nodes, probe, timeout, synthesise=False)
    for node in nodes:
        report = reports[node["NodeID"]]
        if any(p.what == "missing" for p in report.problems) and probe.config:
            reports.update(_ask([node], probe, timeout, synthesise=True))
    return reports


def _ask(
    nodes: list[dict[str, Any]], probe: Probe, timeout: float, *, synthesise: bool
) -> dict[str, NodeReport]:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    remote = ray.remote(num_cpus=0, max_retries=0)(_on_node)
    refs = {
        remote.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
            name="medsweep-preflight",
        ).remote(synthesise, probe): node
        for node in nodes
    }
    done, pending = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
    for ref in pending:
        ray.cancel(ref, force=True)
    out: dict[str, NodeReport] = {}
    for ref in refs:
        node_id = refs[ref]["NodeID"]
        if ref in done:
            try:
                out[node_id] = ray.get(ref)
                continue
            except Exception as err:  # the task itself failed on that node (import, crash)
                what = f"could not run the check ({type(err).__name__}: {err})".splitlines()[0]
        else:
            what = f"gave no answer within {timeout:g} s (MEDSWEEP_PREFLIGHT_TIMEOUT_S)"
        out[node_id] = NodeReport(node_id, (Problem("", what, "no answer"),))
    return out


def _short(node_id: str) -> str:
    return node_id[:12]


def _describe(node: dict[str, Any]) -> str:
    ip = node.get("NodeManagerAddress", "?")
    host = node.get("NodeManagerHostname", "")
    return f"node {_short(node['NodeID'])} ({ip}{', ' + host if host and host != ip else ''})"


def _failure(
    config: Config, nodes: list[dict[str, Any]], bad: list[NodeReport], total: int
) -> UserError:
    by_id = {n["NodeID"]: n for n in nodes}
    parts = []
    for report in bad:
        shown = "; ".join(p.render() for p in report.problems[:3])
        more = len(report.problems) - 3
        parts.append(
            f"{_describe(by_id[report.node_id])} {shown}" + (f" (+{more} more)" if more > 0 else "")
        )
    kinds = {p.what for r in bad for p in r.problems}
    advice = []
    if "no answer" in kinds:
        advice.append("check that the node is healthy (`ray status`) and has the same environment")
    if kinds & {"missing", "unreadable"}:
        advice.append(
            "put data and weights on shared storage mounted at the same path on every node (NFS, "
            "Lustre, GPFS, a Kubernetes volume) or copy them to that path on every node; a "
            "runtime_env working_dir is for code only (it leaves out git-ignored files such as "
            "data/ and is unpacked separately on each node)"
        )
    if "differs" in kinds:
        advice.append("make the copies on every node identical, or use one shared copy")
    if kinds & {"not shared", "not writable"}:
        advice.append(
            "set store.root to a folder on shared storage that every node can write "
            "(--set store.root=/shared/path)"
        )
    first = next(p for r in bad for p in r.problems)
    return UserError(
        f"preflight: {len(bad)} of {total} nodes cannot run trials: "
        + "; ".join(parts)
        + ". To fix: "
        + "; ".join(advice)
        + ". Nothing was run or stored.",
        source=config.source,
        where=f"field {first.field}" if first.field and " " not in first.field else None,
    )
