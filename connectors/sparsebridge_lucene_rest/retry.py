"""The retry policy of bulk writes and ``_msearch``.

The connectors send bulk writes through the client's bulk helpers (``streaming_bulk``, or
``parallel_bulk`` with ``thread_count > 1``) with ``raise_on_error=False`` and
``raise_on_exception=False``, and do the retrying themselves around the helper: items that come
back 429 or 5xx (per item, or because the whole request did) are sent again after an exponential
backoff (``initial_backoff * 2**(n-1)``, capped at ``max_backoff``), at most ``max_retries`` times.
Doing it here rather than with the helper's own ``max_retries`` gives the same behaviour on both
clients (opensearch-py's helper retries only 429), backs off on 5xx too (the transports retry
statuses without any delay, so their status retries are turned off), and counts the retries for
:attr:`WriteResult.retries`. ``_msearch`` is retried the same way.
"""

from __future__ import annotations

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def backoff_delay(attempt: int, initial: float, cap: float) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): initial * 2**(attempt-1), capped."""
    return min(cap, initial * 2 ** (attempt - 1))
