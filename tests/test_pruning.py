"""Pruning and quantization that fit the model.

Elasticsearch 8.19+/9.1+ prunes new ``sparse_vector`` fields by default, so the connector sets
``index_options`` explicitly at index creation (exact unless the config asks) and sends ``prune``
with every query. OpenSearch SEISMIC quantizes weights up to ``quantization_ceiling_ingest``
(default 3) and clips the rest, so the connector derives the ceilings from the weights it ingests,
records them in the index metadata and reports clipping.
"""

from __future__ import annotations

import logging

import pytest

pytest.importorskip("elasticsearch")
pytest.importorskip("opensearchpy")

from lucene_testkit import FakeEngine, FakeServer  # noqa: E402
from sparsebridge.connector import IndexSpec, Query, Record, SearchOptions, SparseVector  # noqa: E402
from sparsebridge.errors import SparsebridgeError  # noqa: E402
from sparsebridge_elasticsearch import ElasticsearchConnector  # noqa: E402
from sparsebridge_opensearch import OpenSearchConnector  # noqa: E402
from sparsebridge_opensearch.connector import derive_ceiling  # noqa: E402
from spec_validation import elasticsearch_validator, opensearch_validator  # noqa: E402


def vec(weights: dict[str, float]) -> SparseVector:
    return SparseVector.from_pairs((i, t, w) for i, (t, w) in enumerate(sorted(weights.items())))


DOCS = [
    Record("a", "alpha", vec({"cat": 4.7, "dog": 0.5}), {}, [1.0, 0.0]),
    Record("b", "beta", vec({"cat": 1.0, "cow": 3.5}), {}, [0.0, 1.0]),
]


def walk(node):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


# --- Elasticsearch: index_options and prune ------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "flavor", "expected"),
    [
        ("8.18.2", "default", None),
        ("8.19.0", "default", {"prune": False}),
        ("9.0.3", "default", None),
        ("9.1.0", "default", {"prune": False}),
        ("9.2.0", "serverless", {"prune": False}),
    ],
)
def test_es_sets_index_options_explicitly_where_the_field_has_them(version, flavor, expected, specs_dir):
    engine = FakeEngine(version=version, build_flavor=flavor)
    with FakeServer(engine) as srv, ElasticsearchConnector(url=srv.url) as conn:
        conn.ensure_index(IndexSpec("docs"))
        (create,) = engine.calls(r"^/docs$", "PUT")
        elasticsearch_validator(specs_dir).validate_request(create.method, create.path, create.body)
        assert create.json()["mappings"]["properties"]["sparse"].get("index_options") == expected


def test_es_configured_index_options_are_sent_as_given(specs_dir):
    options = {"prune": True, "pruning_config": {"tokens_freq_ratio_threshold": 10, "tokens_weight_threshold": 0.3}}
    engine = FakeEngine(version="9.1.0")
    with FakeServer(engine) as srv, ElasticsearchConnector(url=srv.url) as conn:
        conn.ensure_index(IndexSpec("docs", options={"sparse_index_options": options}))
        (create,) = engine.calls(r"^/docs$", "PUT")
        elasticsearch_validator(specs_dir).validate_request(create.method, create.path, create.body)
        assert create.json()["mappings"]["properties"]["sparse"]["index_options"] == options


def test_es_index_options_on_a_version_without_them_is_one_clear_error():
    engine = FakeEngine(version="9.0.3")
    with FakeServer(engine) as srv, ElasticsearchConnector(url=srv.url) as conn:
        with pytest.raises(SparsebridgeError, match=r"sparse_index_options need Elasticsearch 8.19\+ or 9.1\+.*9.0.3"):
            conn.ensure_index(IndexSpec("docs", options={"sparse_index_options": {"prune": False}}))
        assert engine.calls(r"^/docs$", "PUT") == []


