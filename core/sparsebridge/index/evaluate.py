"""Evaluating an index: BEIR queries run against it and scored over the qrels (nDCG@10, MRR@10,
Recall@100), after checking that the index holds the whole corpus (``coverage``); optionally the
recall of the exact top k (what pruning costs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..connector import SparseVector, check_vocabulary
from ..errors import IncompleteIndexError, IndexMismatchError
from .corpus import Corpus, open_corpus, read_beir_queries, read_qrels
from .documents import document_id
from .metrics import evaluate_run
from .passages import PARENT_KEY, collapse_passages
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
        if coverage["extra"]:  # checked before anything is ingested
            raise IndexMismatchError(self._extra_message(coverage, beir_dir))
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
        outside = judged_outside_corpus(open_corpus(beir_dir), self.ingest_settings.id_field, qrels)
        if outside:
            # No run can retrieve them, so they lower recall and nDCG; trec_eval users expect a word.
            pairs = sum(1 for rel in qrels.values() for d, s in rel.items() if s > 0 and d in outside)
            out["qrels_outside_corpus"] = {"documents": len(outside), "judgements": pairs}
            out.setdefault("notes", []).append(
                f"{pairs} relevant judgements of qrels/{split}.tsv name {len(outside)} documents that are not in "
                f"the corpus (e.g. {sorted(outside)[0]!r}); no run can retrieve them, so recall and nDCG are "
                f"lower than over the corpus alone"
            )
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
        (the first 20), ``method`` ("ids", "count", or "empty" when the index holds nothing), and the
        other way round ``extra``, the records that are neither a document of the corpus nor one of
        its passages, with ``extra_ids`` (the first 20; ``extra`` is None when the connector can tell
        neither ids nor passages apart).
        """
        source = open_corpus(corpus)
        settings = self.ingest_settings
        id_field = settings.id_field or source.id_field
        text_fields = tuple(settings.text_fields or source.text_fields)
        method = "ids" if self.exists() and self.count() > 0 else "empty"
        scratch, seen = IngestReport(), {}
        expected = 0
        absent: list[tuple[str, Any]] = []  # (id, document) of the missing ones, when looked up by id
        corpus_ids: set[str] = set()
        batch: list[tuple[str, Any]] = []

        def lookup() -> None:
            nonlocal method
            if method != "ids":
                return
            ids = [i for i, _ in batch]
            # Passages whatever the config says now: the index may have been ingested with --split-passages.
            asked = ids + [f"{i}#p0" for i in ids]
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
            corpus_ids.add(prepared.ids[0])
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
        figures["extra"], figures["extra_ids"] = self._extra_records(corpus_ids, figures["indexed"], method)
        return figures, rest

    def _extra_message(self, coverage: Mapping[str, Any], corpus: Path) -> str:
        # Records from elsewhere compete with the corpus for every rank: the scores would be lower
        # than the corpus's own, silently.
        shown = ", ".join(repr(i) for i in coverage["extra_ids"][:3])
        return (
            f"index {self.index!r} holds {coverage['extra']} records that are not documents of {corpus}"
            f"{f' (e.g. {shown})' if shown else ''} besides {coverage['indexed']} of its {coverage['documents']}; "
            f"they would take ranks from the corpus, so the scores would mean nothing: evaluate in a fresh "
            f"index (--index NAME), or drop this one first (--recreate)"
        )

    def _extra_records(self, corpus_ids: set[str], indexed: int, method: str) -> tuple[int | None, list[str]]:
        """How many records of the index belong to no document of ``corpus_ids`` (neither its own
        id nor a passage of it), and the first 20 of them."""
        if method == "empty":
            return 0, []
        held = self.count()
        if method == "ids" and held <= indexed:
            return 0, []  # each document present is at least one record: there is no room for others
        # Reading the records back needs this model's vocabulary: refuse another one here, as search would.
        check_vocabulary(self.connector.index_metadata(), self.vocab.metadata, self.index)
        try:
            extra, ids = 0, []
            for batch in self.connector.export(list(self.vocab.tokens)):
                for rec in batch:
                    parent = (rec.payload or {}).get(PARENT_KEY)
                    if rec.id in corpus_ids or (isinstance(parent, str) and parent in corpus_ids):
                        continue
                    extra += 1
                    if len(ids) < 20:
                        ids.append(rec.id)
            return extra, ids
        except NotImplementedError:
            # Without ids a count is all there is; passages make more records than documents.
            if self.ingest_settings.split_passages:
                return None, []
            return max(held - len(corpus_ids), 0), []


def judged_outside_corpus(corpus: Corpus, id_field: str | None, qrels: Mapping[str, Mapping[str, int]]) -> set[str]:
    """Ids that qrels judge relevant but that no document of ``corpus`` has."""
    judged = {d for rel in qrels.values() for d, score in rel.items() if score > 0}
    for doc in corpus:
        if judged and isinstance(doc, Mapping):
            judged.discard(document_id(doc, id_field or corpus.id_field) or "")
    return judged
