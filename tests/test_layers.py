"""The package's layers, held: which layer may import which, no import cycles, no use of the flat
layout's old module names inside the package, and which modules import without torch.

Imports are read from the source with ``ast``, so an import inside a function counts as well: a
lazy import hides a dependency from the import system, not from this test.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from sparsebridge._moved import new_name

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "core" / "sparsebridge"
CONNECTORS = ROOT / "connectors"

# Bottom to top: a module may import its own layer and the layers below it, never one above.
# ``base``: errors, defaults, the version and the old names' finder; ``facade``: the package's
# ``__init__``, which names the public classes (lazily) and is imported by no module inside.
LAYERS = [
    "base",
    "connector",
    "vectors",
    "encoders",
    "evaluation",
    "config",
    "index",
    "serve",
    "cli",
    "testing",
    "facade",
]
BASE = {
    "sparsebridge._version",
    "sparsebridge._moved",
    "sparsebridge._lazy",
    "sparsebridge.errors",
    "sparsebridge.defaults",
}

# Modules that import neither torch nor transformers: the connector contract and plugins, the
# vectors as data, the model layout's names and the torch-free query side of an inference-free
# model, the config and the builder, the index side, the CLI (commands load a model only when they
# encode).
TORCH_FREE = [
    "sparsebridge",
    "sparsebridge.errors",
    "sparsebridge.defaults",
    "sparsebridge.connector",
    "sparsebridge.connector.plugins",
    "sparsebridge.connector.filters",
    "sparsebridge.connector.durability",
    "sparsebridge.connector.kit",
    "sparsebridge.testing",
    "sparsebridge.vectors.vocabulary",
    "sparsebridge.vectors.producer",
    "sparsebridge.vectors.provenance",
    "sparsebridge.vectors.dataset",
    "sparsebridge.vectors.cache",
    "sparsebridge.evaluation",
    "sparsebridge.evaluation.ir_metrics",
    "sparsebridge.encoders.layout",
    "sparsebridge.encoders.static_query",
    "sparsebridge.config",
    "sparsebridge.config.builder",
    "sparsebridge.index.corpus",
    "sparsebridge.index.documents",
    "sparsebridge.index.passages",
    "sparsebridge.index.results",
    "sparsebridge.index.metrics",
    "sparsebridge.index.pipeline",
    "sparsebridge.index.writer",
    "sparsebridge.vectors.convert",
    "sparsebridge.index.transfer",
    "sparsebridge.cli",
    "sparsebridge_qdrant",
    "sparsebridge_elasticsearch",
    "sparsebridge_opensearch",
]
HEAVY = ("torch", "transformers")


def module_name(path: Path) -> str:
    parts = ["sparsebridge", *path.relative_to(CORE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(CORE.rglob("*.py"))}


def imports(name: str) -> list[tuple[int, str]]:
    """(line, module) for every import in module ``name``, relative ones resolved; ``from pkg
    import sub`` names the submodule when ``pkg.sub`` is a module."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # ``from pkg import sub``: the submodule (or the old name of a moved one), not the package
            subs = [
                f"{module}.{a.name}"
                for a in node.names
                if f"{module}.{a.name}" in MODULES or new_name(f"{module}.{a.name}") is not None
            ]
            out.extend((node.lineno, m) for m in subs or [module])
    return out


def layer(name: str) -> str:
    if name == "sparsebridge":
        return "facade"  # the package's own __init__: the public names, from any layer
    if name in BASE:
        return "base"
    return name.split(".")[1]


def test_every_module_is_in_a_layer():
    assert {layer(m) for m in MODULES} <= set(LAYERS)


def test_layers_import_only_downwards():
    problems = []
    for name in MODULES:
        for line, target in imports(name):
            if target.split(".")[0] != "sparsebridge":
                continue
            if new_name(target) is not None:
                problems.append(f"{name}:{line} imports the old name {target} (now {new_name(target)})")
            elif target in MODULES and LAYERS.index(layer(target)) > LAYERS.index(layer(name)):
                problems.append(f"{name}:{line} ({layer(name)}) imports {target} ({layer(target)})")
    assert not problems, "\n".join(problems)


