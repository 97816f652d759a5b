"""Which model a running ``sparsebridge serve`` serves, compared with the model an index was built with.

sparsebridge serve's ``GET /info`` carries, beside TEI's fields, ``producer`` (the producer
fingerprints of its sides, made as an ingest makes the ones it records in an index: see
:mod:`sparsebridge.vectors.provenance`) and ``vocab_fingerprint``. :func:`check_server_model`
compares them with an index's metadata: ``sparsebridge register`` refuses a server whose model
differs, and engine-mode ``search`` asks once per process (:func:`server_info` keeps the answer by
URL and key). Plain ``urllib``: the index side needs no HTTP client package for one GET.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import ConnectorError, ModelMismatchError
from ..vectors.provenance import describe_differences

INFO_TIMEOUT_S = 10.0
# (base URL, API key) -> the /info answer, or the error that asking gave: one GET per process.
_ANSWERS: dict[tuple[str, str | None], dict[str, Any] | ConnectorError] = {}


def _reason(exc: urllib.error.HTTPError) -> str:
    """The ``error`` of TEI's error body, else the start of the body."""
    try:
        text = exc.read().decode("utf-8", "replace")
    except OSError:
        return str(exc.reason)
    try:
        return str(json.loads(text)["error"])
    except (ValueError, KeyError, TypeError):
        return " ".join(text.split())[:200] or str(exc.reason)


def _ask(base: str, api_key: str | None, timeout: float) -> dict[str, Any]:
    headers = {"Accept": "application/json"}
    if api_key is not None:
        headers["Authorization"] = f"Bearer {api_key}"
    where = f"the model server at {base}"
    try:
        with urllib.request.urlopen(urllib.request.Request(f"{base}/info", headers=headers), timeout=timeout) as resp:
            answer = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise ConnectorError(
                f"{where} refused the API key (401: {_reason(exc)}); set [serve] api_key to the server's key"
            ) from None
        raise ConnectorError(f"{where} answered GET /info with {exc.code}: {_reason(exc)}") from None
    except (urllib.error.URLError, OSError) as exc:
        cause = getattr(exc, "reason", exc)
        raise ConnectorError(f"cannot reach {where} (GET /info: {cause}); is `sparsebridge serve` running?") from None
    except ValueError:
        raise ConnectorError(f"{where} answered GET /info with something that is not JSON") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("producer"), dict):
        raise ConnectorError(
            f"{where} names no model fingerprint in GET /info (field 'producer'): is it sparsebridge serve?"
        )
    return answer


def server_info(url: str, api_key: str | None = None, *, timeout: float = INFO_TIMEOUT_S) -> dict[str, Any]:
    """``GET /info`` of the sparsebridge serve at ``url`` (sent with ``api_key`` as a bearer token).

    Asked once per process for each (URL, key); a failure is kept as well, so a server that cannot
    be reached costs one timeout, not one per search. Raises :class:`ConnectorError` in one line
    (unreachable, wrong key, not sparsebridge serve).
    """
    key = (url.rstrip("/"), api_key)
    if key not in _ANSWERS:
        try:
            _ANSWERS[key] = _ask(key[0], api_key, timeout)
        except ConnectorError as exc:
            _ANSWERS[key] = exc
    answer = _ANSWERS[key]
    if isinstance(answer, ConnectorError):
        raise answer
    return answer


def forget_server_info() -> None:
    """Ask again at the next :func:`server_info` (``register`` checks the server as it is now)."""
    _ANSWERS.clear()


def check_server_model(
    stored: Mapping[str, Any],
    info: Mapping[str, Any],
    index: str,
    url: str,
    *,
    sides: Iterable[str] = ("query", "document"),
    allow_change: bool = False,
) -> list[str]:
    """Compare the model the server at ``url`` serves (its ``/info``) with the one index ``index``
    was built with (its metadata ``stored``), on ``sides``.

    Raises :class:`~sparsebridge.errors.ModelMismatchError` naming both models and each difference,
    unless ``allow_change`` (then the differences come back as a note). An index that records no
    fingerprint (built by an older sparsebridge) is compared by vocabulary only, with a note.
    """
    found: list[str] = []
    notes: list[str] = []
    have_vocab, served_vocab = stored.get("vocab_fingerprint"), info.get("vocab_fingerprint")
    if have_vocab and served_vocab and have_vocab != served_vocab:
        found.append("another vocabulary")
    recorded, served = stored.get("producer"), info.get("producer") or {}
    if isinstance(recorded, Mapping):
        for side in sides:
            have, want = recorded.get(side), served.get(side)
            if isinstance(have, Mapping) and isinstance(want, Mapping):
                found.extend(f"{side} side: {d}" for d in describe_differences(have, want))
    else:
        notes.append(
            f"index {index!r} records no model fingerprint (built by an older sparsebridge), so the model "
            f"server's model was checked by its vocabulary only"
        )
    if not found:
        return notes
    what = (
        f"the model server at {url} serves model {info.get('model_id', '?')!r}, not the model index {index!r} "
        f"was built with ({stored.get('model', '?')!r}; {'; '.join(found)}; 'in use' is the server's)"
    )
    if allow_change:
        return [f"{what}: accepted because allow_model_change is set; its rankings mix both models' vectors"]
    raise ModelMismatchError(f"{what}; serve the index's model, or ingest into a new index with the served one")
