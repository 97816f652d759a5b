"""Round trips text -> dataset -> each backend -> export -> equal, and migrations between backends.

Qdrant runs for real (Edge in-process, qdrant-client local mode). Elasticsearch and OpenSearch cannot
run here: they are the engine double of ``lucene_testkit`` behind the real official clients (their
``helpers.scan``), and the export's search request is checked against the engines' API spec. The
double's ``exclude_source_vectors`` mode behaves like Elasticsearch 9.2+ (vectors left out of
``_source`` unless asked for, then rebuilt from the index with Lucene's 9 significant bits).

The dataset is read back with ``pyarrow.dataset`` directly, not with sparsebridge's reader.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow.dataset as pads
import pytest
from lucene_testkit import FakeEngine, FakeServer, lucene_feature_value
from sparsebridge.config import IngestSettings
from sparsebridge.connector import ConnectorError, Record, SparseVector
from sparsebridge.dataset import open_dataset
from sparsebridge.pipeline import Pipeline
from sparsebridge.transfer import export_index, migrate
from spec_validation import elasticsearch_validator, opensearch_validator

pytest.importorskip("qdrant_edge")
from sparsebridge_elasticsearch import ElasticsearchConnector  # noqa: E402
from sparsebridge_opensearch import OpenSearchConnector  # noqa: E402
from sparsebridge_qdrant import QdrantConnector  # noqa: E402

N_DOCS = 24
ROOT = Path(__file__).resolve().parent.parent
HANG_S = 600  # only a hang runs this long: the paused child is killed and the test says "hung"


def arrow_rows(path: Path) -> dict[str, dict]:
    """id -> row of a dataset folder, read with pyarrow.dataset (any Parquet reader would do)."""
    table = pads.dataset(str(path), format="parquet").to_table()
    out = {}
    for row in table.to_pylist():
        assert row["id"] not in out, f"id {row['id']} twice in {path}"
        row["payload"] = json.loads(row["payload"])
        out[row["id"]] = row
    return out


@pytest.fixture(scope="module")
def docs(data_dir):
    rows = []
    with open(data_dir / "cranfield" / "corpus.jsonl", encoding="utf-8") as fh:
        for n, line in enumerate(fh):
            doc = json.loads(line)
            if doc["text"].strip():
                # Payload values of several JSON types, nested, and keys present in some rows only.
                doc["n"] = n
                doc["tags"] = {"even": n % 2 == 0, "list": [n, "x"]} if n % 3 else None
                rows.append(doc)
            if len(rows) == N_DOCS:
                return rows


def make_pipeline(encoder, connector, index):
    return Pipeline(
        encoder,
        connector,
        index,
        model_name="packaged:splade",
        batch_size=8,
        show_progress=False,
        ingest_settings=IngestSettings(payload_fields={"title": "text", "n": None, "tags": None}),
    )


@pytest.fixture(scope="module")
def dataset(encoder, docs, tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "vectors.parquet"
    pipe = make_pipeline(encoder, None, "unused")
    report = pipe.encode_dataset(docs, out, part_rows=10)
    assert report.written == N_DOCS and not report.failed
    return out


def test_dataset_holds_the_encoders_own_vectors(dataset, docs, encoder):
    rows = arrow_rows(dataset)
    assert sorted(rows) == sorted(d["_id"] for d in docs)
    texts = [" ".join(p.strip() for p in (d["title"], d["text"]) if p.strip()) for d in docs]
    # The same calls as the pipeline (chunks of one part, 10 texts, batch_size 8): padding changes
    # the float noise.
    for start in range(0, len(docs), 10):
        emb = encoder.encode_document(texts[start : start + 10], batch_size=8, convert_to_sparse_tensor=True)
        emb = emb.coalesce()
        idx, vals = emb.indices(), emb.values()
        for r, d in enumerate(docs[start : start + 10]):
            mask = (idx[0] == r) & (vals > 0)
            row = rows[d["_id"]]
            assert row["indices"] == idx[1][mask].tolist()
            assert row["values"] == vals[mask].float().tolist()  # float32, bit for bit
    for r, d in enumerate(docs):
        row = rows[d["_id"]]
        assert row["text"] == texts[r]
        assert row["payload"] == {k: d[k] for k in ("title", "n", "tags") if d.get(k) is not None}
    meta = open_dataset(dataset).metadata
    assert meta["model"] == "packaged:splade" and meta["vocab_size"] == len(encoder.tokenizer)
    assert meta["values_quantised"] == "none" and meta["side"] == "document"
    assert meta["producer"]["weights_sha256"] and meta["pooling"] == "splade-max-relu"


def _connectors(kind: str, tmp_path: Path, srv_url: str | None):
    if kind == "edge":
        return QdrantConnector(mode="edge", path=str(tmp_path / "edge"), index="t")
    if kind == "local":
        return QdrantConnector(mode="local", path=str(tmp_path / "local"), index="t")
    if kind.startswith("es"):
        return ElasticsearchConnector(url=srv_url, index="t")
    sparse_type = "sparse_vector" if kind == "os-seismic" else "rank_features"
    return OpenSearchConnector(url=srv_url, index="t", sparse_field_type=sparse_type)


ENGINES = {
    "es-9.1": dict(version="9.1.0"),
    "es-8.11": dict(version="8.11.4"),  # escaped token keys, no exclude_vectors
    "os-rank-features": dict(flavor="opensearch", version="2.19.0"),
    "os-seismic": dict(flavor="opensearch", version="3.3.0"),
}


@pytest.mark.parametrize("kind", ["edge", "local", *ENGINES])
def test_round_trip_dataset_backend_export_is_bit_for_bit(kind, dataset, encoder, tmp_path, specs_dir):
    engine = FakeEngine(**ENGINES[kind]) if kind in ENGINES else None
    with FakeServer(engine) if engine else contextlib.nullcontext() as srv:
        conn = _connectors(kind, tmp_path, srv.url if srv else None)
        with make_pipeline(encoder, conn, "t") as pipe:
            report = pipe.ingest_dataset(dataset)
            assert report.written == N_DOCS and not report.failed and report.encode_seconds == 0
            out = tmp_path / "export.parquet"
            result = export_index(conn, pipe.vocab, out, index="t", batch_size=7)
            assert result.read == N_DOCS and result.written == N_DOCS and result.counts_equal
        assert arrow_rows(out) == arrow_rows(dataset)
        meta = open_dataset(out).metadata
        assert meta["values_quantised"] == "none"
        assert meta["vocab_fingerprint"] == open_dataset(dataset).metadata["vocab_fingerprint"]
        assert meta["producer"] == open_dataset(dataset).metadata["producer"]
        if engine is not None:
            scans = engine.calls(r"^/t/_search$", "POST")
            assert scans, "the export did not use the search (scroll) API"
            validator = (elasticsearch_validator if engine.is_es else opensearch_validator)(specs_dir)
            for call in scans:
                validator.validate_request(call.method, call.path, call.body)
                source = call.json()["_source"]
                if kind == "es-9.1":
                    assert source == {"exclude_vectors": False}
                else:
                    assert source is True


def test_elasticsearch_9_2_rebuilt_vectors_are_marked_lucene_9bit(dataset, encoder, tmp_path):
    engine = FakeEngine(version="9.2.0")  # 9.2+: vectors left out of _source by default
    with FakeServer(engine) as srv, make_pipeline(encoder, ElasticsearchConnector(url=srv.url, index="t"), "t") as pipe:
        pipe.ingest_dataset(dataset)
        out = tmp_path / "export.parquet"
        result = export_index(pipe.connector, pipe.vocab, out, index="t")
    assert result.values_quantised == "lucene-9bit"
    assert open_dataset(out).metadata["values_quantised"] == "lucene-9bit"
    exported, original = arrow_rows(out), arrow_rows(dataset)
    assert exported.keys() == original.keys()
    for rid, row in original.items():
        assert exported[rid]["indices"] == row["indices"]
        assert exported[rid]["values"] == [lucene_feature_value(v) for v in row["values"]]
        assert exported[rid]["values"] != row["values"]


def test_export_refuses_another_vocabulary(dataset, encoder, minilm_path, tmp_path):
    from sparsebridge import DenseEncoder
    from sparsebridge.errors import IndexMismatchError
    from sparsebridge.vocabulary import Vocabulary

    conn = QdrantConnector(mode="edge", path=str(tmp_path / "edge"), index="t")
    with make_pipeline(encoder, conn, "t") as pipe:
        pipe.ingest_dataset(dataset)
        minilm = DenseEncoder(str(minilm_path), device="cpu")
        other = Vocabulary(minilm.tokenizer, "minilm")
        other.metadata["vocab_fingerprint"] = "0" * 64  # MiniLM shares BERT's vocabulary: make it differ
        with pytest.raises(IndexMismatchError, match="another vocabulary"):
            export_index(conn, other, tmp_path / "x.parquet", index="t")


def _search_top10(pipe, queries):
    return [[(h.id, round(h.score, 4)) for h in r.hits] for r in pipe.search(queries, top_k=10)]


def test_migrate_edge_to_local_same_records_same_rankings(dataset, encoder, tmp_path, docs):
    src = QdrantConnector(mode="edge", path=str(tmp_path / "edge"), index="a")
    dst = QdrantConnector(mode="local", path=str(tmp_path / "local"), index="b")
    queries = ["boundary layer separation", "heat transfer at hypersonic speed", "buckling of cylinders"]
    with make_pipeline(encoder, src, "a") as a, make_pipeline(encoder, dst, "b") as b:
        a.ingest_dataset(dataset)
        report = migrate(src, b, source_name="a", batch_size=5)
        assert report.read == N_DOCS and report.written == N_DOCS and report.counts_equal
        assert report.target_count == N_DOCS
        assert _search_top10(a, queries) == _search_top10(b, queries)
        assert dst.index_metadata()["producer"] == src.index_metadata()["producer"]
        again = migrate(src, b, source_name="a", batch_size=5)  # a re-run duplicates nothing
        assert again.counts_equal and dst.count() == N_DOCS
        back = tmp_path / "back.parquet"
        export_index(dst, b.vocab, back, index="b")
    assert arrow_rows(back) == arrow_rows(dataset)


def _config(path: Path, body: str) -> Path:
    path.write_text(body, encoding="utf-8")
    return path


# The real CLI in a child process; the target's writes pause (and say so) once ``at`` records
# landed, so the kill falls inside the migration every time.
_PAUSE = r"""
import os, sys, time
from sparsebridge_qdrant.connector import QdrantConnector
at = int(os.environ["SB_PAUSE_AT"]); state = {"n": 0}
original = QdrantConnector.write
def write(self, records):
    if self.collection == "b" and state["n"] >= at:
        sys.stderr.write("\nSB-PAUSED %d\n" % state["n"]); sys.stderr.flush(); time.sleep(3600)
    out = original(self, records)
    if self.collection == "b":
        state["n"] += len(out.written)
    return out
