"""A dataset that cannot be ingested is refused before an index is created (issue 23, item 9 and a
papercut).

A Parquet file made with pandas, with sparsebridge's file metadata but float ``indices`` and string
``values``, gave an IndexError traceback inside ``dataset.py`` and left an empty index; a dataset
whose first rows break the vector rules left an empty index too. Real Parquet files (pandas ->
pyarrow), the packaged SPLADE model's vocabulary and the embedded Qdrant Edge engine.
"""

from __future__ import annotations

import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sparsebridge.dataset import META_KEY, dataset_metadata
from sparsebridge.errors import DatasetError
from sparsebridge.pipeline import Pipeline

pd = pytest.importorskip("pandas")
pytest.importorskip("qdrant_edge")
from sparsebridge_qdrant import QdrantConnector  # noqa: E402


@pytest.fixture
def pipe(encoder, tmp_path):
    connector = QdrantConnector(mode="edge", path=str(tmp_path / "edge"), index="t")
    with Pipeline(encoder, connector, "t", model_name="packaged:splade", show_progress=False) as p:
        yield p


def with_our_metadata(frame, pipe, path):
    """A pandas frame written as Parquet with the file metadata sparsebridge writes."""
    meta = dataset_metadata(pipe.vocab.metadata, pipe.producer)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: json.dumps(meta).encode()})
    pq.write_table(table, path)
    return path


def two_rows(indices, values):
    """Two rows of the dataset's columns, as a pandas user would build them."""
    return pd.DataFrame(
        {"id": ["a", "b"], "text": ["first", "second"], "payload": ["{}", "{}"], "indices": indices, "values": values}
    )


def test_float_indices_and_string_values_are_refused_before_an_index_exists(pipe, tmp_path):
    frame = two_rows([[1012.0, 2003.0], [2158.0]], [["0.5", "1.25"], ["0.75"]])
    bad = with_our_metadata(frame, pipe, tmp_path / "pandas.parquet")
    with pytest.raises(
        DatasetError, match=r"pandas.parquet: column 'indices' is list<.*double>, not a list of integer"
    ):
        pipe.ingest_dataset(bad)
    assert pipe.connector.index_metadata() is None
    frame["indices"] = [[1012, 2003], [2158]]
    with pytest.raises(DatasetError, match=r"column 'values' is list<.*string>, not a list of floats"):
        pipe.ingest_dataset(with_our_metadata(frame, pipe, tmp_path / "pandas2.parquet"))
    assert pipe.connector.index_metadata() is None


def test_a_dataset_refused_from_its_first_row_leaves_no_index(pipe, tmp_path):
    frame = two_rows([[1012, 2003], [2158]], [[0.5, math.nan], [0.75]])
    bad = with_our_metadata(frame, pipe, tmp_path / "nan.parquet")
    with pytest.raises(DatasetError, match="row 'a'"):
        pipe.ingest_dataset(bad)
    assert pipe.connector.index_metadata() is None
