"""``SparseInformationRetrievalEvaluator``: retrieval metrics of a sparse encoder on queries, a corpus and qrels.

It takes sentence-transformers' constructor and returns the same keys and values as its evaluator of
the same name (``{name}_{score_function}_ndcg@10``..., then the query and corpus sparsity and the
average FLOPS), so code written against sentence-transformers runs unchanged. The metrics come from
``ir_metrics``, the code ``sparsebridge eval`` uses too.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

import torch
from tqdm.auto import trange

from ..encoders.similarity import SimilarityFunction
from ..errors import EvaluationError
from .evaluator import SparseEvaluator
from .ir_metrics import mean_ranking_metrics

__all__ = ["SparseInformationRetrievalEvaluator"]

logger = logging.getLogger(__name__)

ScoreFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SPARSITY_KEYS = ("query_active_dims", "query_sparsity_ratio", "corpus_active_dims", "corpus_sparsity_ratio")


class SparseInformationRetrievalEvaluator(SparseEvaluator):
    """Encode the queries and the corpus, rank the corpus for each query, and report IR metrics.

    Only queries with at least one relevant document count. Results are ranked by score, ties
    broken by ascending corpus id, so the numbers do not depend on ``corpus_chunk_size``.
    ``max_active_dims=None`` keeps the model's own setting; ``score_functions=None`` scores with
    the similarity of the model passed to each call.
    """

    def __init__(
        self,
        queries: Mapping[str, str],
        corpus: Mapping[str, str],
        relevant_docs: Mapping[str, Collection[str]],
        corpus_chunk_size: int = 50000,
        mrr_at_k: Iterable[int] = (10,),
        ndcg_at_k: Iterable[int] = (10,),
        accuracy_at_k: Iterable[int] = (1, 3, 5, 10),
        precision_recall_at_k: Iterable[int] = (1, 3, 5, 10),
        map_at_k: Iterable[int] = (100,),
        show_progress_bar: bool = False,
        batch_size: int = 32,
        name: str = "",
        write_csv: bool = True,
        max_active_dims: int | None = None,
        score_functions: dict[str, ScoreFunction] | None = None,
        main_score_function: str | SimilarityFunction | None = None,
        query_prompt: str | None = None,
        query_prompt_name: str | None = None,
        corpus_prompt: str | None = None,
        corpus_prompt_name: str | None = None,
        write_predictions: bool = False,
    ) -> None:
        super().__init__()
        for arg, value in (("queries", queries), ("corpus", corpus), ("relevant_docs", relevant_docs)):
            if not isinstance(value, Mapping):
                raise EvaluationError(f"{arg} must be a dict of id -> value, got {type(value).__name__}")
        if corpus_chunk_size <= 0:
            raise EvaluationError(f"corpus_chunk_size must be positive, got {corpus_chunk_size}")
        self.queries_ids = [qid for qid in queries if len(relevant_docs.get(qid) or ()) > 0]
        self.queries = [queries[qid] for qid in self.queries_ids]
        self.corpus_ids = list(corpus)
        self.corpus = [corpus[cid] for cid in self.corpus_ids]
        self.relevant_docs = relevant_docs
        self.corpus_chunk_size = corpus_chunk_size
        self.mrr_at_k = list(mrr_at_k)
        self.ndcg_at_k = list(ndcg_at_k)
        self.accuracy_at_k = list(accuracy_at_k)
        self.precision_recall_at_k = list(precision_recall_at_k)
        self.map_at_k = list(map_at_k)
        for arg in ("mrr_at_k", "ndcg_at_k", "accuracy_at_k", "precision_recall_at_k", "map_at_k"):
            ks = getattr(self, arg)
            if not ks or any(not isinstance(k, int) or isinstance(k, bool) or k <= 0 for k in ks):
                raise EvaluationError(f"{arg} must be a non-empty list of positive integers, got {ks!r}")
        self.show_progress_bar = show_progress_bar
        self.batch_size = batch_size
        self.name = name
        self.write_csv = write_csv
        self.max_active_dims = max_active_dims
        self.score_functions = score_functions
        self._score_functions_from_model = score_functions is None
        self.main_score_function = SimilarityFunction(main_score_function) if main_score_function else None
        self.query_prompt = query_prompt
        self.query_prompt_name = query_prompt_name
        self.corpus_prompt = corpus_prompt
        self.corpus_prompt_name = corpus_prompt_name
        self.write_predictions = write_predictions
        suffix = f"_{name}" if name else ""
        self.csv_file = f"Information-Retrieval_evaluation{suffix}_results.csv"
        self.predictions_file = f"Information-Retrieval_evaluation{suffix}_predictions.jsonl"
        self._corpus_ranks: torch.Tensor | None = None
        self._reset_sparsity()

    # -- what the metrics are computed over ---------------------------------------------------
    @property
    def score_function_names(self) -> list[str]:
        """The names of the score functions, sorted (sentence-transformers' attribute)."""
        return sorted(self.score_functions) if self.score_functions else []

    @property
    def csv_headers(self) -> list[str]:
        """The columns of the results CSV, sentence-transformers' names and order."""
        headers = ["epoch", "steps"]
        for score in self.score_function_names:
            headers += [f"{score}-Accuracy@{k}" for k in self.accuracy_at_k]
            for k in self.precision_recall_at_k:
                headers += [f"{score}-Precision@{k}", f"{score}-Recall@{k}"]
            headers += [f"{score}-MRR@{k}" for k in self.mrr_at_k]
            headers += [f"{score}-NDCG@{k}" for k in self.ndcg_at_k]
            headers += [f"{score}-MAP@{k}" for k in self.map_at_k]
        if self.score_function_names:
            headers += [*SPARSITY_KEYS, "avg_flops"]
        return headers

    def _at_k(self) -> dict[str, list[int]]:
        # sentence-transformers' order of the metric families in its output
        return {
            "accuracy": self.accuracy_at_k,
            "precision": self.precision_recall_at_k,
            "recall": self.precision_recall_at_k,
            "ndcg": self.ndcg_at_k,
            "mrr": self.mrr_at_k,
            "map": self.map_at_k,
        }

    @property
    def _max_k(self) -> int:
        return max(max(ks) for ks in self._at_k().values())

    def _corpus_id_ranks(self) -> torch.Tensor:
        """Each corpus entry's position in ascending corpus-id order: the tie-break of the ranking."""
        if self._corpus_ranks is None:
            order = sorted(range(len(self.corpus_ids)), key=self.corpus_ids.__getitem__)
            ranks = torch.empty(len(order), dtype=torch.long)
            ranks[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))
            self._corpus_ranks = ranks
        return self._corpus_ranks

    # -- running -----------------------------------------------------------------------------
    def __call__(
        self, model: Any, output_path: str | None = None, epoch: int = -1, steps: int = -1, *args: Any, **kwargs: Any
    ) -> dict[str, float]:
        """Evaluate ``model``; returns ``{"{name}_{score}_{metric}@{k}": value, ..., sparsity, avg_flops}``."""
        if not self.queries_ids:
            raise EvaluationError(f"evaluator {self.name or '(unnamed)'}: no query has a relevant document")
        when = ""
        if epoch != -1:
            when = f" after epoch {epoch}" if steps == -1 else f" in epoch {epoch} after {steps} steps"
        logger.info("Information Retrieval Evaluation of the model on the %s dataset%s:", self.name, when)
        if self._score_functions_from_model:
            self.score_functions = {model.similarity_fn_name: model.similarity}
        self._reset_sparsity()
        scores = self.compute_all_metrics(model, *args, output_path=output_path, **kwargs)

        metrics = {f"{score}_{key}": value for score, values in scores.items() for key, value in values.items()}
        sparsity = self._sparsity_summary()
        metrics.update(sparsity)
        best = self.main_score_function.value if self.main_score_function else None
        top_ndcg = f"ndcg@{max(self.ndcg_at_k)}"
        if best is None:
            best = max(self.score_function_names, key=lambda s: scores[s][top_ndcg])
        self.primary_metric = f"{best}_{top_ndcg}"
        metrics = self.prefix_name_to_metrics(metrics, self.name)
        logger.info(
            "Model Query Sparsity: Active Dimensions: %.1f, Sparsity Ratio: %.4f",
            sparsity["query_active_dims"],
            sparsity["query_sparsity_ratio"],
        )
        logger.info(
            "Model Corpus Sparsity: Active Dimensions: %.1f, Sparsity Ratio: %.4f",
            sparsity["corpus_active_dims"],
            sparsity["corpus_sparsity_ratio"],
        )
        logger.info("Average FLOPS: %.2f", sparsity["avg_flops"])
        if output_path is not None and self.write_csv:
            self._write_csv(output_path, epoch, steps, scores, sparsity)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics

    def compute_all_metrics(
        self,
        model: Any,
        corpus_model: Any | None = None,
        corpus_embeddings: torch.Tensor | None = None,
        output_path: str | None = None,
    ) -> dict[str, dict[str, float]]:
        """Rank the corpus for every query and compute the metrics: ``{score_function: {"ndcg@10": ...}}``.

        ``corpus_model`` encodes the corpus instead of ``model``; ``corpus_embeddings`` (rows in
        corpus order) skips encoding it.
        """
        if self.score_functions is None:
            self.score_functions = {model.similarity_fn_name: model.similarity}
        corpus_model = model if corpus_model is None else corpus_model
        if corpus_embeddings is not None:
            corpus_embeddings = corpus_embeddings.cpu()
            self._record_sparsity(corpus_model, corpus_embeddings, "corpus")
        query_embeddings = self.embed_inputs(
            model, self.queries, encode_fn_name="query", prompt_name=self.query_prompt_name, prompt=self.query_prompt
        )
        max_k = self._max_k
        # per score function and query: [(score, corpus index)], best first, at most max_k
        hits: dict[str, list[list[tuple[float, int]]]] = {
            score: [[] for _ in self.queries] for score in self.score_functions
        }
        ranks = self._corpus_id_ranks()
        rank_of = ranks.tolist()
        for start in trange(
            0, len(self.corpus), self.corpus_chunk_size, desc="Corpus Chunks", disable=not self.show_progress_bar
        ):
            end = min(start + self.corpus_chunk_size, len(self.corpus))
            if corpus_embeddings is None:
                chunk = self.embed_inputs(
                    corpus_model,
                    self.corpus[start:end],
                    encode_fn_name="document",
                    prompt_name=self.corpus_prompt_name,
                    prompt=self.corpus_prompt,
                )
            elif corpus_embeddings.is_sparse:
                chunk = corpus_embeddings.index_select(0, torch.arange(start, end))
            else:
                chunk = corpus_embeddings[start:end]
            for score, fn in self.score_functions.items():
                values, index = _top_k_with_id_ties(fn(query_embeddings, chunk), max_k, ranks[start:end])
                for q, (row_values, row_index) in enumerate(zip(values.tolist(), index.tolist())):
                    merged = hits[score][q] + [(v, start + i) for v, i in zip(row_values, row_index)]
                    merged.sort(key=lambda hit: (-hit[0], rank_of[hit[1]]))
                    hits[score][q] = merged[:max_k]

        if self.write_predictions and output_path is not None:
            self._write_predictions(output_path, hits)
        logger.info("Queries: %d", len(self.queries))
        logger.info("Corpus: %d\n", len(self.corpus))
        qrels = {qid: {str(doc): 1 for doc in self.relevant_docs[qid]} for qid in self.queries_ids}
        results: dict[str, dict[str, float]] = {}
        for score in self.score_functions:
            rankings = {
                qid: [str(self.corpus_ids[i]) for _, i in hits[score][q]] for q, qid in enumerate(self.queries_ids)
            }
            results[score], _ = mean_ranking_metrics(rankings, qrels, self._at_k())
        for score in self.score_function_names:
            logger.info("Score-Function: %s", score)
            for key, value in results[score].items():
                logger.info("%s: %.4f", key, value)
        return results

    def embed_inputs(
        self,
        model: Any,
        sentences: str | list[str],
        encode_fn_name: str | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Encode with ``encode_query`` / ``encode_document`` (or ``encode``) as sparse CPU tensors; keeps sparsity."""
        encode = {None: model.encode, "query": model.encode_query, "document": model.encode_document}[encode_fn_name]
        embeddings = encode(
            sentences,
            prompt_name=prompt_name,
            prompt=prompt,
            batch_size=self.batch_size,
            show_progress_bar=self.show_progress_bar,
            convert_to_sparse_tensor=True,
            save_to_cpu=True,
            max_active_dims=self.max_active_dims,
            **kwargs,
        )
        self._record_sparsity(model, embeddings, "query" if encode_fn_name in (None, "query") else "corpus")
        return embeddings

    # -- sparsity and FLOPS ------------------------------------------------------------------
    def _reset_sparsity(self) -> None:
        self._sparsity: dict[str, list[tuple[dict[str, float], int]]] = {"query": [], "corpus": []}
        self._active_counts: dict[str, torch.Tensor] = {}

    def _record_sparsity(self, model: Any, embeddings: torch.Tensor, side: str) -> None:
        rows = embeddings if embeddings.dim() == 2 else embeddings.unsqueeze(0)
        self._sparsity[side].append((model.sparsity(rows), rows.shape[0]))
        # how many rows use each dimension: the FLOPS estimate multiplies these per side
        rows = (rows if rows.is_sparse else rows.to_sparse()).coalesce()
        used = rows.indices()[1][rows.values() != 0]
        counts = torch.bincount(used, minlength=rows.shape[-1]).to(torch.float64)
        self._active_counts[side] = self._active_counts[side] + counts if side in self._active_counts else counts

    def _sparsity_summary(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for side, records in self._sparsity.items():
            if not records:
                continue
            for key in records[0][0]:
                if side == "query":  # one entry per encode call, averaged as sentence-transformers does
                    out[f"{side}_{key}"] = sum(stat[key] for stat, _ in records) / len(records)
                else:  # corpus chunks, weighted by their size
                    out[f"{side}_{key}"] = sum(stat[key] * n for stat, n in records) / sum(n for _, n in records)
        out["avg_flops"] = 0.0
        if "query" in self._active_counts and "corpus" in self._active_counts:
            n_query = sum(n for _, n in self._sparsity["query"])
            n_corpus = sum(n for _, n in self._sparsity["corpus"])
            mean_query = self._active_counts["query"] / n_query
            mean_corpus = self._active_counts["corpus"] / n_corpus
            out["avg_flops"] = float(torch.dot(mean_query, mean_corpus))
        return out

    # -- files -------------------------------------------------------------------------------
    def _write_csv(
        self,
        output_path: str,
        epoch: int,
        steps: int,
        scores: dict[str, dict[str, float]],
        sparsity: dict[str, float],
    ) -> None:
        os.makedirs(output_path, exist_ok=True)
        path = os.path.join(output_path, self.csv_file)
        row: list[Any] = [epoch, steps]
        for score in self.score_function_names:
            values = scores[score]
            row += [values[f"accuracy@{k}"] for k in self.accuracy_at_k]
            for k in self.precision_recall_at_k:
                row += [values[f"precision@{k}"], values[f"recall@{k}"]]
            row += [values[f"mrr@{k}"] for k in self.mrr_at_k]
            row += [values[f"ndcg@{k}"] for k in self.ndcg_at_k]
            row += [values[f"map@{k}"] for k in self.map_at_k]
        row += [sparsity.get(key, 0.0) for key in SPARSITY_KEYS] + [sparsity["avg_flops"]]
        new = not os.path.isfile(path)
        with open(path, "a", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            if new:
                writer.writerow(self.csv_headers)
            writer.writerow(row)

    def _write_predictions(self, output_path: str, hits: dict[str, list[list[tuple[float, int]]]]) -> None:
        os.makedirs(output_path, exist_ok=True)
        for score, per_query in hits.items():
            path = os.path.join(output_path, self.predictions_file.replace(".jsonl", f"_{score}.jsonl"))
            with open(path, "w", encoding="utf-8") as fh:
                for q, query_hits in enumerate(per_query):
                    results = [{"corpus_id": self.corpus_ids[i], "score": value} for value, i in query_hits]
                    record = {"query_id": self.queries_ids[q], "query": self.queries[q], "results": results}
                    fh.write(json.dumps(record) + "\n")

    def get_config_dict(self) -> dict[str, Any]:
        """Prompts and ``max_active_dims`` where set (what a model card lists next to the metrics)."""
        keys = ("query_prompt", "query_prompt_name", "corpus_prompt", "corpus_prompt_name", "max_active_dims")
        return {key: getattr(self, key) for key in keys if getattr(self, key) is not None}


def _top_k_with_id_ties(scores: torch.Tensor, k: int, id_ranks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best columns of each row of ``scores``, ties at the cut-off resolved by the smallest id rank.

    ``torch.topk`` picks among tied scores arbitrarily; rows where the k-th score is tied get their
    picks redone so the result is the first k under the order (score descending, corpus id ascending).
    """
    if scores.is_sparse:
        scores = scores.to_dense()
    scores = scores.float().cpu()
    k = min(k, scores.shape[1])
    values, index = scores.topk(k, dim=1)
    if k == 0:
        return values, index
    cutoff = values[:, -1:]
    tied = ((scores >= cutoff).sum(dim=1) > k).nonzero().squeeze(1)
    if len(tied):
        rows, row_cutoff = scores[tied], cutoff[tied]
        outside = int(id_ranks.max()) + 1
        # above the cut-off: always in (key -1); at the cut-off: by id rank; below: never
        key = torch.full(rows.shape, outside, dtype=torch.long)
        key = torch.where(rows == row_cutoff, id_ranks.unsqueeze(0).expand_as(rows), key)
        key = torch.where(rows > row_cutoff, torch.full_like(key, -1), key)
        pick = key.topk(k, dim=1, largest=False).indices
        index[tied] = pick
        values[tied] = rows.gather(1, pick)
    return values, index