@pytest.mark.parametrize("fusion", [None, "rrf", "dbsf"])
def test_es_every_sparse_vector_query_says_prune(fusion, specs_dir):
    engine = FakeEngine(version="9.1.0")
    with FakeServer(engine) as srv, ElasticsearchConnector(url=srv.url) as conn:
        conn.ensure_index(IndexSpec("docs", dense_field="dense", dense_size=2))
        assert not conn.write(DOCS).failed
        dense = None if fusion is None else [1.0, 0.0]
        opts = SearchOptions(fusion=fusion or "rrf")
        conn.search([Query(sparse=vec({"cat": 1.0}), dense=dense)], opts)
        pruned = SearchOptions(fusion=fusion or "rrf", backend_options={"prune": True})
        conn.search([Query(sparse=vec({"cat": 1.0}), dense=dense)], pruned)
        clauses = [
            n["sparse_vector"]
            for r in engine.calls(r"/_msearch$")
            for n in walk(r.lines())
            if isinstance(n.get("sparse_vector"), dict)
        ]
        assert [c["prune"] for c in clauses] == [False, True]  # one sparse clause per search, prune explicit
        for r in engine.calls(r"/_msearch$"):
            elasticsearch_validator(specs_dir).validate_request(r.method, r.path, r.body)


# --- OpenSearch SEISMIC: ceilings that fit the weights -------------------------------------------


@pytest.mark.parametrize(("top", "ceiling"), [(2.0, 2.4), (4.7, 5.7), (0.3, 0.36), (12.5, 15.0), (3.0, 3.6)])
def test_derive_ceiling(top, ceiling):
    assert derive_ceiling(top) == pytest.approx(ceiling)
    assert derive_ceiling(top) >= top * 1.2 - 1e-9


@pytest.fixture
def seismic():
    engine = FakeEngine(flavor="opensearch", version="3.3.0")
    with FakeServer(engine) as srv:
        conn = OpenSearchConnector(url=srv.url, sparse_field_type="sparse_vector")
        yield conn, engine
        conn.close()


def test_seismic_ceilings_come_from_the_first_batch_and_are_recorded(seismic, specs_dir):
    conn, engine = seismic
    conn.ensure_index(IndexSpec("docs", metadata={"model": "m"}))
    assert conn.index_metadata() is None and engine.calls(r"^/docs$", "PUT") == []
    result = conn.write(DOCS)
    assert not result.failed and result.notes == []
    (create,) = engine.calls(r"^/docs$", "PUT")
    opensearch_validator(specs_dir).validate_request(create.method, create.path, create.body)
    params = create.json()["mappings"]["properties"]["sparse"]["method"]["parameters"]
    assert params == {"quantization_ceiling_ingest": 5.7, "quantization_ceiling_search": 16.0}
    meta = conn.index_metadata()
    assert meta["model"] == "m"
    assert meta["seismic_quantization"] == {
        "quantization_ceiling_ingest": 5.7,
        "quantization_ceiling_search": 16.0,
        "max_weight_seen": 4.7,
        "source": "derived from the largest weight of the first 2 records",
    }
    assert conn.current_ceilings() == (5.7, 16.0)


def test_seismic_reports_weights_above_the_ceiling(seismic, caplog):
    conn, _ = seismic
    conn.ensure_index(IndexSpec("docs"))
    conn.write(DOCS[1:])  # largest weight 3.5 -> ceiling 4.2
    with caplog.at_level(logging.WARNING, logger="sparsebridge.opensearch"):
        result = conn.write(DOCS[:1])  # 4.7 > 4.2
    assert result.notes == [
        "weights above the index's SEISMIC quantization_ceiling_ingest 4.2 were clipped to it by OpenSearch; "
        "re-create the index with a higher ceiling to keep them"
    ]
    assert "1 weight(s) of this batch" in caplog.text and "quantization_ceiling_ingest 4.2" in caplog.text
    (res,) = conn.search([Query(sparse=vec({"cat": 20.0}))])
    assert any("query weight(s) above the index's SEISMIC quantization_ceiling_search 16" in n for n in res.notes)


