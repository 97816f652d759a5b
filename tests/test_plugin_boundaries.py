"""Plugins stay apart: no connector package imports a private module (a name starting with ``_``)
of another package, and the shared Lucene REST base is a library, not a plugin.

Imports are read from the source with ``ast``, so a lazy import inside a function counts too.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
CONNECTORS = ROOT / "connectors"
SHARED = "sparsebridge_lucene_rest"


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute dotted module) of every import in ``path``; relative imports resolve
    against the file's own package."""
    package = path.relative_to(CONNECTORS).with_suffix("").parts[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.append((node.lineno, module))
            # ``from pkg import _private`` names a private module too
            out.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names if alias.name.startswith("_"))
    return out


def _plugins() -> dict[str, str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return dict(meta["project"]["entry-points"]["sparsebridge"])


def test_no_package_imports_another_packages_private_module():
    packages = sorted(p.name for p in CONNECTORS.iterdir() if (p / "__init__.py").is_file())
    assert {"sparsebridge_elasticsearch", "sparsebridge_opensearch", "sparsebridge_qdrant", SHARED} <= set(packages)
    problems = []
    for pkg in packages:
        for path in sorted((CONNECTORS / pkg).rglob("*.py")):
            for line, module in _imports(path):
                parts = module.split(".")
                if parts[0] == pkg or parts[0] not in packages:
                    continue  # its own modules, or the core / third-party libraries
                private = [p for p in parts[1:] if p.startswith("_") and p != "__init__"]
                if private:
                    problems.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not problems, "plugins import each other's private modules:\n" + "\n".join(problems)


def test_no_plugin_imports_another_plugin():
    plugins = set(_plugins().values())
    problems = []
    for pkg in sorted(plugins):
        for path in sorted((CONNECTORS / pkg).rglob("*.py")):
            for line, module in _imports(path):
                top = module.split(".")[0]
                if top in plugins and top != pkg:
                    problems.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not problems, "\n".join(problems)


def test_the_shared_base_is_a_library_not_a_plugin():
    assert SHARED not in _plugins().values(), "the shared Lucene REST base must not register as a plugin"
    imported = {m.split(".")[0] for p in (CONNECTORS / SHARED).rglob("*.py") for _, m in _imports(p)}
    # Loading either connector must not need the other engine's client (nor its own, until it connects).
    assert not imported & {"elasticsearch", "elastic_transport", "opensearchpy"}
    for plugin in ("sparsebridge_elasticsearch", "sparsebridge_opensearch"):
        used = {m for p in (CONNECTORS / plugin).rglob("*.py") for _, m in _imports(p)}
        assert any(m.split(".")[0] == SHARED for m in used), f"{plugin} should build on {SHARED}"


def test_the_import_reader_sees_a_private_import(tmp_path, monkeypatch):
    """The checker itself: a lazy ``from other._private import x`` and ``from other import _private``
    are both found."""
    pkg = tmp_path / "plug_a"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text(
        "def f():\n    from plug_b._secret import x\n    return x\nfrom plug_b import _hidden\nfrom . import _mine\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "CONNECTORS", tmp_path)
    found = [m for _, m in _imports(pkg / "mod.py")]
    assert "plug_b._secret" in found and "plug_b._hidden" in found and "plug_a._mine" in found
