"""``sparsebridge eval --exact-recall``: what pruning costs, as the recall of the exact top 10.

Qdrant Edge (a real engine, exact sparse search) must score 1.0. Elasticsearch runs through the
engine double of ``lucene_testkit`` (no Elasticsearch server can run here), whose token pruning is
held to Elasticsearch's own YAML REST tests in ``test_engine_double.py``: exact (``prune: false``)
it scores 1.0; with the field's ``index_options`` pruning the query, the figure drops below 1.0 and
equals one computed independently (a brute-force ranking of the test's own encoding, ir_measures'
R@10).
"""

from __future__ import annotations

import json

import ir_measures
import pytest
from click.testing import CliRunner
from pipeline_support import beir, brute_force_ranking, caching_encoder, doc_text, serve_encoder
from sparsebridge.cli import main
from sparsebridge.connector import Record, SparseVector
from sparsebridge.exact_recall import exact_recall

pytest.importorskip("qdrant_edge")

N_DOCS, N_QUERIES = 300, 12


def vec(weights: dict[int, float]) -> SparseVector:
    return SparseVector.from_pairs((i, f"t{i}", w) for i, w in weights.items())


# --- the definition ---------------------------------------------------------------------------------


def records(scores: dict[str, float]) -> list[Record]:
    """Documents whose dot product with ``vec({1: 1.0})`` is the given score."""
    return [Record(d, d, vec({1: s, 2: 5.0})) for d, s in scores.items()]


def test_recall_counts_the_exact_top_k_found_by_the_engine():
    docs = records({f"d{i}": 20.0 - i for i in range(15)})  # d0 best ... d14
    query = vec({1: 1.0})
    exact = [f"d{i}" for i in range(10)]
    engine = [f"d{i}" for i in range(8)] + ["d12", "d13"]  # two of the exact ten missed
    got = exact_recall([query, query], [exact, engine], [docs[:7], docs[7:]], k=10)
    assert got["per_query"] == [1.0, 0.8] and got["recall"] == pytest.approx(0.9)
    assert (got["queries"], got["documents"], got["queries_without_matches"]) == (2, 15, 0)
    # The same figure from ir_measures, the exact top ten as the relevant set.
    qrels = [ir_measures.Qrel("q", d, 1) for d in exact]
    run = [ir_measures.ScoredDoc("q", d, 10.0 - r) for r, d in enumerate(engine)]
    assert ir_measures.calc_aggregate([ir_measures.R @ 10], qrels, run)[ir_measures.R @ 10] == pytest.approx(0.8)


def test_ties_at_the_cut_and_few_matches():
    # d9 and d10 tie for the tenth place: either one completes the exact top ten.
    scores = {f"d{i}": 20.0 - i for i in range(10)} | {"d10": 11.0, "d11": 1.0}
    query = vec({1: 1.0})
    swapped = [f"d{i}" for i in range(9)] + ["d10"]
    assert exact_recall([query], [swapped], [records(scores)], k=10)["per_query"] == [1.0]
    # Within the engine's score precision (rtol) a lower exact score is a tie too; beyond it, a miss.
    scores["d10"] = 11.0 * (1 - 1e-4)
    assert exact_recall([query], [swapped], [records(scores)], k=10, rtol=1e-3)["per_query"] == [1.0]
    assert exact_recall([query], [swapped], [records(scores)], k=10, rtol=1e-6)["per_query"] == [0.9]
    # Three documents share a token with the query: the exact "top ten" is those three.
    few = [Record("a", "a", vec({1: 1.0})), Record("b", "b", vec({1: 2.0})), Record("c", "c", vec({1: 0.5}))]
    few.append(Record("z", "z", vec({3: 1.0})))
    assert exact_recall([query], [["b", "a"]], [few], k=10)["per_query"] == [pytest.approx(2 / 3)]
    # A query that shares no token with any document has nothing to find.
    got = exact_recall([vec({7: 1.0}), query], [[], ["b", "a", "c"]], [few], k=10)
    assert got["per_query"] == [None, 1.0] and got["recall"] == 1.0 and got["queries_without_matches"] == 1


# --- through the CLI ---------------------------------------------------------------------------------