def test_seismic_configured_ceilings_are_kept_and_existing_index_read_back(seismic):
    conn, engine = seismic
    conn.ensure_index(IndexSpec("docs", options={"quantization_ceiling_ingest": 3.0}))
    (create,) = engine.calls(r"^/docs$", "PUT")  # created at once: nothing to derive
    body = create.json()["mappings"]
    assert body["properties"]["sparse"]["method"]["parameters"] == {"quantization_ceiling_ingest": 3.0}
    assert body["_meta"]["seismic_quantization"]["source"] == "configured"
    assert conn.write(DOCS).notes  # 4.7 and 3.5 exceed the configured 3
    other = OpenSearchConnector(url=conn.url, index="docs", sparse_field_type="sparse_vector")
    assert other.current_ceilings() == (3.0, 16.0)  # search ceiling: OpenSearch's default
    other.close()


def test_seismic_ceiling_fits_real_splade_weights(seismic, encoder, data_dir):
    """The packaged SPLADE model's document weights: the derived ceiling is above every one."""
    import json

    from lucene_testkit import encode_rows

    conn, engine = seismic
    with open(data_dir / "cranfield" / "corpus.jsonl", encoding="utf-8") as fh:
        rows = [json.loads(line) for line, _ in zip(fh, range(12))]
    texts = [f"{r.get('title', '')} {r['text']}" for r in rows]
    vectors = encode_rows(encoder.encode_document, texts, encoder.tokenizer)
    records = [Record(r["_id"], t, v) for r, t, v in zip(rows, texts, vectors)]
    top = max(max(v.values) for v in vectors)
    conn.ensure_index(IndexSpec("cran"))
    assert not conn.write(records).notes
    ingest, _ = conn.current_ceilings()
    assert top < ingest <= derive_ceiling(top)


