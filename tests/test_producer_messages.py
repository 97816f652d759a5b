"""A dataset of another producer is refused with the differences named (issue 23, papercut).

``encode --output`` and ``export`` into a dataset of another model or settings printed the two
producer dicts raw; the message now names each key that differs, as the index-side check does.
Real Parquet files through :class:`DatasetWriter`.
"""

from __future__ import annotations

import pytest
from sparsebridge.connector import Record, SparseVector
from sparsebridge.dataset import DatasetWriter, dataset_metadata
from sparsebridge.errors import DatasetError, IndexMismatchError
from sparsebridge.producer import check_vectors_producer

VOCAB = {"model": "m", "vocab_size": 30522, "vocab_fingerprint": "f" * 64}
PRODUCER = {"model": "m", "weights_sha256": "a" * 64, "pooling": "splade-max-relu", "max_active_dims": None}


def test_the_dataset_refusal_names_each_difference(tmp_path):
    out = tmp_path / "v.parquet"
    with DatasetWriter(out, dataset_metadata(VOCAB, PRODUCER)) as w:
        w.write([Record(id="1", text="t", sparse=SparseVector((1, 2), (0.5, 1.5), ("a", "b")), payload={})])
    other = {**PRODUCER, "max_active_dims": 64, "weights_sha256": "b" * 64}
    with pytest.raises(DatasetError) as refused:
        DatasetWriter(out, dataset_metadata(VOCAB, other))
    message = str(refused.value)
    assert "max_active_dims: dataset None, new vectors 64" in message
    assert f"weights_sha256: dataset {'a' * 12!r}, new vectors {'b' * 12!r}" in message
    assert "{" not in message and "a" * 13 not in message  # no raw dicts, no full hashes


def test_the_index_side_names_them_the_same_way():
    with pytest.raises(IndexMismatchError, match="max_active_dims: index None, these 64"):
        check_vectors_producer(
            {"vectors_producer": PRODUCER}, {"vectors_producer": {**PRODUCER, "max_active_dims": 64}}, "docs"
        )
