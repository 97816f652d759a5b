"""Corpus readers: JSONL, BEIR folders and qrels, and the standard-library docstring corpus."""

from __future__ import annotations

import json

import pytest
from sparsebridge.corpus import (
    STDLIB_DEFAULT_LIMIT,
    CorpusError,
    InvalidDocument,
    open_corpus,
    read_beir_queries,
    read_jsonl,
    read_qrels,
    stdlib_docs,
)


def test_read_jsonl_reports_bad_lines(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"id": 1, "text": "a"}\n\n   \n{oops\n[1, 2]\n{"id": 2, "text": "b"}\n', encoding="utf-8")
    rows = list(read_jsonl(path))
    assert rows[0] == {"id": 1, "text": "a"} and rows[-1] == {"id": 2, "text": "b"}
    assert isinstance(rows[1], InvalidDocument) and rows[1].ref == "docs.jsonl:4"
    assert "not valid JSON" in rows[1].reason
    assert rows[2] == InvalidDocument("docs.jsonl:5", "expected a JSON object, got list")


def test_read_jsonl_reports_invalid_utf8_by_line(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_bytes(b'{"id": 1, "text": "a"}\n{"id": 2, "text": "caf\xe9"}\n{"id": 3, "text": "\xc3\xa9"}\n')
    rows = list(read_jsonl(path))
    assert rows[0]["id"] == 1 and rows[2] == {"id": 3, "text": "\u00e9"}
    assert rows[1] == InvalidDocument("docs.jsonl:2", "not valid UTF-8: byte 0xe9 at column 23")


def test_open_beir_folder_and_file(data_dir):
    folder = open_corpus(data_dir / "cranfield")
    assert folder.id_field == "_id" and folder.text_fields == ("title", "text") and folder.size == 1400
    first = next(iter(folder))
    assert first["_id"] == "1" and first["title"].startswith("experimental investigation")
    file = open_corpus(data_dir / "cranfield" / "corpus.jsonl", limit=10)
    assert file.id_field == "_id" and file.size == 10 and len(list(file)) == 10


def test_open_generic_jsonl(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps({"id": i, "text": f"doc {i}"}) for i in range(5)) + "\n")
    corpus = open_corpus(path)
    assert corpus.id_field is None  # auto: "_id", else "id", else a hash of the text
    assert corpus.size == 5 and [d["id"] for d in corpus] == list(range(5))


def test_missing_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(CorpusError, match="corpus not found: .*nope.jsonl"):
        open_corpus(tmp_path / "nope.jsonl")
    (tmp_path / "empty-dir").mkdir()
    with pytest.raises(CorpusError, match="BEIR corpus not found"):
        open_corpus(tmp_path / "empty-dir")


def test_qrels_and_queries(data_dir, tmp_path):
    qrels = read_qrels(data_dir / "cranfield")
    assert len(qrels) == 225 and qrels["1"]["184"] == 3
    assert read_qrels(data_dir / "cranfield" / "qrels") == qrels
    assert read_qrels(data_dir / "cranfield" / "qrels" / "test.tsv") == qrels
    total = sum(len(v) for v in qrels.values())
    assert total == 1612  # every line but the header
    queries = read_beir_queries(data_dir / "cranfield")
    assert len(queries) == 225 and queries["1"].startswith("what similarity laws")
    bad = tmp_path / "qrels.tsv"
    bad.write_text("query-id\tcorpus-id\tscore\n1\t2\n")
    with pytest.raises(CorpusError, match="qrels.tsv:2"):
        read_qrels(bad)
    with pytest.raises(CorpusError, match="qrels not found"):
        read_qrels(tmp_path, "dev")


def test_stdlib_docs_are_deterministic_and_clean(capsys):
    docs = stdlib_docs()
    assert capsys.readouterr() == ("", "")  # importing the stdlib printed nothing
    assert len(docs) == STDLIB_DEFAULT_LIMIT
    assert docs == stdlib_docs()
    ids = [d["id"] for d in docs]
    assert len(set(ids)) == len(ids)
    assert len({d["text"] for d in docs}) == len(docs)
    assert all(len(d["text"]) >= 60 and d["title"] == d["id"] for d in docs)
    assert {d["kind"] for d in docs} == {"module", "class", "function", "method"}
    modules = {d["module"] for d in docs}
    assert len(modules) > 150  # thinned evenly over the library, not cut off at "m"
    assert any(m.startswith("z") for m in modules)
    everything = stdlib_docs(limit=None)
    assert len(everything) > len(docs)
    by_id = {d["id"]: d for d in everything}
    assert "Serialize" in by_id["json.dumps"]["text"]
    assert "antigravity" not in {d["module"] for d in everything}


def test_stdlib_spec():
    corpus = open_corpus("stdlib:25")
    assert corpus.size == 25 and corpus.id_field == "id" and "module" in corpus.payload_fields
    assert "standard library" in corpus.name
    assert [d["id"] for d in corpus] == [d["id"] for d in stdlib_docs(limit=25)]
    assert open_corpus("stdlib:").size == STDLIB_DEFAULT_LIMIT
    with pytest.raises(CorpusError, match="stdlib:N"):
        open_corpus("stdlib:many")


def test_utf8_bom_on_line_one_is_skipped(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": 1, "text": "a"}\n{"id": 2, "text": "\xef\xbb\xbfb"}\n')
    rows = list(read_jsonl(path))
    # Only the file's byte order mark goes; one inside a later line is that line's text.
    assert rows == [{"id": 1, "text": "a"}, {"id": 2, "text": "\ufeffb"}]
    assert open_corpus(path).size == 2


def test_empty_corpus_and_stdlib_zero_are_errors(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"\xef\xbb\xbf\n \n")
    with pytest.raises(CorpusError, match="is empty: no documents to ingest"):
        open_corpus(empty)
    for spec in ("stdlib:0", "stdlib:-3"):
        with pytest.raises(CorpusError, match="asks for no documents"):
            open_corpus(spec)
    assert stdlib_docs(limit=0) == []


def test_jsonl_corpus_knows_the_line_of_each_document(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"id": 1, "text": "a"}\n\n{"id": 2, "text": "b"}\n{"id": 3, "text": "c"}\n')
    corpus = open_corpus(path, limit=2)
    seen = [(doc["id"], corpus.location()) for doc in corpus]
    assert seen == [(1, "docs.jsonl:1"), (2, "docs.jsonl:3")]


def test_queries_need_an_id_and_a_text(tmp_path):
    for line, needle in (
        ('{"text": "q"}', "queries.jsonl:2: no '_id'"),
        ('{"_id": true, "text": "q"}', "queries.jsonl:2: '_id' True is not a string or an integer"),
        ('{"_id": "q2"}', "queries.jsonl:2: query 'q2' has no 'text' string"),
    ):
        (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "fine"}\n' + line + "\n")
        with pytest.raises(CorpusError, match=needle):
            read_beir_queries(tmp_path)
    (tmp_path / "queries.jsonl").write_text('{"_id": 7, "text": "seven"}\n')
    assert read_beir_queries(tmp_path) == {"7": "seven"}
