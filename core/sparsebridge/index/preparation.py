"""Preparing documents: where a corpus keeps ids, text and payload (the plan), and each document
turned into the records it becomes (ids, texts, payloads; long texts as passages). No model and
no backend: the in-process ingest, ``encode --output`` and the Ray workers share these functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import IngestSettings
from .corpus import Corpus, InvalidDocument, open_corpus
from .documents import document_id, id_problem, text_id
from .passages import PARENT_KEY, PASSAGE_KEY, split_passages
from .results import IngestReport


@dataclass
class Prepared:
    """A document turned into the records it becomes (one, or one per passage)."""

    ids: list[str]
    texts: list[str]
    payloads: list[dict[str, Any]]


@dataclass
class Plan:
    """Where a corpus keeps ids, text and payload, and whether long texts become passages."""

    id_field: str | None
    text_fields: tuple[str, ...]
    payload_types: dict[str, Any]
    passage_tokens: int | None


def open_documents(documents: Corpus | str | Path | Iterable[Mapping[str, Any]], limit: int | None = None) -> Corpus:
    """``documents`` as a :class:`Corpus`: one already, a corpus spec (JSONL file, BEIR folder,
    ``stdlib:``), or an iterable of dicts (the first ``limit``)."""
    corpus = documents if isinstance(documents, Corpus) else None
    if corpus is None and isinstance(documents, (str, Path)):
        corpus = open_corpus(documents, limit=limit)
    elif corpus is None:
        docs = documents if limit is None else _take(documents, limit)
        size = len(documents) if hasattr(documents, "__len__") else None  # type: ignore[arg-type]
        corpus = Corpus(documents=docs, name="documents", size=min(size, limit) if size and limit else size)
    return corpus


def plan_corpus(settings: IngestSettings, corpus: Corpus, max_seq_length: int | None = None) -> Plan:
    """Where ``corpus`` keeps ids, text and payload (``[ingest]`` settings first, else what the
    corpus says), and the passage size when long texts are split (the model's ``max_seq_length``
    less its two special tokens, unless ``passage_tokens`` is set)."""
    if settings.payload_fields is not None:
        payload_types = dict(settings.payload_fields)
    else:
        payload_types = {name: None for name in corpus.payload_fields}
    passage_tokens = None
    if settings.split_passages:
        passage_tokens = settings.passage_tokens or max(int(max_seq_length or 512) - 2, 8)
    return Plan(
        id_field=settings.id_field or corpus.id_field,
        text_fields=tuple(settings.text_fields or corpus.text_fields),
        payload_types=payload_types,
        passage_tokens=passage_tokens,
    )


def prepare_document(
    doc: Mapping[str, Any] | InvalidDocument,
    n: int,
    plan: Plan,
    report: IngestReport,
    seen: dict[str, int],
    *,
    tokenizer: Any = None,
    passage_overlap: int = 0,
    where: str | None = None,
) -> Prepared | None:
    """Document number ``n`` as the records it becomes (one, or one per passage when
    ``plan.passage_tokens`` is set: then ``tokenizer`` counts the tokens), or None when it cannot be
    ingested: the reason goes to ``report.failed`` under its id (or ``where``). ``seen`` maps the ids
    of this run to their document numbers: a later document with the same id is refused.

    The one definition of document -> (ids, texts, payloads): the in-process ingest, ``encode
    --output`` and the Ray workers all prepare documents here.
    """
    id_field, text_fields, payload_types = plan.id_field, plan.text_fields, plan.payload_types
    passage_tokens = plan.passage_tokens
    where = where or f"#{n}"
    if isinstance(doc, InvalidDocument):
        report.failed[doc.ref] = doc.reason
        return None
    if not isinstance(doc, Mapping):
        report.failed[where] = f"document {n} is a {type(doc).__name__}, not a mapping"
        return None
    bad_id = id_problem(doc, id_field)
    if bad_id is not None:
        report.failed[where] = bad_id
        return None
    doc_id = document_id(doc, id_field)
    parts, problem = [], None
    for name in text_fields:
        value = doc.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            problem = f"text field {name!r} is not a string (got {type(value).__name__})"
            break
        if value.strip():
            parts.append(value.strip())
    if problem is None and not parts:
        problem = f"no text: the fields {', '.join(repr(f) for f in text_fields)} are missing or empty"
    if problem is not None:
        report.failed[doc_id or where] = problem
        return None
    text = " ".join(parts)
    doc_id = doc_id or text_id(text)
    if passage_tokens is None and doc_id in seen:
        # The first document with an id is kept; a later one would silently replace it.
        report.failed[f"{doc_id} (document {n})"] = (
            f"duplicate id {doc_id!r}: document {seen[doc_id]} of this corpus has the same id "
            f"(ids compare as strings; without an id field, equal texts get equal ids); it was kept"
        )
        return None
    payload = {k: doc[k] for k in payload_types if k in doc and doc[k] is not None}
    prepared = _records(doc_id, text, payload, passage_tokens, tokenizer, passage_overlap)
    # A passage id ("a#p1") can be another document's own id: each record id is kept by the
    # first document that gives it, and a later one is reported, never silently overwritten.
    kept = []
    for k, rid in enumerate(prepared.ids):
        if rid in seen:
            report.failed[f"{rid} (document {n})"] = (
                f"duplicate id {rid!r}: document {seen[rid]} of this corpus already gives a record this id "
                f"(a passage's id is its document's id + '#pN'); it was kept"
            )
        else:
            kept.append(k)
    for k in kept:
        seen[prepared.ids[k]] = n
    if len(kept) == len(prepared.ids):
        return prepared
    if not kept:
        return None
    return Prepared(*([part[k] for k in kept] for part in (prepared.ids, prepared.texts, prepared.payloads)))


def _records(
    doc_id: str, text: str, payload: dict[str, Any], passage_tokens: int | None, tokenizer: Any, passage_overlap: int
) -> Prepared:
    """The records of one document: itself, or one per passage when it is too long for the model."""
    if passage_tokens is None:
        return Prepared([doc_id], [text], [payload])
    passages = split_passages(text, tokenizer, passage_tokens, passage_overlap)
    if len(passages) == 1:
        return Prepared([doc_id], [text], [payload])
    return Prepared(
        [f"{doc_id}#p{i}" for i in range(len(passages))],
        passages,
        [{**payload, PARENT_KEY: doc_id, PASSAGE_KEY: i} for i in range(len(passages))],
    )


def _take(items: Iterable[Any], n: int) -> Iterator[Any]:
    for i, item in enumerate(items):
        if i >= n:
            return
        yield item
