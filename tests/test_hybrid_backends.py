"""Hybrid search on Elasticsearch and OpenSearch: what the connectors send (checked against the
official specifications), that the filter holds on both legs, that batches stay batched, the
fallbacks to client-side fusion, and ``[search] hybrid = true`` through the CLI on all three
backends.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("elasticsearch")
pytest.importorskip("opensearchpy")

from lucene_testkit import FakeEngine, FakeServer  # noqa: E402
from sparsebridge.connector import IndexSpec, Query, Record, SearchOptions, SparseVector  # noqa: E402
from sparsebridge_elasticsearch import ElasticsearchConnector  # noqa: E402
from sparsebridge_opensearch import OpenSearchConnector  # noqa: E402
from spec_validation import elasticsearch_validator, opensearch_validator  # noqa: E402

SPEC = IndexSpec("docs", dense_field="dense", dense_size=3, payload_fields={"lang": "keyword"})


def vec(weights: dict[str, float]) -> SparseVector:
    return SparseVector.from_pairs((i, t, w) for i, (t, w) in enumerate(sorted(weights.items())))


DOCS = [
    Record("a", "alpha", vec({"cat": 2.0, "dog": 0.5}), {"lang": "en"}, [1.0, 0.0, 0.0]),
    Record("b", "beta", vec({"cat": 1.0}), {"lang": "fr"}, [0.0, 1.0, 0.0]),
    Record("c", "gamma", vec({"dog": 3.0}), {"lang": "en"}, [0.6, 0.8, 0.0]),
    Record("d", "delta", vec({"cow": 1.0}), {"lang": "en"}, [0.8, 0.6, 0.0]),
]
QUERY = Query(sparse=vec({"cat": 1.0, "dog": 1.0}), dense=[1.0, 0.0, 0.0], filter={"lang": "en"})


@pytest.fixture(scope="module")
def es_spec(specs_dir):
    return elasticsearch_validator(specs_dir)


@pytest.fixture(scope="module")
def os_spec(specs_dir):
    return opensearch_validator(specs_dir)


def open_conn(cls, engine):
    server = FakeServer(engine).__enter__()
    conn = cls(url=server.url, initial_backoff=0.001, max_backoff=0.002)
    conn.ensure_index(SPEC)
    assert not conn.write(DOCS).failed
    return conn, server


@pytest.fixture
def es(request):
    engine = FakeEngine(**getattr(request, "param", {"version": "9.1.0"}))
    conn, server = open_conn(ElasticsearchConnector, engine)
    yield conn, engine
    conn.close()
    server.__exit__(None, None, None)


@pytest.fixture
def ops(request):
    engine = FakeEngine(flavor="opensearch", **getattr(request, "param", {"version": "3.1.0"}))
    conn, server = open_conn(OpenSearchConnector, engine)
    yield conn, engine
    conn.close()
    server.__exit__(None, None, None)


def msearch_bodies(engine):
    return [line for r in engine.calls(r"/_msearch$") for line in r.lines()[1::2]]


# --- Elasticsearch ------------------------------------------------------------------------------


def test_es_rrf_batch_is_one_msearch_of_rrf_retrievers_filtered_on_both_legs(es, es_spec):
    conn, engine = es
    before = len(engine.calls(r"/_msearch$"))
    results = conn.search([QUERY, QUERY, Query(sparse=vec({"cow": 1.0}), dense=[0.0, 1.0, 0.0])])
    calls = engine.calls(r"/_msearch$")[before:]
    assert len(calls) == 1 and len(calls[0].lines()) == 6  # three searches, one request
    es_spec.validate_request(calls[0].method, calls[0].path, calls[0].body)
    body = calls[0].lines()[1]
    rrf = body["retriever"]["rrf"]
    assert rrf["rank_constant"] == 60 and rrf["rank_window_size"] == 100
    standard, knn = rrf["retrievers"]
    assert standard["standard"]["query"]["bool"]["filter"] == [{"term": {"payload.lang": {"value": "en"}}}]
    assert knn["knn"]["filter"] == [{"term": {"payload.lang": {"value": "en"}}}]
    assert knn["knn"]["field"] == "dense" and knn["knn"]["k"] == 100
    es_spec.validate(body["retriever"], "_types.RetrieverContainer")
    # No French document in either leg. Sparse: c 3.0, a 2.5; dense: a, d, c.
    assert [h.id for h in results[0].hits] == ["a", "c", "d"]
    assert [h.score for h in results[0].hits] == pytest.approx([1 / 62 + 1 / 61, 1 / 61 + 1 / 63, 1 / 62])
    assert results[0].notes == [] and results[0].hits[0].payload["text"] == "alpha"


def test_es_linear_sends_minmax_and_normalised_weights(es, es_spec):
    conn, engine = es
    (res,) = conn.search([QUERY], SearchOptions(fusion="linear", weights=(1.0, 3.0), top_k=3))
    body = msearch_bodies(engine)[-1]
    es_spec.validate(body, "_global.search._types.SearchRequestBody")
    inner = body["retriever"]["linear"]["retrievers"]
    assert [(r["weight"], r["normalizer"]) for r in inner] == [(0.25, "minmax"), (0.75, "minmax")]
    # sparse a 2.5 c 3.0 -> a 0, c 1; dense a 1.0, d (1+.8)/2, c (1+.6)/2 -> a 1, d .5, c 0
    assert [h.id for h in res.hits] == ["a", "d", "c"]
    assert [h.score for h in res.hits] == pytest.approx([0.75, 0.375, 0.25])


@pytest.mark.parametrize("es", [{"version": "8.13.4"}], indirect=True)
def test_es_before_retrievers_fuses_the_two_legs_of_one_msearch(es, es_spec):
    conn, engine = es
    before = len(engine.calls(r"/_msearch$"))
    (res,) = conn.search([QUERY])
    (call,) = engine.calls(r"/_msearch$")[before:]
    es_spec.validate_request(call.method, call.path, call.body)
    sparse, dense = call.lines()[1::2]
    assert "retriever" not in sparse and sparse["size"] == 100
    assert dense["knn"]["filter"] == [{"term": {"payload.lang": {"value": "en"}}}] and dense["size"] == 100
    assert [h.id for h in res.hits] == ["a", "c", "d"]
    assert any("8.13.4 has no rrf retriever (8.16+)" in n for n in res.notes)


@pytest.mark.parametrize("es", [{"version": "9.1.0", "license": "basic"}], indirect=True)
def test_es_basic_licence_falls_back_to_client_side_fusion(es):
    conn, engine = es
    before = len(engine.calls(r"/_msearch$"))
    (res,) = conn.search([QUERY])
    calls = engine.calls(r"/_msearch$")[before:]
    assert len(calls) == 2 and "retriever" in calls[0].lines()[1] and "knn" in calls[1].lines()[3]
    assert [h.id for h in res.hits] == ["a", "c", "d"]
    assert any("non-compliant" in n and "fused on the client" in n for n in res.notes)
    # Remembered: the next hybrid search goes straight to the two legs, one request.
    (again,) = conn.search([QUERY])
    (call,) = engine.calls(r"/_msearch$")[before + 2 :]
    assert all("retriever" not in body for body in call.lines()[1::2])
    assert again.notes == res.notes and [h.id for h in again.hits] == ["a", "c", "d"]


def test_es_dense_only_query_is_a_filtered_knn_search(es, es_spec):
    conn, engine = es
    (res,) = conn.search([Query(dense=[0.0, 1.0, 0.0], filter={"lang": "en"})], SearchOptions(top_k=2))
    body = msearch_bodies(engine)[-1]
    es_spec.validate(body, "_global.search._types.SearchRequestBody")
    assert set(body) == {"size", "knn", "track_total_hits", "_source"}
    assert [h.id for h in res.hits] == ["c", "d"]  # b is French
    assert res.hits[0].score == pytest.approx((1 + 0.8) / 2)


def test_es_dbsf_is_fused_on_the_client_with_a_note(es):
    conn, _ = es
    (res,) = conn.search([QUERY], SearchOptions(fusion="dbsf"))
    assert {h.id for h in res.hits} == {"a", "c", "d"}
    assert any("'dbsf' has no Elasticsearch retriever" in n for n in res.notes)


def test_a_wrong_dense_dimension_is_one_clear_error(es):
    from sparsebridge.errors import SparsebridgeError

    conn, _ = es
    with pytest.raises(SparsebridgeError, match=r"query 0: dense vector has 2 dimensions, index 'docs' stores 3"):
        conn.search([Query(sparse=vec({"cat": 1.0}), dense=[1.0, 0.0])])


# --- OpenSearch ---------------------------------------------------------------------------------


def test_os_linear_puts_a_valid_pipeline_once_and_searches_through_it(ops, os_spec):
    conn, engine = ops
    opts = SearchOptions(fusion="linear", weights=(1.0, 3.0), top_k=3)
    (res,) = conn.search([QUERY], opts)
    conn.search([QUERY], opts)
    (put,) = engine.calls(r"^/_search/pipeline/", "PUT")
    name = put.path.rsplit("/", 1)[1]
    assert name.startswith("sparsebridge-hybrid-linear-")
    os_spec.validate(put.json(), "search_pipeline._common:SearchPipelineStructure")
    processor = put.json()["phase_results_processors"][0]["normalization-processor"]
    assert processor["normalization"] == {"technique": "min_max"}
    assert processor["combination"] == {"technique": "arithmetic_mean", "parameters": {"weights": [0.25, 0.75]}}
    searches = engine.calls(r"^/docs/_search$")
    assert len(searches) == 2 and searches[0].query["search_pipeline"] == [name]
    body = searches[0].json()
    os_spec.validate(body, "request:_core/search")
    sparse, knn = body["query"]["hybrid"]["queries"]
    assert sparse["bool"]["filter"] == [{"term": {"payload.lang": {"value": "en"}}}]
    assert knn["knn"]["dense"]["filter"] == {"bool": {"filter": [{"term": {"payload.lang": {"value": "en"}}}]}}
    # Like Elasticsearch's linear retriever, except that OpenSearch floors a leg's minimum at 0.001.
    assert [h.id for h in res.hits] == ["a", "d", "c"]
    assert [h.score for h in res.hits] == pytest.approx([0.75 + 0.00025, 0.375, 0.25 + 0.00075], abs=1e-6)


def test_os_rrf_uses_the_score_ranker_processor(ops, os_spec):
    conn, engine = ops
    (res,) = conn.search([QUERY], SearchOptions(rrf_k=7))
    (put,) = engine.calls(r"^/_search/pipeline/", "PUT")
    os_spec.validate(put.json(), "search_pipeline._common:SearchPipelineStructure")
    assert put.json()["phase_results_processors"] == [
        {"score-ranker-processor": {"combination": {"technique": "rrf", "rank_constant": 7}}}
    ]
    assert [h.id for h in res.hits] == ["a", "c", "d"] and res.hits[0].score == pytest.approx(1 / 9 + 1 / 8)


def test_os_without_the_right_to_put_pipelines_fuses_on_the_client(ops):
    conn, engine = ops
    engine.fail_requests(r"^/_search/pipeline/", 403)
    (res,) = conn.search([QUERY], SearchOptions(rrf_k=7))
    assert engine.calls(r"^/docs/_search$") == []
    assert [h.id for h in res.hits] == ["a", "c", "d"] and res.hits[0].score == pytest.approx(1 / 9 + 1 / 8)
    assert any("cannot put search pipeline" in n and "HTTP 403" in n and "on the client" in n for n in res.notes)


@pytest.mark.parametrize("ops", [{"version": "2.17.0"}], indirect=True)
def test_os_before_2_19_fuses_rrf_on_the_client(ops, os_spec):
    conn, engine = ops
    res, _ = conn.search([QUERY, QUERY], SearchOptions(rrf_k=7))
    assert engine.calls(r"^/_search/pipeline/") == [] and engine.calls(r"^/docs/_search$") == []
    (call,) = engine.calls(r"/_msearch$")
    os_spec.validate_request(call.method, call.path, call.body)
    assert len(call.lines()) == 8  # two queries x (sparse leg, dense leg)
    assert [h.id for h in res.hits] == ["a", "c", "d"] and res.hits[0].score == pytest.approx(1 / 9 + 1 / 8)
    assert any("no score-ranker-processor" in n for n in res.notes)


def test_os_dense_only_and_dbsf(ops, os_spec):
    conn, engine = ops
    (dense,) = conn.search([Query(dense=[0.0, 1.0, 0.0], filter={"lang": "en"})], SearchOptions(top_k=2))
    assert [h.id for h in dense.hits] == ["c", "d"] and dense.hits[0].score == pytest.approx(0.9)
    (dbsf,) = conn.search([QUERY], SearchOptions(fusion="dbsf"))
    assert {h.id for h in dbsf.hits} == {"a", "c", "d"}
    assert any("'dbsf' has no OpenSearch search processor" in n for n in dbsf.notes)
    for call in engine.calls(r"/_msearch$"):
        os_spec.validate_request(call.method, call.path, call.body)


def test_os_knn_field_and_index_settings_validate(ops, os_spec):
    _, engine = ops
    (create,) = engine.calls(r"^/docs$", "PUT")
    os_spec.validate_request(create.method, create.path, create.body)
    assert create.json()["settings"]["index"]["knn"] is True


# --- the CLI, all three backends ------------------------------------------------------------------


@pytest.fixture(scope="module")
def dense_encoder(minilm_path):
    from sparsebridge import DenseEncoder

    return DenseEncoder(str(minilm_path), device="cpu")


@pytest.mark.parametrize("backend", ["qdrant", "elasticsearch", "opensearch"])
def test_cli_hybrid_true_works_the_same_on_every_backend(
    backend, encoder, dense_encoder, monkeypatch, tmp_path, es_spec, os_spec
):
    import sparsebridge.config.builder
    from click.testing import CliRunner
    from pipeline_support import serve_encoder
    from sparsebridge.cli import main

    monkeypatch.delenv("SPARSEBRIDGE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    serve_encoder(monkeypatch, encoder)
    monkeypatch.setattr(sparsebridge.config.builder, "load_dense_encoder", lambda name, device=None: dense_encoder)
    corpus = tmp_path / "docs.jsonl"
    rows = [
        {"id": "wing", "text": "the lift of a wing in a slipstream", "lang": "en"},
        {"id": "heat", "text": "heat transfer in hypersonic flow", "lang": "en"},
        {"id": "boat", "text": "a sailing boat on the lake", "lang": "en"},
        {"id": "fr", "text": "la portance d'une aile", "lang": "fr"},
    ]
    corpus.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    engine = None
    with FakeServer(FakeEngine(flavor=backend, version="9.1.0" if backend == "elasticsearch" else "3.1.0")) as srv:
        engine = srv.engine
        section = {
            "qdrant": f'connector = "qdrant"\nmode = "edge"\npath = "{tmp_path / "edge"}"',
            "elasticsearch": f'connector = "elasticsearch"\nurl = "{srv.url}"',
            "opensearch": f'connector = "opensearch"\nurl = "{srv.url}"',
        }[backend]
        config = tmp_path / "hybrid.toml"
        config.write_text(
            f'[backend]\n{section}\nindex = "docs"\n\n[ingest]\npayload_fields = {{ lang = "keyword" }}\n\n'
            "[search]\nhybrid = true\ntop_k = 3\n",
            encoding="utf-8",
        )
        runner = CliRunner()
        out = runner.invoke(main, ["ingest", str(corpus), "--config", str(config), "--quiet"], catch_exceptions=False)
        assert out.exit_code == 0, out.output
        out = runner.invoke(
            main,
            ["search", "wing lift", "--filter", "lang=en", "--config", str(config), "--json", "-q"],
            catch_exceptions=False,
        )
        assert out.exit_code == 0, out.output
    (result,) = json.loads(out.stdout)
    hits = [h["id"] for h in result["hits"]]
    assert hits[0] == "wing" and "fr" not in hits and len(hits) == 3
    if backend == "elasticsearch":
        assert any("retriever" in line for r in engine.calls(r"/_msearch$") for line in r.lines())
    if backend == "opensearch":
        assert "hybrid" in engine.calls(r"^/docs/_search$")[-1].json()["query"]
    # Every request the CLI sent (ingest, then hybrid search) is valid against the specification.
    for req in engine.requests if backend != "qdrant" else []:
        if req.path.startswith("/_search/pipeline/"):
            os_spec.validate(req.json(), "search_pipeline._common:SearchPipelineStructure")
        else:
            (es_spec if backend == "elasticsearch" else os_spec).validate_request(req.method, req.path, req.body)


@pytest.mark.parametrize(
    ("flavor", "version"),
    [("elasticsearch", "9.1.0"), ("elasticsearch", "8.13.4"), ("opensearch", "2.17.1"), ("opensearch", "3.1.0")],
)
def test_cli_plain_commands_send_only_valid_requests(flavor, version, encoder, monkeypatch, tmp_path, es_spec, os_spec):
    """`ingest`, plain (sparse) `search`, `eval` (with --exact-recall) and `export` through the CLI
    against the engine double of each engine generation: every request the official clients sent,
    and every answer the double gave, is valid against the official specification under strict
    rules (closed objects)."""
    from click.testing import CliRunner
    from pipeline_support import serve_encoder
    from sparsebridge.cli import main

    monkeypatch.delenv("SPARSEBRIDGE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    serve_encoder(monkeypatch, encoder)
    beir = tmp_path / "mini"
    (beir / "qrels").mkdir(parents=True)
    rows = [
        {"_id": "wing", "title": "wings", "text": "the lift of a wing in a slipstream", "lang": "en"},
        {"_id": "heat", "title": "heat", "text": "heat transfer in hypersonic flow", "lang": "en"},
        {"_id": "boat", "title": "boats", "text": "a sailing boat on the lake", "lang": "en"},
        {"_id": "fr", "title": "aile", "text": "la portance d'une aile", "lang": "fr"},
    ]
    (beir / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "wing lift"}\n{"_id": "q2", "text": "hot flow"}\n')
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\twing\t1\nq2\theat\t1\n")
    validator = es_spec if flavor == "elasticsearch" else os_spec
    with FakeServer(FakeEngine(flavor=flavor, version=version)) as srv:
        engine = srv.engine
        config = tmp_path / "plain.toml"
        config.write_text(
            f'[backend]\nconnector = "{flavor}"\nurl = "{srv.url}"\nindex = "docs"\n\n'
            '[ingest]\npayload_fields = { lang = "keyword" }\n',
            encoding="utf-8",
        )
        runner = CliRunner()

        def run(*args):
            out = runner.invoke(main, [*args, "--config", str(config), "--json", "-q"], catch_exceptions=False)
            assert out.exit_code == 0, out.output
            return json.loads(out.stdout)

        assert run("ingest", str(beir / "corpus.jsonl"))["written"] == 4
        (result,) = run("search", "wing lift", "--filter", "lang=en", "-k", "3")
        figures = run("eval", str(beir), "--exact-recall")
        exported = run("export", "--output", str(tmp_path / "out.parquet"))
    hits = [h["id"] for h in result["hits"]]
    assert hits[0] == "wing" and "fr" not in hits
    assert figures["queries"] == 2 and figures["exact_recall"]["sparse"]["recall"] == 1.0
    assert exported["read"] == 4 and not exported["failed"]
    kinds = {"_bulk", "_msearch", "_search/scroll", "_search"}
    seen = {k for req in engine.requests for k in kinds if req.path.split("?")[0].endswith(k)}
    assert seen == kinds, seen  # writes, searches, and the export's scroll all went through the check
    for req in engine.requests:
        validator.validate_request(req.method, req.path, req.body)
        validator.validate_response(req.method, req.path, req.status, req.response)


# --- the [search] keys ----------------------------------------------------------------------------


def test_search_fusion_linear_and_weights_from_the_config(tmp_path):
    from sparsebridge.config import ConfigError, load_config

    path = tmp_path / "s.toml"
    path.write_text('[search]\nhybrid = true\nfusion = "linear"\nweights = { sparse = 0.25, dense = 0.75 }\n')
    search = load_config(path, check_connector=False).search
    assert (search.fusion, search.weights) == ("linear", (0.25, 0.75))
    assert load_config(None, check_connector=False).search.weights == (1.0, 1.0)
    for bad, problem in [
        ("weights = { sparse = -1 }", r"\[search\] weights.sparse = -1: expected a number >= 0"),
        ("weights = { sparse = 1, dens = 2 }", r"unknown leg 'dens'"),
        ("weights = { sparse = 0, dense = 0 }", r"must not both be 0"),
        ('fusion = "convex"', r"\[search\] fusion = 'convex': allowed: 'rrf', 'dbsf', 'linear'"),
    ]:
        path.write_text(f"[search]\n{bad}\n")
        with pytest.raises(ConfigError, match=problem):
            load_config(path, check_connector=False)


def test_search_options_refuse_bad_weights():
    with pytest.raises(ValueError, match="weights must be two finite numbers"):
        SearchOptions(weights=(1.0, float("nan")))
    with pytest.raises(ValueError, match="must not both be 0"):
        SearchOptions(weights=(0, 0))
    assert SearchOptions(weights=(1, 3)).normalized_weights == (0.25, 0.75)


def test_os_hybrid_search_is_retried_on_429(ops):
    conn, engine = ops
    conn.search([QUERY])  # the pipeline is in place
    engine.fail_requests(r"^/docs/_search$", 429, 503)
    (res,) = conn.search([QUERY])
    assert len(engine.calls(r"^/docs/_search$")) == 4  # first search, then 429, 503, ok
    assert [h.id for h in res.hits] == ["a", "c", "d"]
