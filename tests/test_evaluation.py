"""``SparseInformationRetrievalEvaluator`` and the shared IR metrics, checked against what nobody here wrote:
sentence-transformers' own evaluator (the oracle, test-only) on the packaged SPLADE model over a slice
of cranfield, and ir_measures (trec_eval through pytrec_eval) on the same run."""

from __future__ import annotations

import csv
import json

import ir_measures
import pytest
from conftest import DATA_DIR, read_jsonl
from ir_measures import AP, RR, P, R, Success, nDCG
from sparsebridge.corpus import read_qrels
from sparsebridge.errors import EvaluationError, SparsebridgeError
from sparsebridge.evaluation import SparseInformationRetrievalEvaluator, evaluate_run

NAME = "cranfield-slice"
# Small chunks, so rankings are merged across chunks; duplicated documents, so scores tie.
SETTINGS = dict(name=NAME, corpus_chunk_size=64, accuracy_at_k=[1, 3, 10], ndcg_at_k=[5, 10], map_at_k=[20, 100])


@pytest.fixture(scope="module")
def cranfield_slice():
    qrels = read_qrels(DATA_DIR / "cranfield")
    all_queries = {q["_id"]: q["text"] for q in read_jsonl(DATA_DIR / "cranfield" / "queries.jsonl")}
    qids = [q for q in all_queries if q in qrels][:25]
    queries = {q: all_queries[q] for q in qids}
    queries["no-judgements"] = "a query without relevant documents is left out"
    wanted = {d for q in qids for d in qrels[q]}
    docs = read_jsonl(DATA_DIR / "cranfield" / "corpus.jsonl")
    corpus = {
        d["_id"]: f"{d.get('title', '')} {d['text']}".strip()
        for i, d in enumerate(docs)
        if i < 120 or d["_id"] in wanted
    }
    for doc_id in list(corpus)[:12]:  # exact duplicates score exactly alike: the tie-break decides
        corpus[f"dup-{doc_id}"] = corpus[doc_id]
    relevant = {q: set(qrels[q]) for q in qids}
    graded = {q: qrels[q] for q in qids}
    return queries, corpus, relevant, graded


@pytest.fixture(scope="module")
def ours(encoder, cranfield_slice, tmp_path_factory):
    queries, corpus, relevant, _ = cranfield_slice
    out = tmp_path_factory.mktemp("ours")
    evaluator = SparseInformationRetrievalEvaluator(queries, corpus, relevant, write_predictions=True, **SETTINGS)
    return evaluator, encoder.evaluate(evaluator, output_path=str(out)), out


@pytest.fixture(scope="module")
def oracle_run(splade_path, cranfield_slice, tmp_path_factory):
    from sentence_transformers import SparseEncoder as OracleEncoder
    from sentence_transformers.sparse_encoder.evaluation import (
        SparseInformationRetrievalEvaluator as OracleEvaluator,
    )

    queries, corpus, relevant, _ = cranfield_slice
    out = tmp_path_factory.mktemp("oracle")
    evaluator = OracleEvaluator(queries, corpus, relevant, write_predictions=True, **SETTINGS)
    return evaluator, OracleEncoder(str(splade_path), device="cpu").evaluate(evaluator, output_path=str(out)), out


def read_predictions(folder) -> dict[str, list[str]]:
    (path,) = folder.glob("*_predictions_dot.jsonl")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return {row["query_id"]: [hit["corpus_id"] for hit in row["results"]] for row in rows}


def read_csv(folder) -> list[list[str]]:
    with open(folder / f"Information-Retrieval_evaluation_{NAME}_results.csv", encoding="utf-8", newline="") as fh:
        return list(csv.reader(fh))


