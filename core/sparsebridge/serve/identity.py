"""What identifies the served model exactly, for ``GET /info`` beside TEI's fields.

``producer``: the producer fingerprints of :mod:`sparsebridge.vectors.provenance`, per side
(``document``, ``query``, and ``dense`` with a dense model), computed as an ingest computes the
ones it records in an index, so a client can compare the two (``sparsebridge register``, engine-mode
``search``). ``vocab_fingerprint``: the sparse model's vocabulary, as an index records it.
"""

from __future__ import annotations

from typing import Any

from ..vectors.provenance import producer_fingerprint


def served_identity(service: Any) -> dict[str, Any]:
    """``{"producer": {side: fingerprint}, "vocab_fingerprint": ...}`` of ``service`` (a
    :class:`~sparsebridge.serve.service.ModelService`); hashes the weights, so computed once."""
    encoder = service.sparse.encoder
    producer = {side: producer_fingerprint(encoder, service.max_active_dims, side) for side in ("document", "query")}
    if service.dense is not None:
        producer["dense"] = producer_fingerprint(service.dense.encoder, None, "document")
    return {"producer": producer, "vocab_fingerprint": service.vocab.metadata.get("vocab_fingerprint")}