def test_seismic_clipping_note_reaches_the_ingest_report_once(encoder, monkeypatch, tmp_path, specs_dir):
    """Through the CLI: a ceiling below the packaged SPLADE model's weights clips some of them in
    every batch; `sparsebridge ingest` says so once, in text and in --json."""
    import json

    from click.testing import CliRunner
    from pipeline_support import serve_encoder
    from sparsebridge.cli import main

    monkeypatch.delenv("SPARSEBRIDGE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    serve_encoder(monkeypatch, encoder)
    corpus = tmp_path / "docs.jsonl"
    texts = ["the lift of a wing in a slipstream", "heat transfer in hypersonic flow", "a sailing boat on the lake"]
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts * 3)))
    engine = FakeEngine(flavor="opensearch", version="3.3.0")
    note = (
        "weights above the index's SEISMIC quantization_ceiling_ingest 0.5 were clipped to it by OpenSearch; "
        "re-create the index with a higher ceiling to keep them"
    )
    with FakeServer(engine) as srv:
        config = tmp_path / "os.toml"
        config.write_text(
            f'[model]\nbatch_size = 1\n\n[backend]\nconnector = "opensearch"\nurl = "{srv.url}"\nindex = "docs"\n'
            'sparse_field_type = "sparse_vector"\n\n[backend.index_options]\nquantization_ceiling_ingest = 0.5\n'
        )
        runner = CliRunner()
        text = runner.invoke(main, ["ingest", str(corpus), "--config", str(config), "-q"], catch_exceptions=False)
        data = runner.invoke(main, ["ingest", str(corpus), "--config", str(config), "--json", "-q"])
        # eval ingests a missing index the same way and prints the ingest's notes too.
        beir = tmp_path / "beir"
        (beir / "qrels").mkdir(parents=True)
        (beir / "corpus.jsonl").write_text(corpus.read_text().replace('"id"', '"_id"'))
        (beir / "queries.jsonl").write_text('{"_id": "q", "text": "wing lift"}\n')
        (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq\td0\t1\n")
        evaluated = runner.invoke(main, ["eval", str(beir), "--config", str(config), "--index", "ev", "-q"])
    assert text.exit_code == 0 and data.exit_code == 0, text.output + data.output
    assert len(engine.calls(r"/_bulk$")) == 9  # nine records, four per write: three writes per ingest
    assert text.stdout.count("note: ") == 1 and f"  note: {note}\n" in text.stdout
    assert json.loads(data.stdout)["notes"] == [note]
    assert evaluated.exit_code == 0, evaluated.output
    assert evaluated.stdout.count("note: ") == 1 and f"  note: {note}\n" in evaluated.stdout
    validator = opensearch_validator(specs_dir)
    for req in engine.requests:
        validator.validate_request(req.method, req.path, req.body)


def test_es_search_options_override_the_fields_pruning(specs_dir):
    options = {"prune": True, "pruning_config": {"tokens_freq_ratio_threshold": 1, "tokens_weight_threshold": 0.5}}
    engine = FakeEngine(version="9.1.0")
    with FakeServer(engine) as srv, ElasticsearchConnector(url=srv.url) as conn:
        conn.ensure_index(IndexSpec("docs", options={"sparse_index_options": options}))
        assert not conn.write(DOCS).failed
        query = [Query(sparse=vec({"cat": 1.0, "dog": 0.1}))]
        conn.search(query)  # the field's pruning
        conn.search(query, SearchOptions(backend_options={"prune": False}))
        conn.search(query, SearchOptions(backend_options={"pruning_config": {"tokens_weight_threshold": 0.2}}))
        clauses = [r.lines()[1]["query"]["sparse_vector"] for r in engine.calls(r"/_msearch$")]
        assert [(c["prune"], c.get("pruning_config")) for c in clauses] == [
            (True, options["pruning_config"]),
            (False, None),
            (True, {"tokens_weight_threshold": 0.2}),
        ]
        # A connector that did not create the index reads the field's options from the mapping.
        other = ElasticsearchConnector(url=srv.url, index="docs")
        other.search(query)
        assert engine.calls(r"/_msearch$")[-1].lines()[1]["query"]["sparse_vector"]["prune"] is True
        other.close()
        for r in engine.calls(r"/_msearch$"):
            elasticsearch_validator(specs_dir).validate_request(r.method, r.path, r.body)


@pytest.mark.parametrize(
    ("threshold", "backend", "expected"),
    [
        # Below approximate_threshold documents the segment is searched exactly.
        (100, {}, ["a", "b", "c", "d", "e"]),
        # Posting lists keep their n_postings = 2 heaviest documents: "2" -> d, e (c's 0.1 is cut),
        # "1" -> a, b: c (exact score 3.05) is never found.
        (0, {}, ["a", "b", "d", "e"]),
        # top_n = 1: only the heaviest query token's posting list is walked.
        (0, {"top_n": 1}, ["a", "b"]),
        # k = 3: the best three of what was found.
        (0, {"k": 3}, ["a", "b", "d"]),
    ],
)
def test_engine_double_seismic_follows_neural_search(threshold, backend, expected):
    """The engine double's SEISMIC approximate search, by neural-search's documented parameters
    (n_postings, approximate_threshold, top_n, k); the whole query scores what was found."""
    engine = FakeEngine(flavor="opensearch", version="3.3.0")
    docs = {"a": {1: 5.0}, "b": {1: 4.0}, "c": {1: 3.0, 2: 0.1}, "d": {2: 6.0}, "e": {1: 1.0, 2: 1.0}}
    options = {"quantization_ceiling_ingest": 8.0, "approximate_threshold": threshold, "n_postings": 2}
    with FakeServer(engine) as srv:
        conn = OpenSearchConnector(url=srv.url, sparse_field_type="sparse_vector")
        conn.ensure_index(IndexSpec("docs", options=options))
        records = [
            Record(d, d, SparseVector.from_pairs((i, f"t{i}", w) for i, w in v.items())) for d, v in docs.items()
        ]
        assert not conn.write(records).failed
        query = Query(sparse=SparseVector.from_pairs([(1, "t1", 1.0), (2, "t2", 0.5)]))
        (res,) = conn.search([query], SearchOptions(top_k=10, backend_options=backend))
        conn.close()
    assert [h.id for h in res.hits] == expected
    exact = {"a": 5.0, "b": 4.0, "c": 3.05, "d": 3.0, "e": 1.5}
    assert [h.score for h in res.hits] == pytest.approx([exact[d] for d in expected], rel=2**-7)