QdrantConnector.write = write
from sparsebridge.cli import main
sys.argv = ["sparsebridge"] + sys.argv[1:]
main()
"""


def test_interrupted_migrate_rerun_loses_and_duplicates_nothing(dataset, encoder, tmp_path):
    src_dir, dst_dir = tmp_path / "src", tmp_path / "dst"
    a = _config(
        tmp_path / "a.toml", f'[backend]\nconnector = "qdrant"\nmode = "edge"\npath = "{src_dir}"\nindex = "a"\n'
    )
    b = _config(
        tmp_path / "b.toml", f'[backend]\nconnector = "qdrant"\nmode = "edge"\npath = "{dst_dir}"\nindex = "b"\n'
    )
    with make_pipeline(encoder, QdrantConnector(mode="edge", path=str(src_dir), index="a"), "a") as pipe:
        pipe.ingest_dataset(dataset)
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'core'}:{ROOT / 'connectors'}", "SB_PAUSE_AT": "10"}
    args = [sys.executable, "-c", _PAUSE, "migrate", "--from", str(a), "--to", str(b), "--batch-size", "5", "-q"]
    child = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    # A deadline cannot interrupt a blocking readline; a timer that kills a hung child ends it (EOF).
    guard = threading.Timer(HANG_S, child.kill)
    guard.start()
    try:
        line = child.stderr.readline()
        while line and "SB-PAUSED" not in line:
            line = child.stderr.readline()
    finally:
        guard.cancel()
    assert "SB-PAUSED" in line, f"the migration never reached the pause point (hung or ended, exit {child.poll()})"
    child.send_signal(signal.SIGKILL)
    child.wait()
    with QdrantConnector(mode="edge", path=str(dst_dir), index="b") as dst:
        assert dst.count() == 10  # what was acknowledged before the kill is there
    rerun = subprocess.run(
        [sys.executable, "-m", "sparsebridge.cli", "migrate", "--from", str(a), "--to", str(b), "--json", "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    report = json.loads(rerun.stdout)
    assert report["counts_equal"] and report["target_count"] == N_DOCS
    out = tmp_path / "after.parquet"
    dst = QdrantConnector(mode="edge", path=str(dst_dir), index="b")
    with make_pipeline(encoder, dst, "b") as pipe:
        export_index(dst, pipe.vocab, out, index="b")
    assert arrow_rows(out) == arrow_rows(dataset)


def test_export_and_migrate_refuse_a_record_outside_the_vocabulary(encoder, tmp_path):
    """Issue 23 item 7: a record with token index 99999 (of 30,522) was exported silently."""
    src = QdrantConnector(mode="edge", path=str(tmp_path / "edge"), index="a")
    dst = QdrantConnector(mode="local", path=str(tmp_path / "local"), index="b")
    with make_pipeline(encoder, src, "a") as a, make_pipeline(encoder, dst, "b") as b:
        a.open_index(a.index_spec())
        good = Record(id="good", text="t", sparse=SparseVector((7,), (1.0,), ("a",)), payload={})
        bad = Record(id="bad", text="t", sparse=SparseVector((5, 99999), (0.5, 1.0), ("a", "b")), payload={})
        assert not src.write([good, bad]).failed
        with pytest.raises(ConnectorError, match=r"index 'a': record 'bad' has token index 99999, outside"):
            export_index(src, a.vocab, tmp_path / "x.parquet", index="a")
        with pytest.raises(ConnectorError, match=r"record 'bad' has token index 99999"):
            migrate(src, b, source_name="a")
        assert dst.count() == 0


def test_an_export_resumes_only_an_export_of_the_same_index(dataset, encoder, tmp_path):
    """Issue 23 item 5: exporting index 'ib' into a folder holding index 'ia''s export appended
    ("20 written, 0 already there"): the dataset mixed two indexes."""
    from sparsebridge.errors import DatasetError

    out = tmp_path / "out.parquet"
    ia = QdrantConnector(mode="edge", path=str(tmp_path / "edge"), index="ia")
    ib = QdrantConnector(mode="edge", path=str(tmp_path / "edge"), index="ib")
    with make_pipeline(encoder, ia, "ia") as a, make_pipeline(encoder, ib, "ib") as b:
        a.ingest_dataset(dataset)
        assert export_index(ia, a.vocab, out, index="ia").written == N_DOCS
        b.ingest_dataset(dataset)  # the same records: only the source tells the exports apart
        with pytest.raises(DatasetError, match=r"holds an export of index 'ia' \(QdrantConnector\), not an "):
            export_index(ib, b.vocab, out, index="ib")
    elsewhere = QdrantConnector(mode="edge", path=str(tmp_path / "edge2"), index="ia")
    with make_pipeline(encoder, elsewhere, "ia") as c:
        c.ingest_dataset(dataset)  # an index of the same name in another folder
        with pytest.raises(DatasetError, match="at another address"):
            export_index(elsewhere, c.vocab, out, index="ia")
        with pytest.raises(DatasetError, match="holds an export of index 'ia'.*not vectors encoded from a corpus"):
            c.encode_dataset([{"_id": "x", "text": "an encode into an export"}], out)
    assert sorted(arrow_rows(out)) == sorted(arrow_rows(dataset))


def test_an_export_run_again_after_the_index_changed_hands_out_no_stale_row(dataset, encoder, docs, tmp_path):
    """Issue 23 item 6: re-running an export after the index changed kept the old rows ("already
    there"). Unchanged rows are kept; a changed or deleted record makes the export start over."""
    src = QdrantConnector(mode="edge", path=str(tmp_path / "edge"), index="a")
    out, fresh = tmp_path / "out.parquet", tmp_path / "fresh.parquet"
    with make_pipeline(encoder, src, "a") as a:
        a.ingest_dataset(dataset)
        assert export_index(src, a.vocab, out, index="a", part_rows=10).written == N_DOCS
        again = export_index(src, a.vocab, out, index="a", part_rows=10)
        assert (again.written, again.skipped, again.restarted) == (0, N_DOCS, None)
        src.delete([docs[1]["_id"]])
        gone = export_index(src, a.vocab, out, index="a", part_rows=10)
        assert gone.restarted == (
            f"1 records of {out} are no longer in index 'a' (e.g. {docs[1]['_id']!r}); the export started over"
        )
        assert (gone.written, gone.skipped, gone.target_count) == (N_DOCS - 1, 0, N_DOCS - 1)
        a.ingest([{"_id": docs[0]["_id"], "title": docs[0]["title"], "text": "the text changed since the export"}])
        changed = export_index(src, a.vocab, out, index="a", part_rows=10)
        assert changed.restarted.startswith(f"record {docs[0]['_id']!r} of index 'a' changed since {out}")
        export_index(src, a.vocab, fresh, index="a", part_rows=10)
    rows = arrow_rows(out)
    assert rows == arrow_rows(fresh) and len(rows) == N_DOCS - 1
    assert rows[docs[0]["_id"]]["text"] == f"{docs[0]['title']} the text changed since the export"
