"""The vector dataset: part files, resumable and SIGKILL-safe writing, refusals, ingest from it.

The kill test runs the real ``sparsebridge encode CORPUS --output x.parquet`` in a subprocess on
vaswani documents, SIGKILLs it once complete parts exist, and runs it again: every id once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from sparsebridge.connector import IndexSpec, Record, SparseVector
from sparsebridge.dataset import DatasetWriter, dataset_metadata, open_dataset
from sparsebridge.errors import DatasetError, IndexMismatchError

ROOT = Path(__file__).resolve().parent.parent
VOCAB = {"model": "m", "vocab_size": 30522, "vocab_fingerprint": "f" * 64}
PRODUCER = {"model": "m", "weights_sha256": "w", "pooling": "splade-max-relu", "max_active_dims": None}


def records(ids, dims=3):
    return [
        Record(
            id=str(i),
            text=f"text {i}",
            sparse=SparseVector(tuple(range(i, i + dims)), tuple(0.5 + k for k in range(dims)), ("a",) * dims),
            payload={"n": i, "nested": {"x": [1, "y"]}} if i % 2 else {},
        )
        for i in ids
    ]


def test_parts_are_complete_files_and_a_rerun_skips_what_they_hold(tmp_path):
    out = tmp_path / "v.parquet"
    meta = dataset_metadata(VOCAB, PRODUCER)
    with DatasetWriter(out, meta, part_rows=4, row_group_rows=2) as w:
        assert w.done_ids == set()
        for start in range(0, 10, 2):
            assert w.write(records(range(start, start + 2))) == {}
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert names == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert pq.ParquetFile(out / "part-00000.parquet").metadata.num_row_groups == 2  # streamed row groups
    table = pads.dataset(str(out), format="parquet").to_table()
    assert sorted(table.column("id").to_pylist(), key=int) == [str(i) for i in range(10)]
    assert table.schema.field("indices").type == pa.list_(pa.uint32())
    assert table.schema.field("values").type == pa.list_(pa.float32())
    with DatasetWriter(out, meta, part_rows=4) as w:
        assert w.done_ids == {str(i) for i in range(10)}
        w.write(records([10]))
    data = open_dataset(out)
    assert data.rows == 11 and data.metadata["producer"] == PRODUCER
    rows = {r["id"]: r for b in data.batches() for r in data.rows_of(b)}
    assert rows["3"]["payload"] == {"n": 3, "nested": {"x": [1, "y"]}} and rows["3"]["indices"] == [3, 4, 5]


def test_unfinished_part_of_a_killed_writer_is_removed(tmp_path):
    out = tmp_path / "v.parquet"
    meta = dataset_metadata(VOCAB, PRODUCER)
    with DatasetWriter(out, meta, part_rows=2) as w:
        w.write(records([0, 1]))
    (out / ".part-00001.parquet.tmp-999999").write_bytes(b"PAR1 half a file")
    with DatasetWriter(out, meta) as w:
        assert w.done_ids == {"0", "1"}
    assert not [p for p in out.iterdir() if p.name.startswith(".part-")]
    assert open_dataset(out).rows == 2


def test_a_second_writer_is_kept_out(tmp_path):
    meta = dataset_metadata(VOCAB, PRODUCER)
    with DatasetWriter(tmp_path / "v.parquet", meta), pytest.raises(DatasetError, match="another process"):
        DatasetWriter(tmp_path / "v.parquet", meta)


def test_vectors_of_another_producer_or_vocabulary_are_not_mixed_in(tmp_path):
    out = tmp_path / "v.parquet"
    with DatasetWriter(out, dataset_metadata(VOCAB, PRODUCER)) as w:
        w.write(records([0]))
    with pytest.raises(DatasetError, match="encoded by"):
        DatasetWriter(out, dataset_metadata(VOCAB, {**PRODUCER, "max_active_dims": 64}))
    with pytest.raises(DatasetError, match="vocab_fingerprint"):
        DatasetWriter(out, dataset_metadata({**VOCAB, "vocab_fingerprint": "e" * 64}, PRODUCER))


def test_files_that_are_not_datasets_are_refused_in_one_line(tmp_path):
    pq.write_table(pa.table({"id": ["a"]}), tmp_path / "plain.parquet")
    with pytest.raises(DatasetError, match="not a sparsebridge vector dataset"):
        open_dataset(tmp_path / "plain.parquet")
    with pytest.raises(DatasetError, match="not found"):
        open_dataset(tmp_path / "missing.parquet")


def test_ingest_from_a_dataset_refuses_another_vocabulary(encoder, tmp_path):
    pytest.importorskip("qdrant_edge")
    from sparsebridge.pipeline import Pipeline
    from sparsebridge_qdrant import QdrantConnector

    conn = QdrantConnector(mode="edge", path=str(tmp_path / "edge"), index="t")
    with Pipeline(encoder, conn, "t", model_name="packaged:splade", show_progress=False) as pipe:
        foreign = tmp_path / "foreign.parquet"
        with DatasetWriter(foreign, dataset_metadata(VOCAB, PRODUCER)) as w:
            w.write(records([0]))
        with pytest.raises(DatasetError, match="another vocabulary"):
            pipe.ingest_dataset(foreign)
        # An index built with another vocabulary refuses a dataset as it refuses text.
        conn.ensure_index(IndexSpec(name="t", metadata={**VOCAB, "vocab_size": len(encoder.tokenizer)}))
        ours = tmp_path / "ours.parquet"
        with DatasetWriter(ours, dataset_metadata(pipe.vocab.metadata, pipe.producer)) as w:
            w.write(records([0]))
        with pytest.raises(IndexMismatchError, match="another vocabulary"):
            pipe.ingest_dataset(ours)
        assert conn.count() == 0


def _ids(path: Path) -> list[str]:
    return pads.dataset(str(path), format="parquet").to_table(columns=["id"]).column("id").to_pylist()


# The real CLI in a child process, with one change: once two parts are complete, the third part's
# rows go into its temporary file and the writer pauses there (and says so), so the SIGKILL always
# falls mid-part, after exactly 32 rows were made durable, however fast or loaded the machine is.
_PAUSE_IN_PART = r"""
import sys, time
from sparsebridge.dataset import DatasetWriter
original = DatasetWriter._flush_group
def flush_group(self):
    original(self)
    if self._next >= 2 and self._tmp is not None:
        sys.stderr.write("\nSB-PAUSED %d\n" % self.written); sys.stderr.flush(); time.sleep(3600)
