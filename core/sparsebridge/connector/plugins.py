"""The plugin manager: finds connectors registered through the ``sparsebridge`` entry-point group."""

from __future__ import annotations

from typing import Any

import pluggy

from ..errors import UnknownConnectorError  # noqa: F401  (defined in errors.py; re-exported here)
from . import Connector, hookspecs

ENTRY_POINT_GROUP = "sparsebridge"

pm = pluggy.PluginManager("sparsebridge")
pm.add_hookspecs(hookspecs)
_entry_points_loaded = False


def _load_entry_points() -> None:
    # Loaded on first use rather than at import, so `import sparsebridge` stays cheap and a
    # broken third-party plugin only matters to code that asks for connectors.
    global _entry_points_loaded
    if not _entry_points_loaded:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        _entry_points_loaded = True


def get_connectors() -> dict[str, type[Connector]]:
    """All registered connector classes by name."""
    _load_entry_points()
    found: dict[str, type[Connector]] = {}

    def register(cls: type) -> None:
        if not (isinstance(cls, type) and issubclass(cls, Connector)):
            raise TypeError(f"register() takes a Connector subclass, got {cls!r}")
        if cls.name in found and found[cls.name] is not cls:
            raise ValueError(f"two plugins register a connector named {cls.name!r}")
        found[cls.name] = cls

    pm.hook.register_connectors(register=register)
    return found


def get_connector_class(name: str) -> type[Connector]:
    """The connector class registered as ``name``, or :class:`UnknownConnectorError` listing the installed ones."""
    connectors = get_connectors()
    if name not in connectors:
        raise UnknownConnectorError(name, sorted(connectors))
    return connectors[name]


def create_connector(name: str, **options: Any) -> Connector:
    """A connector ``name`` built with ``options``."""
    return get_connector_class(name)(**options)


def plugin_versions() -> list[dict[str, str]]:
    """Installed plugins with the distribution and version they come from."""
    _load_entry_points()
    rows = []
    for plugin, dist in pm.list_plugin_distinfo():
        rows.append(
            {
                "plugin": pm.get_name(plugin) or getattr(plugin, "__name__", repr(plugin)),
                "distribution": dist.project_name,
                "version": dist.version,
            }
        )
    for name, cls in get_connectors().items():
        module = cls.__module__.split(".")[0]
        for row in rows:
            if row["plugin"] == name or module.startswith(row["plugin"]):
                row.setdefault("connectors", "")
                row["connectors"] = ",".join(filter(None, [row["connectors"], name]))
    return rows


__all__ = [
    "ENTRY_POINT_GROUP",
    "UnknownConnectorError",
    "create_connector",
    "get_connector_class",
    "get_connectors",
    "plugin_versions",
    "pm",
]