def exact_ranking(encoder, docs, texts, k):
    """The test's own brute force: every query's best ``k`` documents, exact (float64)."""
    enc = caching_encoder(encoder)
    doc_vectors = enc.encode_document([doc_text(d) for d in docs])
    return brute_force_ranking(enc.encode_query(texts), doc_vectors, [d["_id"] for d in docs], k)


def tie_at_cut(ranked, k=10):
    """Whether the k-th and the next exact score lie within Lucene's precision (2**-7) of each other."""
    return len(ranked) > k and ranked[k][1] >= ranked[k - 1][1] * (1 - 2**-7)


@pytest.fixture(scope="module")
def small_beir(tmp_path_factory, data_dir, encoder):
    """The first 300 Cranfield documents and 12 of the queries judged on them, as a BEIR folder.

    Queries whose 10th and 11th exact scores tie (within Lucene's precision) are left out, so that
    ir_measures' R@10 against the exact top ten is the definition with ties (which the unit tests
    above cover) and serves as the independent figure.
    """
    docs, queries, qrels = beir(str(data_dir / "cranfield"))
    docs = [d for d in docs[:N_DOCS] if doc_text(d)]
    ids = {d["_id"] for d in docs}
    judged = [q for q in queries if q in qrels and any(d in ids for d in qrels[q])][: 2 * N_QUERIES]
    ranked = exact_ranking(encoder, docs, [queries[q] for q in judged], 11)
    qids = [q for q, r in zip(judged, ranked) if not tie_at_cut(r)][:N_QUERIES]
    assert len(qids) == N_QUERIES
    root = tmp_path_factory.mktemp("cran300")
    (root / "qrels").mkdir()
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": queries[q]}) + "\n" for q in qids), encoding="utf-8"
    )
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q in qids for d, s in qrels[q].items()]
    (root / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root, docs, [queries[q] for q in qids]


@pytest.fixture
def run_cli(monkeypatch, tmp_path, encoder):
    """The CLI in-process, the packaged SPLADE model served through one session-wide cache."""
    monkeypatch.delenv("SPARSEBRIDGE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    serve_encoder(monkeypatch, encoder)

    def run(*args):
        result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout

    return run


def independent_recall(encoder, docs, texts, rankings, k=10):
    """R@10 of the engine's rankings against the exact top ten of the test's own brute force
    (ir_measures); checks first that no exact score ties across the cut, where R@10 would differ."""
    qrels, run = [], []
    for n, (ranked, engine) in enumerate(zip(exact_ranking(encoder, docs, texts, k + 1), rankings)):
        assert not tie_at_cut(ranked, k), f"query {n}: exact scores tie across the cut"
        qrels += [ir_measures.Qrel(str(n), d, 1) for d, _ in ranked[:k]]
        run += [ir_measures.ScoredDoc(str(n), d, float(len(engine) - r)) for r, d in enumerate(engine[:k])]
    return ir_measures.calc_aggregate([ir_measures.R @ k], qrels, run)[ir_measures.R @ k]


@pytest.mark.slow
def test_qdrant_edge_is_exact(run_cli, tmp_path, small_beir):
    root, docs, texts = small_beir
    config = tmp_path / "edge.toml"
    config.write_text(f'[backend]\nconnector = "qdrant"\nmode = "edge"\npath = "{tmp_path / "edge"}"\nindex = "c"\n')
    figures = json.loads(run_cli("eval", root, "--config", config, "--exact-recall", "--json", "-q"))
    exact = figures["exact_recall"]["sparse"]
    assert exact["recall"] == 1.0 and exact["k"] == 10
    assert (exact["queries"], exact["documents"]) == (len(texts), len(docs))
    assert "per_query" not in exact  # only with --per-query
    text = run_cli("eval", root, "--config", config, "--exact-recall", "-q")
    assert (
        f"exact recall@10 (sparse): 1.0000: the engine's top 10 against the exact dot product with the {len(docs)}"
        in (text)
    )
    assert "exact recall" not in run_cli("eval", root, "--config", config, "-q")


PRUNING = (
    "[backend.index_options]\nsparse_index_options = { prune = true, pruning_config = "
    "{ tokens_freq_ratio_threshold = 1, tokens_weight_threshold = 0.6 } }\n"
)


@pytest.mark.slow
@pytest.mark.parametrize("pruned", [False, True], ids=["exact", "pruned"])
def test_elasticsearch_pruning_costs_recall(run_cli, tmp_path, small_beir, encoder, pruned, specs_dir):
    pytest.importorskip("elasticsearch")
    from lucene_testkit import FakeEngine, FakeServer
    from spec_validation import elasticsearch_validator

    root, docs, texts = small_beir
    engine = FakeEngine(version="9.1.0")
    with FakeServer(engine) as srv:
        config = tmp_path / "es.toml"
        config.write_text(
            f'[backend]\nconnector = "elasticsearch"\nurl = "{srv.url}"\nindex = "c"\n' + (PRUNING if pruned else "")
        )
        figures = json.loads(run_cli("eval", root, "--config", config, "--exact-recall", "--json", "--per-query", "-q"))
    exact = figures["exact_recall"]["sparse"]
    # The engine's answers to the exact-recall search (the last _msearch, size 10) are its rankings.
    (last,) = [r for r in engine.calls(r"/_msearch$") if r.lines()[1]["size"] == 10][-1:]
    clauses = [line["query"]["sparse_vector"] for line in last.lines()[1::2]]
    assert {c["prune"] for c in clauses} == {pruned}
    if pruned:
        assert {json.dumps(c["pruning_config"], sort_keys=True) for c in clauses} == {
            json.dumps({"tokens_freq_ratio_threshold": 1, "tokens_weight_threshold": 0.6}, sort_keys=True)
        }
    rankings = [[h["_id"] for h in resp["hits"]["hits"]] for resp in last.response["responses"]]
    expected = independent_recall(encoder, docs, texts, rankings)
    assert exact["recall"] == pytest.approx(expected, abs=1e-12)
    assert exact["queries"] == len(texts) and len(exact["per_query"]) == len(texts)
    if pruned:
        assert exact["recall"] < 0.95
    else:
        assert exact["recall"] == 1.0
    validator = elasticsearch_validator(specs_dir)
    for req in engine.requests:
        validator.validate_request(req.method, req.path, req.body)


SEISMIC = (
    'sparse_field_type = "sparse_vector"\n\n'
    "[backend.index_options]\napproximate_threshold = {threshold}\nn_postings = 4\n"
)


@pytest.mark.slow
@pytest.mark.parametrize("threshold", [1_000_000, 0], ids=["exact-below-threshold", "approximate"])
def test_opensearch_seismic_costs_recall(run_cli, tmp_path, small_beir, encoder, threshold, specs_dir):
    pytest.importorskip("opensearchpy")
    from lucene_testkit import FakeEngine, FakeServer
    from spec_validation import opensearch_validator

    root, docs, texts = small_beir
    engine = FakeEngine(flavor="opensearch", version="3.3.0")
    with FakeServer(engine) as srv:
        config = tmp_path / "os.toml"
        config.write_text(
            f'[backend]\nconnector = "opensearch"\nurl = "{srv.url}"\nindex = "c"\n'
            + SEISMIC.format(threshold=threshold)
        )
        figures = json.loads(run_cli("eval", root, "--config", config, "--exact-recall", "--json", "-q"))
    exact = figures["exact_recall"]["sparse"]
    (create,) = engine.calls(r"^/c$", "PUT")
    params = create.json()["mappings"]["properties"]["sparse"]["method"]["parameters"]
    assert (params["approximate_threshold"], params["n_postings"]) == (threshold, 4)
    (last,) = [r for r in engine.calls(r"/_msearch$") if r.lines()[1]["size"] == 10][-1:]
    assert all(line["query"]["neural_sparse"]["sparse"]["method_parameters"]["k"] == 10 for line in last.lines()[1::2])
    rankings = [[h["_id"] for h in resp["hits"]["hits"]] for resp in last.response["responses"]]
    assert exact["recall"] == pytest.approx(independent_recall(encoder, docs, texts, rankings), abs=1e-12)
    if threshold:
        assert exact["recall"] == 1.0
    else:
        assert exact["recall"] < 0.9  # four documents per posting list cannot hold every query's best ten
    validator = opensearch_validator(specs_dir)
    for req in engine.requests:
        validator.validate_request(req.method, req.path, req.body)