def test_every_import_inside_the_package_resolves():
    """A relative import that names no module (a file moved, a merge that kept the old path) is
    caught here, before an import error at run time."""
    missing = [
        f"{name}:{line} imports {target}"
        for name in MODULES
        for line, target in imports(name)
        if target.split(".")[0] == "sparsebridge" and target not in MODULES and new_name(target) is None
    ]
    assert not missing, "\n".join(missing)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles():
    graph = {name: {t for _, t in imports(name) if t in MODULES and t != name} for name in MODULES}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def heavy_imports(name: str) -> list[str]:
    """Which of torch / transformers importing ``name`` pulls in, in a fresh interpreter (what the
    module loads at import time, not what the test process already holds)."""
    script = (
        f"import importlib, json, sys\nimportlib.import_module({name!r})\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(result.stdout)


def test_torch_free_modules_import_without_torch():
    heavy = {name: found for name in TORCH_FREE if (found := heavy_imports(name))}
    assert not heavy, f"these modules import {HEAVY}: {heavy}"


def test_the_torch_check_sees_torch():
    """The check itself: a module that imports torch and transformers is seen doing so."""
    assert heavy_imports("sparsebridge.encoders.encoder") == ["torch", "transformers"]


def test_the_names_the_readme_documents_import():
    """Every ``from sparsebridge... import a, b`` in the README and every `sparsebridge.x.y` it names
    in backquotes resolves (new paths, and the old ones it still mentions)."""
    import importlib
    import re

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = []
    for module, names in set(re.findall(r"from (sparsebridge[\w.]*) import ([\w, ]+)", readme)):
        mod = importlib.import_module(module)
        missing += [f"{module}.{n.strip()}" for n in names.split(",") if n.strip() and not hasattr(mod, n.strip())]
    refs = set(re.findall(r"`(sparsebridge(?:\.\w+)+)", readme))
    assert len(refs) >= 5
    for ref in refs:
        parts = ref.split(".")
        for i in range(len(parts), 0, -1):  # the longest importable module, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            for attr in parts[i:]:
                obj = getattr(obj, attr, None)
            if obj is None:
                missing.append(ref)
            break
    assert not missing, missing


def test_old_module_names_are_the_moved_modules():
    """The flat layout's names still import, as the very modules that moved (one object: an
    ``isinstance`` check or a ``monkeypatch`` through the old name reaches the code)."""
    import sparsebridge.index.pipeline
    import sparsebridge.pipeline
    from sparsebridge.backends import export_optimized_onnx_model
    from sparsebridge.encoders.export import export_optimized_onnx_model as moved
    from sparsebridge.modules.token_chunks import in_token_chunks

    assert sparsebridge.pipeline is sparsebridge.index.pipeline
    assert sparsebridge.pipeline.__spec__.name == "sparsebridge.index.pipeline"
    assert export_optimized_onnx_model is moved
    assert in_token_chunks.__module__ == "sparsebridge.encoders.modules.token_chunks"
    assert new_name("sparsebridge.ray") == "sparsebridge.index.ray_engine"
    assert new_name("sparsebridge.index") is None


def test_the_old_backends_package_reaches_the_moved_code(monkeypatch):
    """``sparsebridge.backends`` was a package of runners and export helpers, now two modules: its
    names, its submodules and a ``monkeypatch`` through it reach the moved code."""
    import sparsebridge.backends as old
    import sparsebridge.encoders.backends as runners
    from sparsebridge.backends.isolated import run_isolated
    from sparsebridge.encoders.backends.isolated import run_isolated as moved

    assert run_isolated is moved and old.load_runner is runners.load_runner
    monkeypatch.setattr(old, "_threads", lambda: 3)
    assert runners._threads() == 3


def test_the_readme_layout_names_every_module_and_only_modules_that_exist():
    import re

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout") :]
    block = layout[layout.index("```") + 3 :]
    block = block[: block.index("```")]
    named = set(re.findall(r"\b(\w+\.py)\b", block))
    folders = set(re.findall(r"\b(\w+)/", block)) - {"core", "sparsebridge", "connectors", "tests", "benchmarks"}
    # folders the layout describes as a whole (one module class per file, one runner per engine...)
    whole = {"modules", "backends", "evaluation"}
    files = {p.name for p in CORE.rglob("*.py") if p.parent.name not in whole}
    dirs = {p.name for p in CORE.rglob("*") if p.is_dir() and p.name != "__pycache__"}
    assert files - named - {"__main__.py"} == set(), "modules the README layout does not name"
    assert named - files - {p.name for p in CORE.rglob("*.py")} == set(), "the layout names modules that do not exist"
    assert dirs - folders == set() and folders - dirs - {"examples", "docker", "ONNX"} == set()
