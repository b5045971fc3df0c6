"""The package layout holds: no import circles among trainpod's modules, and in-container code (trainpod.pod) loads
no launcher backend. Read from the code itself (imports parsed with ``ast``, modules imported in a fresh process)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"trainpod": ROOT / "cli" / "trainpod", "trainpod_trainer": ROOT / "trainer" / "trainpod_trainer"}


def _modules() -> dict[str, Path]:
    found = {}
    for top, directory in PACKAGES.items():
        for path in directory.rglob("*.py"):
            parts = [top, *path.relative_to(directory).with_suffix("").parts]
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every trainpod module ``name`` imports: at module level, inside a function (a lazy import is an edge too)
    or under ``if TYPE_CHECKING:`` (a circle for a type checker is a circle)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    named: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            named |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            named |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
    out = set()
    for target in named:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            out.add(target)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_among_trainpod_modules():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert "trainpod.launcher" in graph and "trainpod.backends.docker" in graph["trainpod.launcher"] | {
        m for b in graph["trainpod.launcher"] for m in graph.get(b, ())}  # the graph sees lazy imports
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_pod_code_loads_no_launcher_backend():
    """What runs inside a container (job supervisor, pod supervisor, contrib) imports the core and storage only."""
    code = ("import json, sys\n"
            "import trainpod.pod.jobrun, trainpod.pod.supervisor, trainpod.pod.contrib\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('trainpod.', 'docker', 'runpod')))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    loaded = set(json.loads(out.stdout))
    launcher_side = {"trainpod.backends.local", "trainpod.backends.docker", "trainpod.backends.runpod",
                     "trainpod.backends.base", "trainpod.launcher", "trainpod.images", "trainpod.commands"}
    assert loaded & launcher_side == set(), loaded
    assert not {m for m in loaded if m.split(".")[0] in ("docker", "runpod")}, loaded
    assert "trainpod.pod.jobrun" in loaded and "trainpod.contract" in loaded
