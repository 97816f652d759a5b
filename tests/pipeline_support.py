"""Helpers shared by the pipeline, config and CLI tests.

:class:`CachingEncoder` wraps the real SparseEncoder and remembers each row it computed, so that the
Cranfield corpus is encoded once per test session however many tests (and CLI runs, through a
patched model loader) ingest it. The vectors are the real model's; only repeated work is skipped.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from sparsebridge.connector import Connector, WriteResult


class CachingEncoder:
    """A SparseEncoder stand-in that memoises rows by (side, max_active_dims, text)."""

    def __init__(self, encoder: Any) -> None:
        self._encoder = encoder
        self._rows: dict[tuple[str, Any, str], tuple[torch.Tensor, torch.Tensor]] = {}
        self.calls: list[tuple[str, int]] = []  # (side, texts actually encoded)

    def __getattr__(self, name: str) -> Any:  # tokenizer, max_seq_length, decode, ...
        return getattr(self._encoder, name)

    def encode_document(self, sentences: Any, **kwargs: Any) -> torch.Tensor:
        return self._encode("document", sentences, kwargs)

    def encode_query(self, sentences: Any, **kwargs: Any) -> torch.Tensor:
        return self._encode("query", sentences, kwargs)

    def _encode(self, side: str, sentences: Any, kwargs: dict[str, Any]) -> torch.Tensor:
        single = isinstance(sentences, str)
        texts = [sentences] if single else list(sentences)
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"expected str, got {type(t).__name__}")
        dims = kwargs.get("max_active_dims")
        missing = [t for t in dict.fromkeys(texts) if (side, dims, t) not in self._rows]
        if missing:
            kw = {k: v for k, v in kwargs.items() if k != "show_progress_bar"}
            emb = getattr(self._encoder, f"encode_{side}")(missing, show_progress_bar=False, **kw).coalesce()
            idx, vals = emb.indices(), emb.values()
            for r, text in enumerate(missing):
                mask = idx[0] == r
                self._rows[(side, dims, text)] = (idx[1][mask].clone(), vals[mask].clone())
            self.calls.append((side, len(missing)))
        dim = self._encoder.get_sentence_embedding_dimension()
        rows, cols, values = [], [], []
        for r, text in enumerate(texts):
            c, v = self._rows[(side, dims, text)]
            rows.append(torch.full_like(c, r))
            cols.append(c)
            values.append(v)
        indices = torch.stack([torch.cat(rows), torch.cat(cols)]) if texts else torch.zeros(2, 0, dtype=torch.long)
        vals = torch.cat(values) if texts else torch.zeros(0)
        out = torch.sparse_coo_tensor(indices, vals, (len(texts), dim), check_invariants=False).coalesce()
        return out[0] if single else out


_CACHED: dict[int, CachingEncoder] = {}


def caching_encoder(encoder: Any) -> CachingEncoder:
    """One CachingEncoder per real encoder for the whole session."""
    if id(encoder) not in _CACHED:
        _CACHED[id(encoder)] = CachingEncoder(encoder)
    return _CACHED[id(encoder)]


def serve_encoder(monkeypatch: Any, encoder: Any) -> CachingEncoder:
    """Every sparse model the builder loads in this test (the pipelines the CLI builds) is ``encoder``
    (the real model, through the session's :class:`CachingEncoder`) instead of a fresh load."""
    import sparsebridge.config.builder

    cached = caching_encoder(encoder)
    monkeypatch.setattr(
        sparsebridge.config.builder, "load_sparse_encoder", lambda name, device=None, precision="fp32": cached
    )
    return cached


@lru_cache(maxsize=4)
def beir(path: str) -> tuple[list[dict], dict[str, str], dict[str, dict[str, int]]]:
    """(corpus rows, queries, test qrels) of a BEIR folder."""
    root = Path(path)
    with open(root / "corpus.jsonl", encoding="utf-8") as fh:
        docs = [json.loads(line) for line in fh if line.strip()]
    queries = {}
    with open(root / "queries.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                queries[str(row["_id"])] = row["text"]
    qrels: dict[str, dict[str, int]] = {}
    with open(root / "qrels" / "test.tsv", encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            q, d, s = line.rstrip("\n").split("\t")
            qrels.setdefault(q, {})[d] = int(s)
    return docs, queries, qrels


def doc_text(doc: Mapping[str, Any]) -> str:
    return " ".join(str(doc[f]).strip() for f in ("title", "text") if isinstance(doc.get(f), str) and doc[f].strip())


def brute_force_ranking(
    query_vectors: torch.Tensor, doc_vectors: torch.Tensor, doc_ids: Sequence[str], k: int
) -> list[list[tuple[str, float]]]:
    """Exact dot-product ranking of every document for every query (float64, ties by id)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        scores = torch.sparse.mm(query_vectors.double().coalesce(), doc_vectors.double().coalesce().t()).to_dense()
    out = []
    for row in scores.tolist():
        ranked = sorted(((s, d) for s, d in zip(row, doc_ids) if s > 0), key=lambda p: (-p[0], p[1]))[:k]
        out.append([(d, s) for s, d in ranked])
    return out


def reference_metrics(run: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]]) -> dict[str, float]:
    """nDCG@10 (linear gain), MRR@10, Recall@100, written independently of sparsebridge.pipeline."""
    totals = {"ndcg@10": 0.0, "mrr@10": 0.0, "recall@100": 0.0}
    n = 0
    for qid, rels in qrels.items():
        positive = {d: r for d, r in rels.items() if r > 0}
        if not positive:
            continue
        n += 1
        ranking = list(run.get(qid, []))
        dcg = sum(positive.get(d, 0) / math.log2(rank + 1) for rank, d in enumerate(ranking[:10], 1))
        ideal = sorted(positive.values(), reverse=True)[:10]
        idcg = sum(r / math.log2(rank + 1) for rank, r in enumerate(ideal, 1))
        totals["ndcg@10"] += dcg / idcg
        first = next((rank for rank, d in enumerate(ranking[:10], 1) if d in positive), None)
        totals["mrr@10"] += 1 / first if first else 0.0
        totals["recall@100"] += len(set(ranking[:100]) & set(positive)) / len(positive)
    return {k: v / n for k, v in totals.items()} | {"queries": n}


class FailingWrites(Connector):
    """Wraps a real connector; writes of the ids in ``fail`` come back failed (as a backend would)."""

    name = "failing-writes"

    def __init__(self, inner: Connector, fail: set[str]) -> None:
        super().__init__()
        self.inner, self.fail = inner, fail

    def ensure_index(self, spec):
        return self.inner.ensure_index(spec)

    def write(self, records):
        keep = [r for r in records if r.id not in self.fail]
        result = self.inner.write(keep) if keep else WriteResult()
        for r in records:
            if r.id in self.fail:
                result.failed[r.id] = "mapper_parsing_exception: injected failure"
        result.retries += 1
        return result

    def search(self, queries, options=None):
        return self.inner.search(queries, options)

    def count(self):
        return self.inner.count()

    def delete(self, ids):
        return self.inner.delete(ids)

    def drop(self):
        return self.inner.drop()

    def index_metadata(self):
        return self.inner.index_metadata()

    def get(self, ids):
        return self.inner.get(ids)

    def close(self):
        self.inner.close()
