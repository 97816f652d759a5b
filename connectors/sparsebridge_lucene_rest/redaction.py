"""Keeping secrets out of sight: credentials taken out of URLs, secret values masked in messages
(the connector kit's helpers, :mod:`sparsebridge.connector.kit`, under this package's names)."""

from __future__ import annotations

from sparsebridge.connector.kit import redact, split_credentials

__all__ = ["redact", "split_credentials"]