DatasetWriter._flush_group = flush_group
from sparsebridge.cli import main
sys.argv = ["sparsebridge"] + sys.argv[1:]
main()
"""
HANG_S = 600  # only a hang runs this long: the child is killed and the test says "hung"


def test_sigkilled_encode_run_again_loses_nothing_and_duplicates_nothing(data_dir, tmp_path):
    corpus = tmp_path / "docs.jsonl"
    with open(data_dir / "vaswani" / "corpus.jsonl", encoding="utf-8") as src, open(corpus, "w") as dst:
        for _, line in zip(range(120), src):
            dst.write(line)
    want = [json.loads(line)["_id"] for line in corpus.read_text().splitlines()]
    out = tmp_path / "vectors.parquet"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'core'}:{ROOT / 'connectors'}", "HF_HUB_OFFLINE": "1"}
    args = ["encode", str(corpus), "--output", str(out), "--part-rows", "16", "-q", "--json"]
    child = subprocess.Popen(
        [sys.executable, "-c", _PAUSE_IN_PART, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        cwd=tmp_path, text=True,
    )  # fmt: skip
    guard = threading.Timer(HANG_S, child.kill)  # a hang ends the readline below with EOF
    guard.start()
    try:
        said = []
        while not (said and said[-1].startswith("SB-PAUSED")):
            line = child.stderr.readline()
            if not line:
                break
            said.append(line.strip())
    finally:
        guard.cancel()
    assert said and said[-1] == "SB-PAUSED 32", (
        f"the encode never paused (hung or ended, exit {child.poll()}): {said[-5:]}"
    )
    assert [p.name for p in out.glob(".part-*")]  # the third part was being written
    child.send_signal(signal.SIGKILL)
    child.wait()
    kept = _ids(out)
    assert len(kept) == 32 and len(kept) == len(set(kept)) and set(kept) <= set(want)
    cmd = [sys.executable, "-m", "sparsebridge.cli", *args]
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=HANG_S, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    report = json.loads(rerun.stdout)
    assert report["skipped"] == len(kept) and report["written"] == len(want) - len(kept)
    final = _ids(out)
    assert sorted(final) == sorted(want)  # every id, each once
    assert not [p for p in out.iterdir() if p.name.startswith(".part-")]


def test_interrupted_ingest_from_a_dataset_is_run_again_and_dense_vectors_come_back(encoder, tmp_path):
    pytest.importorskip("qdrant_edge")
    from pipeline_support import FailingWrites
    from sparsebridge.connector import ConnectorError
    from sparsebridge.pipeline import Pipeline
    from sparsebridge.results import IngestError
    from sparsebridge.transfer import export_index
    from sparsebridge_qdrant import QdrantConnector

    class DiesOnSecondWrite(FailingWrites):
        calls = 0

        def write(self, records):
            DiesOnSecondWrite.calls += 1
            if DiesOnSecondWrite.calls == 2:
                raise ConnectorError("connection reset by peer (injected)")
            return self.inner.write(records)

    edge = QdrantConnector(mode="edge", path=str(tmp_path / "edge"), index="t")
    # Dot distance: with cosine, Qdrant stores (and gives back) the dense vector normalised.
    options = {"distance": "dot"}
    with Pipeline(
        encoder, edge, "t", model_name="packaged:splade", show_progress=False, batch_size=1, index_options=options
    ) as pipe:
        rows = records(range(70))
        for n, r in enumerate(rows):
            r.dense = [float(n), 0.5, -1.25, 2.0**-20]
        ds = tmp_path / "v.parquet"
        meta = dataset_metadata(pipe.vocab.metadata, pipe.producer, dense_model="d", dense_size=4)
        with DatasetWriter(ds, meta, part_rows=32) as w:
            w.write(rows)
        pipe.connector = DiesOnSecondWrite(edge, set())
        with pytest.raises(IngestError, match="run the same ingest again"):
            pipe.ingest_dataset(ds)  # batches of 32 rows: the first landed, the second failed
        assert edge.count() == 32
        pipe.connector = edge
        report = pipe.ingest_dataset(ds)
        assert report.written == 70 and edge.count() == 70
        out = tmp_path / "back.parquet"
        export_index(edge, pipe.vocab, out, index="t")
    got = pads.dataset(str(out), format="parquet").to_table().to_pylist()
    want = pads.dataset(str(ds), format="parquet").to_table().to_pylist()
    assert sorted(got, key=lambda r: r["id"]) == sorted(want, key=lambda r: r["id"])
    assert open_dataset(out).metadata["dense_size"] == 4


def test_a_dataset_of_another_producer_is_refused_by_the_index(encoder, tmp_path):
    pytest.importorskip("qdrant_edge")
    from sparsebridge.pipeline import Pipeline
    from sparsebridge_qdrant import QdrantConnector

    conn = QdrantConnector(mode="edge", path=str(tmp_path / "edge"), index="t")
    with Pipeline(encoder, conn, "t", model_name="packaged:splade", show_progress=False) as pipe:
        ours, cut = tmp_path / "ours.parquet", tmp_path / "cut.parquet"
        with DatasetWriter(ours, dataset_metadata(pipe.vocab.metadata, pipe.producer)) as w:
            w.write(records([0, 1]))
        other = {**pipe.producer, "model": "/elsewhere/same-weights", "max_active_dims": 8}
        with DatasetWriter(cut, dataset_metadata(pipe.vocab.metadata, other)) as w:
            w.write(records([2]))
        assert pipe.ingest_dataset(ours).written == 2
        with pytest.raises(IndexMismatchError, match="max_active_dims: index None, these 8"):
            pipe.ingest_dataset(cut)
        # The same weights under another name are the same producer.
        same = tmp_path / "same.parquet"
        renamed = {**pipe.producer, "model": "/elsewhere/same-weights"}
        with DatasetWriter(same, dataset_metadata(pipe.vocab.metadata, renamed)) as w:
            w.write(records([3]))
        assert pipe.ingest_dataset(same).written == 1 and conn.count() == 3


def test_a_row_outside_the_vocabulary_is_refused_naming_it(encoder, tmp_path):
    """Issue 23 item 7: token index 99999 (the vocabulary has 30,522) was ingested silently."""
    pytest.importorskip("qdrant_edge")
    from sparsebridge.pipeline import Pipeline
    from sparsebridge_qdrant import QdrantConnector

    conn = QdrantConnector(mode="edge", path=str(tmp_path / "edge"), index="t")
    with Pipeline(encoder, conn, "t", model_name="packaged:splade", show_progress=False) as pipe:
        size = encoder.get_embedding_dimension()
        assert pipe.vocab.dimension == size == len(encoder.tokenizer)
        ds = tmp_path / "v.parquet"
        bad = Record(id="bad", text="t", sparse=SparseVector((5, 99999), (0.5, 1.0), ("a", "b")), payload={})
        edge = Record(id="edge", text="t", sparse=SparseVector((size - 1,), (0.5,), ("a",)), payload={})
        with DatasetWriter(ds, dataset_metadata(pipe.vocab.metadata, pipe.producer)) as w:
            w.write([*records([0, 1]), edge, bad])
        with pytest.raises(DatasetError, match=rf"row 'bad': token index 99999 is outside .* 0 to {size - 1}"):
            pipe.ingest_dataset(ds)


def test_rows_sharing_an_id_are_reported_as_duplicates(encoder, tmp_path):
    """Issue 23 item 4: two rows with one id gave "2 documents ... 1 written, 0 failed"."""
    pytest.importorskip("qdrant_edge")
    from sparsebridge.pipeline import Pipeline
    from sparsebridge_qdrant import QdrantConnector

    conn = QdrantConnector(mode="edge", path=str(tmp_path / "edge"), index="t")
    with Pipeline(encoder, conn, "t", model_name="packaged:splade", show_progress=False) as pipe:
        ds = tmp_path / "v.parquet"
        again = Record(id="1", text="the second row 1", sparse=SparseVector((9,), (2.0,), ("a",)), payload={})
        with DatasetWriter(ds, dataset_metadata(pipe.vocab.metadata, pipe.producer)) as w:
            w.write([*records([0, 1, 2]), again])
        report = pipe.ingest_dataset(ds)
        assert (report.documents, report.records, report.written) == (4, 3, 3)
        assert list(report.failed) == ["1 (row 4)"] and "row 2 of this dataset" in report.failed["1 (row 4)"]
        assert conn.get(["1"])["1"]["text"] == "text 1"  # the first row is kept


def _vocab():
    from sparsebridge.vectors.vocabulary import Vocabulary

    return Vocabulary(None, "m", tokens=[f"t{i}" for i in range(64)])


def test_columns_hold_what_records_hold(tmp_path):
    """``ingest vectors.parquet`` reads columns (flat arrays, no Record per row): the same rows."""
    vocab = _vocab()
    rows = records(range(12))
    rows.append(Record("unsorted", "u", SparseVector((9, 3, 40), (1.0, 2.0, 0.5), ("a", "b", "c")), {"k": None}))
    rows.append(Record("empty", "", SparseVector((), (), ()), {}))
    ds = tmp_path / "v.parquet"
    with DatasetWriter(ds, dataset_metadata(vocab.metadata, PRODUCER), part_rows=5, row_group_rows=3) as w:
        for start in range(0, len(rows), 5):  # a part is completed between writes: parts of 5, 5, 4
            w.write(rows[start : start + 5])
    data = open_dataset(ds)
    got = [r for cols in data.columns(vocab, batch_rows=4) for r in cols.records()]
    want = [r for batch in data.records(vocab, batch_rows=4) for r in batch]
    assert len(got) == 14 and got == want
    assert got[0].sparse == SparseVector((0, 1, 2), (0.5, 1.5, 2.5), ("t0", "t1", "t2"))
    assert next(r for r in got if r.id == "unsorted").sparse.indices == (9, 3, 40)
    assert [len(c) for c in data.columns(vocab, batch_rows=4)] == [4, 1, 4, 1, 4]  # batches end with each part


@pytest.mark.parametrize(
    ("indices", "values", "message"),
    [
        ([3, 7, 3], [1.0, 2.0, 3.0], "indices must be unique"),
        ([3, 7], [1.0, float("nan")], "must be finite and > 0, got nan"),
        ([3, 7], [1.0, 0.0], "must be finite and > 0, got 0.0"),
        ([3, 7], [1.0], "needs as many values and tokens as indices"),
        ([3, 70], [1.0, 2.0], "token index 70 is outside the vocabulary"),
    ],
)
def test_columns_refuse_a_bad_row_by_id_as_records_do(tmp_path, indices, values, message):
    from sparsebridge.dataset import META_KEY, schema

    vocab = _vocab()
    good = {"id": "good", "text": "g", "payload": "{}", "indices": [1, 2], "values": [0.5, 0.25]}
    bad = {"id": "bad", "text": "b", "payload": "{}", "indices": indices, "values": values}
    meta = json.dumps(dataset_metadata(vocab.metadata, PRODUCER)).encode()
    path = tmp_path / "part-00000.parquet"
    pq.write_table(
        pa.Table.from_pylist([good, good | {"id": "g2"}, bad], schema=schema().with_metadata({META_KEY: meta})), path
    )
    data = open_dataset(path)
    with pytest.raises(DatasetError) as by_records:
        list(data.records(vocab))
    with pytest.raises(DatasetError) as by_columns:
        list(data.columns(vocab))
    assert str(by_columns.value) == str(by_records.value)
    assert "row 'bad'" in str(by_columns.value) and message in str(by_columns.value)


def test_columns_flag_payloads_json_cannot_carry(tmp_path):
    """NaN in a payload reads back from the JSON text; the connector then checks payloads one by one."""
    from sparsebridge.dataset import META_KEY, schema

    vocab = _vocab()
    meta = json.dumps(dataset_metadata(vocab.metadata, PRODUCER)).encode()
    rows = [
        {"id": str(i), "text": "", "payload": p, "indices": [1], "values": [1.0]}
        for i, p in enumerate(["{}", '{"x": NaN}'])
    ]
    path = tmp_path / "part-00000.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema().with_metadata({META_KEY: meta})), path)
    (cols,) = open_dataset(path).columns(vocab)
    assert cols.payload_constants and cols.payloads[0] == {}
    plain, flagged = open_dataset(path).columns(vocab, batch_rows=1)  # one row a batch
    assert not plain.payload_constants and flagged.payload_constants
