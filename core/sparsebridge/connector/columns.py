"""A batch of records as columns: the rows of a vector dataset's Arrow record batch, passed to a
connector without one :class:`~sparsebridge.connector.Record` object per row.

The sparse vectors stay as three flat numpy arrays (``offsets``, ``indices``, ``values``: row ``k``
holds ``indices[offsets[k]:offsets[k + 1]]``), so a connector can build its engine's points or bulk
bodies straight from them. Whoever builds a :class:`RecordColumns` has already checked every
vector against :class:`~sparsebridge.connector.SparseVector`'s rules (unique non-negative ids,
finite weights > 0); :meth:`RecordColumns.records` gives the same batch as records, for connectors
that only implement ``write``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import Record, SparseVector


@dataclass
class RecordColumns:
    """``n`` records as columns.

    ``ids``, ``texts`` and ``payloads`` are lists of ``n`` (text ``""`` when there is none, payloads
    as dicts); ``offsets`` (``n + 1`` int64 from 0), ``indices`` and ``values`` (float32) are the
    flat sparse vectors; ``tokens`` maps a vocabulary id to its token (a numpy object array, indexed
    with ``indices``); ``dense`` is None or ``n`` vectors (None for a row without one).
    ``payload_constants``: some payload holds NaN or an infinity (JSON allows neither), so payloads
    need checking one by one.
    """

    ids: list[str]
    texts: list[str]
    payloads: list[dict[str, Any]]
    offsets: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    tokens: np.ndarray
    dense: Sequence[Any] | None = None
    payload_constants: bool = False

    def __len__(self) -> int:
        return len(self.ids)

    def flat_lists(self) -> tuple[list[int], list[int], list[float]]:
        """Offsets, indices and values as Python lists (one conversion per batch; a row's vector is
        then a slice of each)."""
        return self.offsets.tolist(), self.indices.tolist(), self.values.tolist()

    def records(self) -> list[Record]:
        """The batch as :class:`Record` objects (token strings from ``tokens``)."""
        offsets, indices, values = self.flat_lists()
        names = self.tokens[self.indices].tolist() if len(self.indices) else []
        out = []
        for k, rid in enumerate(self.ids):
            a, b = offsets[k], offsets[k + 1]
            sparse = SparseVector(tuple(indices[a:b]), tuple(values[a:b]), tuple(names[a:b]))
            dense = self.dense[k] if self.dense is not None else None
            out.append(Record(id=rid, text=self.texts[k], sparse=sparse, payload=self.payloads[k], dense=dense))
        return out

    def take(self, rows: Sequence[int]) -> RecordColumns:
        """The rows ``rows`` (ascending positions) as a new batch."""
        rows = list(rows)
        starts, ends = self.offsets[rows], self.offsets[[r + 1 for r in rows]]
        lengths = ends - starts
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.concatenate([np.arange(a, b) for a, b in zip(starts, ends)]) if rows else np.zeros(0, np.int64)
        return RecordColumns(
            ids=[self.ids[r] for r in rows],
            texts=[self.texts[r] for r in rows],
            payloads=[self.payloads[r] for r in rows],
            offsets=offsets,
            indices=self.indices[flat.astype(np.int64)],
            values=self.values[flat.astype(np.int64)],
            tokens=self.tokens,
            dense=[self.dense[r] for r in rows] if self.dense is not None else None,
            payload_constants=self.payload_constants,
        )
