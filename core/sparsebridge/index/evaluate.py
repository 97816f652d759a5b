"""Evaluating an index: BEIR queries run against it and scored over the qrels (nDCG@10, MRR@10,
Recall@100), after checking that the index holds the whole corpus (``coverage``); optionally the
recall of the exact top k (what pruning costs).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..connector import SparseVector
from ..errors import IncompleteIndexError
from .corpus import Corpus, open_corpus, read_beir_queries, read_qrels
from .metrics import evaluate_run
from .passages import collapse_passages
from .preparation import Plan, prepare_document
from .results import IngestReport


class Evaluating:
    """The evaluation job of a :class:`~sparsebridge.index.pipeline.Pipeline`."""

    def evaluate(
        self,
        beir_dir: str | Path,
        *,
        split: str = "test",
        ingest_if_missing: bool = True,
        top_k: int = 100,
        exact_recall: bool = False,
        exact_k: int = 10,
    ) -> dict[str, Any]:
        """nDCG@10, MRR@10 and Recall@100 of this backend on a BEIR dataset's qrels.

        With ``exact_recall``, also what an approximate index costs: the mean recall of each query's
        exact top ``exact_k`` records in the engine's sparse top ``exact_k`` (see
        :mod:`sparsebridge.exact_recall`), under ``"exact_recall"`` by side (``"sparse"``).

        The index is first compared with the corpus (see :meth:`coverage`): documents it lacks
        (none of it exists yet, or an ingest was interrupted) are ingested first, since ingest is an
        idempotent upsert, or, with ``ingest_if_missing=False``, :class:`IncompleteIndexError` is
        raised: a score over part of a corpus means nothing. Passage hits count for their parent
        document.
        """
        beir_dir = Path(beir_dir)
        qrels = read_qrels(beir_dir, split)
        queries = read_beir_queries(beir_dir)
        missing = [q for q in qrels if q not in queries]
        if missing:
            raise ConfigError(f"{beir_dir}: {len(missing)} qrels queries are not in queries.jsonl (e.g. {missing[0]})")
        out: dict[str, Any] = {"dataset": str(beir_dir), "split": split, "index": self.index}
        coverage, absent = self.coverage(beir_dir)
        out["coverage"] = coverage
        if coverage["missing"]:
            if not ingest_if_missing:
                example = ", ".join(repr(d) for d in coverage["missing_ids"][:3])
                raise IncompleteIndexError(
                    f"index {self.index!r} holds {coverage['indexed']} of the {coverage['documents']} documents "
                    f"of {beir_dir} ({coverage['missing']} missing{', e.g. ' + example if example else ''}); a "
                    f"score over part of the corpus means nothing: run eval without --no-ingest to ingest the "
                    f"missing ones (an upsert: nothing is duplicated), or `sparsebridge ingest {beir_dir}` first"
                )
            out["ingest"] = self.ingest(absent).to_dict()
        qids = [q for q in queries if q in qrels]
        texts = [queries[q] for q in qids]
        per_passage = self.ingest_settings.split_passages
        vectors = self.encode_queries(texts) if exact_recall and texts else None
        results = self.search(texts, top_k=top_k * (3 if per_passage else 1), sparse_vectors=vectors)
        run = {qid: collapse_passages(r.hits)[:top_k] for qid, r in zip(qids, results)}
        out.update(evaluate_run(run, qrels))
        if exact_recall:
            figures = self.exact_recall(texts, vectors or [], k=exact_k)
            figures["per_query"] = dict(zip(qids, figures["per_query"]))
            out["exact_recall"] = {"sparse": figures}
        return out

    def exact_recall(self, texts: Sequence[str], vectors: Sequence[SparseVector], k: int = 10) -> dict[str, Any]:
        """The recall of the exact sparse top ``k`` in the engine's sparse top ``k`` for queries
        ``texts`` encoded as ``vectors``: one ``--mode sparse --top-k k`` search, as a user runs it
        (records, passages not collapsed), against the brute-force dot product with every record's
        vector as the index gives it back (``Connector.export``; see :mod:`sparsebridge.exact_recall`).
        """
        from .exact_recall import exact_recall

        results = self.search(list(texts), top_k=k, mode="sparse", sparse_vectors=vectors) if texts else []
        rankings = [[h.id for h in r.hits] for r in results]
        try:
            documents = self.connector.export(list(self.vocab.tokens))
            figures = exact_recall(vectors, rankings, documents, k=k, rtol=type(self.connector).score_rtol)
        except NotImplementedError as exc:
            raise ConfigError(
                f"--exact-recall reads the index's vectors back, and the {type(self.connector).__name__} "
                f"cannot export them ({exc})"
            ) from exc
        notes = sorted({n for r in results for n in r.notes})
        if notes:
            figures["notes"] = notes
        return figures

    def coverage(self, corpus: str | Path, chunk: int = 1000) -> tuple[dict[str, Any], Corpus]:
        """How much of ``corpus`` the index holds, and a corpus of the documents it lacks.

        Only documents an ingest would write count (one without text is not expected). Ids are
        looked up with ``connector.get`` in chunks of ``chunk``; with a connector without ``get``,
        ``count()`` decides (fewer records than documents: the whole corpus is given back, which is
        safe to ingest again). The figures: ``documents``, ``indexed``, ``missing``, ``missing_ids``
        (the first 20), ``method`` ("ids", "count", or "empty" when the index holds nothing).
        """
        source = open_corpus(corpus)
        settings = self.ingest_settings
        id_field = settings.id_field or source.id_field
        text_fields = tuple(settings.text_fields or source.text_fields)
        method = "ids" if self.exists() and self.count() > 0 else "empty"
        scratch, seen = IngestReport(), {}
        expected = 0
        absent: list[tuple[str, Any]] = []  # (id, document) of the missing ones, when looked up by id
        batch: list[tuple[str, Any]] = []

        def lookup() -> None:
            nonlocal method
            if method != "ids":
                return
            ids = [i for i, _ in batch]
            asked = ids + [f"{i}#p0" for i in ids] if settings.split_passages else ids
            try:
                found = self.connector.get(asked)
            except NotImplementedError:
                method = "count"
                absent.clear()
                return
            absent.extend((i, doc) for i, doc in batch if i not in found and f"{i}#p0" not in found)

        for n, doc in enumerate(source, 1):
            prepared = prepare_document(doc, n, Plan(id_field, text_fields, {}, None), scratch, seen)
            if prepared is None:
                continue  # an ingest would report it, not write it
            expected += 1
            batch.append((prepared.ids[0], doc))
            if len(batch) >= chunk:
                lookup()
                batch = []
        if batch:
            lookup()

        whole, indexed = method == "empty", 0
        if method == "count":
            held = self.count()
            # Passages make more records than documents: without ids only an empty index is sure.
            whole = held == 0 if settings.split_passages else held < expected
            indexed = min(held, expected)
        if whole:
            missing, missing_ids, rest = expected - indexed, [], open_corpus(corpus)
        else:
            missing, missing_ids = len(absent), [i for i, _ in absent[:20]]
            rest = Corpus(
                documents=[doc for _, doc in absent],
                name=source.name,
                id_field=source.id_field,
                text_fields=source.text_fields,
                payload_fields=source.payload_fields,
                size=len(absent),
            )
        figures = {
            "documents": expected,
            "indexed": expected - missing if method != "count" else indexed,
            "missing": missing,
            "missing_ids": missing_ids,
            "method": method,
        }
        return figures, rest
