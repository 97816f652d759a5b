"""Test mixins for connector authors: subclass :class:`ConnectorConformance` in a pytest test class,
say how to build your connector, and the contract's rules run against it (the built-in connectors
pass the same tests). Needs pytest."""

from __future__ import annotations

from .connector import ConnectorConformance

__all__ = ["ConnectorConformance"]