def test_keys_values_and_primary_metric_match_oracle(ours, oracle_run):
    evaluator, metrics, _ = ours
    oracle_evaluator, expected, _ = oracle_run
    assert list(metrics) == list(expected)  # same keys, same order
    assert f"{NAME}_dot_ndcg@10" in metrics and f"{NAME}_corpus_active_dims" in metrics
    for key, value in expected.items():
        # the oracle sums the FLOPS estimate in float32; ours in float64
        assert metrics[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key
    assert evaluator.primary_metric == oracle_evaluator.primary_metric == f"{NAME}_dot_ndcg@10"
    assert evaluator.greater_is_better is True


def test_rankings_and_csv_match_oracle(ours, oracle_run):
    _, _, out = ours
    _, _, oracle_out = oracle_run
    assert read_predictions(out) == read_predictions(oracle_out)
    ours_csv, oracle_csv = read_csv(out), read_csv(oracle_out)
    assert ours_csv[0] == oracle_csv[0]
    assert len(ours_csv) == len(oracle_csv) == 2
    assert [float(v) for v in ours_csv[1]] == pytest.approx([float(v) for v in oracle_csv[1]], rel=1e-6, abs=1e-6)


def test_metrics_match_ir_measures_on_the_same_run(ours, cranfield_slice):
    _, metrics, out = ours
    _, _, relevant, _ = cranfield_slice
    run = read_predictions(out)
    # The MAP@100 normalisation (min(k, |R|)) equals trec_eval's (|R|) only if no query has more than 100.
    assert max(len(docs) for docs in relevant.values()) <= 100
    qrels = [ir_measures.Qrel(q, d, 1) for q, docs in relevant.items() for d in docs]
    # Scores that only encode our rank: trec_eval breaks score ties its own way, the ranking is ours.
    scored = [ir_measures.ScoredDoc(q, d, -float(i)) for q, docs in run.items() for i, d in enumerate(docs)]
    measures = {
        "accuracy@1": Success @ 1,
        "accuracy@10": Success @ 10,
        "precision@3": P @ 3,
        "precision@10": P @ 10,
        "recall@5": R @ 5,
        "recall@10": R @ 10,
        "mrr@10": RR @ 10,
        "ndcg@5": nDCG @ 5,
        "ndcg@10": nDCG @ 10,
        "map@100": AP @ 100,
    }
    reference = ir_measures.calc_aggregate(list(measures.values()), qrels, scored)
    assert len(run) == len(relevant) == 25
    for key, measure in measures.items():
        assert metrics[f"{NAME}_dot_{key}"] == pytest.approx(reference[measure], abs=1e-9), key


def test_evaluate_run_with_graded_qrels_matches_ir_measures(ours, cranfield_slice):
    _, _, out = ours
    _, _, _, graded = cranfield_slice
    run = read_predictions(out)
    result = evaluate_run(run, graded)
    qrels = [ir_measures.Qrel(q, d, g) for q, docs in graded.items() for d, g in docs.items()]
    scored = [ir_measures.ScoredDoc(q, d, -float(i)) for q, docs in run.items() for i, d in enumerate(docs)]
    reference = ir_measures.calc_aggregate([nDCG @ 10, RR @ 10, R @ 100], qrels, scored)
    assert result["queries"] == 25
    assert result["ndcg@10"] == pytest.approx(reference[nDCG @ 10], abs=1e-9)
    assert result["mrr@10"] == pytest.approx(reference[RR @ 10], abs=1e-9)
    assert result["recall@100"] == pytest.approx(reference[R @ 100], abs=1e-9)
    per_query = {(m.query_id, str(m.measure)): m.value for m in ir_measures.iter_calc([nDCG @ 10], qrels, scored)}
    for qid, values in result["per_query"].items():
        assert values["ndcg@10"] == pytest.approx(per_query[(qid, "nDCG@10")], abs=1e-9), qid


def test_evaluate_run_is_a_drop_in_for_the_pipeline_metrics(ours, cranfield_slice):
    from sparsebridge.pipeline import evaluate_run as pipeline_evaluate_run

    _, _, out = ours
    _, _, _, graded = cranfield_slice
    run = read_predictions(out)
    run.pop(next(iter(run)))  # a query missing from the run scores 0 in both
    ours_result, theirs = evaluate_run(run, graded), pipeline_evaluate_run(run, graded)
    assert ours_result.keys() == theirs.keys()
    for key in ("ndcg@10", "mrr@10", "recall@100"):
        assert ours_result[key] == pytest.approx(theirs[key], abs=1e-12)
    assert ours_result["queries"] == theirs["queries"]


def test_average_precision_follows_the_oracle_when_more_documents_are_relevant_than_k():
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    relevant = {"q": {f"d{i}" for i in range(0, 12, 2)}}  # 6 relevant, 3 of them in the top 5
    corpus = {f"d{i}": f"doc {i}" for i in range(12)}
    hits = [{"corpus_id": f"d{i}", "score": 12.0 - i} for i in range(12)]
    oracle = InformationRetrievalEvaluator(
        {"q": "q"},
        corpus,
        relevant,
        map_at_k=[5],
        mrr_at_k=[5],
        ndcg_at_k=[5],
        accuracy_at_k=[5],
        precision_recall_at_k=[5],
    ).compute_metrics([hits])
    ranking = [hit["corpus_id"] for hit in hits]
    result = evaluate_run({"q": ranking}, relevant, ndcg_k=5, mrr_k=5, recall_k=5)
    from sparsebridge.evaluation.ir_metrics import average_precision_at_k, relevance_grades

    assert average_precision_at_k(ranking, relevance_grades(relevant["q"]), 5) == pytest.approx(oracle["map@k"][5])
    assert result["ndcg@5"] == pytest.approx(oracle["ndcg@k"][5])
    assert result["recall@5"] == pytest.approx(oracle["recall@k"][5])


def test_bad_input_is_one_clear_error(encoder):
    with pytest.raises(EvaluationError, match="no query has a relevant document"):
        encoder.evaluate(SparseInformationRetrievalEvaluator({"q": "x"}, {"d": "y"}, {"q": set()}, name="empty"))
    with pytest.raises(EvaluationError, match="ndcg_at_k"):
        SparseInformationRetrievalEvaluator({"q": "x"}, {"d": "y"}, {"q": {"d"}}, ndcg_at_k=[0])
    with pytest.raises(SparsebridgeError, match="corpus must be a dict"):
        SparseInformationRetrievalEvaluator({"q": "x"}, ["y"], {"q": {"d"}})


def test_evaluate_creates_the_output_folder(encoder, tmp_path):
    target = tmp_path / "new" / "folder"
    evaluator = SparseInformationRetrievalEvaluator({"q": "boundary layer"}, {"d": "boundary layer flow"}, {"q": {"d"}})
    metrics = encoder.evaluate(evaluator, output_path=str(target))
    assert metrics["dot_accuracy@1"] == 1.0
    assert (target / "Information-Retrieval_evaluation_results.csv").is_file()
