"""Corpus readers: where documents come from.

A corpus is an iterable of plain dicts. :func:`open_corpus` turns what a user types into one:

* ``path/to/docs.jsonl`` - one JSON object per line;
* ``path/to/beir-dataset/`` or ``.../corpus.jsonl`` - a BEIR dataset (``_id``, ``title``, ``text``);
* ``stdlib:`` (or ``stdlib:N`` for at most N documents) - the docstrings of the Python standard
  library, collected at run time: a real corpus that every machine has, no download needed.

A line that is not a JSON object is not skipped: the reader yields an :class:`InvalidDocument`
naming the file and line, and the ingest report lists it with the other failures.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import importlib
import inspect
import io
import json
import pkgutil
import sys
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CorpusError  # noqa: F401  (defined in errors.py; re-exported here)

STDLIB_SPEC = "stdlib:"
# Enough docstrings for meaningful search, few enough to encode in about a minute on 2 CPU cores.
STDLIB_DEFAULT_LIMIT = 600
STDLIB_MIN_CHARS = 60
STDLIB_PER_MODULE = 12

# Modules whose import has effects (opens a browser, prints, starts a GUI) or that are test suites.
_STDLIB_SKIP = frozenset(
    {
        "antigravity", "this", "idlelib", "turtledemo", "test", "tkinter", "turtle",
        "lib2to3", "pydoc_data", "ensurepip", "venv", "msilib", "winreg", "winsound",
        "msvcrt", "nturl2path", "sre_compile", "sre_constants", "sre_parse",
    }
)  # fmt: skip


@dataclass(frozen=True)
class InvalidDocument:
    """A corpus entry that could not even be parsed; ``ref`` says where it is (``file:line``)."""

    ref: str
    reason: str


@dataclass
class Corpus:
    """Documents plus the field layout they use, so the pipeline knows where ids and text are."""

    documents: Iterable[dict[str, Any] | InvalidDocument]
    name: str
    id_field: str | None = None
    text_fields: tuple[str, ...] = ("title", "text")
    payload_fields: tuple[str, ...] = ()
    size: int | None = None  # number of documents when known up front (progress bars)
    extra: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[dict[str, Any] | InvalidDocument]:
        return iter(self.documents)

    def location(self) -> str | None:
        """Where the document yielded last comes from (``file:line``), when the reader knows."""
        return getattr(self.documents, "ref", None)


# --------------------------------------------------------------------------- JSONL and BEIR


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any] | InvalidDocument]:
    """Yield one dict per non-blank line; a bad line yields an :class:`InvalidDocument`."""
    for _ref, item in read_jsonl_located(path):
        yield item


def read_jsonl_located(path: str | Path) -> Iterator[tuple[str, dict[str, Any] | InvalidDocument]]:
    """Like :func:`read_jsonl`, each item with where it is (``file:line``), for messages by line.

    A UTF-8 byte order mark at the start of the file (Windows editors write one) is skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"corpus file not found: {path}")
    # Binary lines, decoded one by one: a line that is not UTF-8 is reported, not fatal for the file.
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            ref = f"{path.name}:{lineno}"
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            row = parse_jsonl_line(raw, ref)
            if row is not None:
                yield ref, row


def parse_jsonl_line(raw: bytes, ref: str) -> dict[str, Any] | InvalidDocument | None:
    """One JSONL line as a dict, an :class:`InvalidDocument` saying what is wrong with it (``ref``
    names it), or None for a blank line. Shared by every reader, local or distributed."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return InvalidDocument(ref, f"not valid UTF-8: byte {raw[exc.start]:#04x} at column {exc.start + 1}")
    if not line.strip():
        return None
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        return InvalidDocument(ref, f"not valid JSON: {exc.msg} (column {exc.colno})")
    if not isinstance(row, dict):
        return InvalidDocument(ref, f"expected a JSON object, got {type(row).__name__}")
    return row


class _LocatedDocuments:
    """The documents of a JSONL file; ``ref`` is the ``file:line`` of the one yielded last, so the
    pipeline can name the line of a document it refuses."""

    def __init__(self, path: Path, limit: int | None) -> None:
        self.path, self.limit = path, limit
        self.ref: str | None = None

    def __iter__(self) -> Iterator[dict[str, Any] | InvalidDocument]:
        for n, (ref, item) in enumerate(read_jsonl_located(self.path)):
            if self.limit is not None and n >= self.limit:
                return
            self.ref = ref
            yield item


def count_lines(path: str | Path) -> int:
    """Non-blank lines of a JSONL file (a byte-order mark alone counts as blank): its number of documents."""
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip() and line.strip() != codecs.BOM_UTF8)


def beir_corpus_path(path: str | Path) -> Path:
    """``corpus.jsonl`` of a BEIR folder (or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / "corpus.jsonl"
    if not path.is_file():
        raise CorpusError(f"BEIR corpus not found: {path}")
    return path


def read_beir_queries(path: str | Path) -> dict[str, str]:
    """``queries.jsonl`` of a BEIR folder as ``{query_id: text}``, in file order."""
    path = Path(path)
    if path.is_dir():
        path = path / "queries.jsonl"
    if not path.is_file():
        raise CorpusError(f"BEIR queries not found: {path}")
    queries: dict[str, str] = {}
    for ref, row in read_jsonl_located(path):
        if isinstance(row, InvalidDocument):
            raise CorpusError(f"{path.parent / ref}: {row.reason}")
        qid = row.get("_id")
        if isinstance(qid, bool) or not isinstance(qid, (str, int)) or qid == "":
            got = "no '_id'" if qid is None else f"'_id' {qid!r} is not a string or an integer"
            raise CorpusError(f"{path.parent / ref}: {got}; every query needs an '_id' and a 'text'")
        text = row.get("text")
        if not isinstance(text, str):
            raise CorpusError(f"{path.parent / ref}: query {qid!r} has no 'text' string")
        queries[str(qid)] = text
    return queries


def read_qrels(path: str | Path, split: str = "test") -> dict[str, dict[str, int]]:
    """BEIR qrels (``qrels/<split>.tsv``: header, then query-id, corpus-id, score) as
    ``{query_id: {doc_id: relevance}}``. Accepts the folder, the dataset folder or the file."""
    path = Path(path)
    if path.is_dir():
        path = path / f"{split}.tsv" if path.name == "qrels" else path / "qrels" / f"{split}.tsv"
    if not path.is_file():
        raise CorpusError(f"qrels not found: {path}")
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")
        for lineno, row in enumerate(reader, 1):
            if not row or not "".join(row).strip():
                continue
            if lineno == 1 and row[0].strip().lower() in ("query-id", "query_id", "qid"):
                continue
            if len(row) < 3:
                raise CorpusError(f"{path}:{lineno}: expected query-id, corpus-id, score; got {row!r}")
            try:
                score = int(float(row[2]))
            except ValueError as exc:
                raise CorpusError(f"{path}:{lineno}: score {row[2]!r} is not a number") from exc
            qrels.setdefault(row[0].strip(), {})[row[1].strip()] = score
    return qrels


# --------------------------------------------------------------------------- stdlib docstrings


def _stdlib_modules() -> Iterator[tuple[str, Any]]:
    """Importable public stdlib modules, sorted, each package followed by its public submodules."""
    names = getattr(sys, "stdlib_module_names", None)
    if names is None:  # every CPython >= 3.10 has it; kept for other interpreters
        names = sys.builtin_module_names
    for name in sorted(n for n in names if not n.startswith("_") and n not in _STDLIB_SKIP):
        module = _import_quietly(name)
        if module is None:
            continue
        yield name, module
        subs = getattr(module, "__path__", None)
        if subs is None:
            continue
        for info in sorted(pkgutil.iter_modules(subs), key=lambda m: m.name):
            if info.name.startswith("_") or info.name in ("test", "tests", "__main__"):
                continue
            sub = _import_quietly(f"{name}.{info.name}")
            if sub is not None:
                yield f"{name}.{info.name}", sub


def _import_quietly(name: str) -> Any | None:
    # Importing must not print, warn or end the process; a module missing on this platform is skipped.
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        try:
            return importlib.import_module(name)
        except BaseException:  # noqa: BLE001 - ImportError, SystemExit, platform errors alike
            return None


def _own_doc(obj: Any) -> str | None:
    doc = getattr(obj, "__doc__", None)
    if not isinstance(doc, str):
        return None
    doc = inspect.cleandoc(doc).strip()
    return doc if len(doc) >= STDLIB_MIN_CHARS else None


def _defined_in(obj: Any, name: str) -> bool:
    # Skip names a module merely imports (os.path in shutil...); keep its C accelerator's
    # (heapq.heappush lives in _heapq) and its submodules' re-exports (json.JSONDecoder).
    owner = getattr(obj, "__module__", None)
    if owner is None:
        return True
    owner = str(owner).lstrip("_")
    if name == "os" and owner in ("posix", "nt"):
        return True
    return owner == name or owner.startswith(name + ".")


def _module_docs(name: str, module: Any) -> Iterator[dict[str, Any]]:
    doc = _own_doc(module)
    if doc:
        yield {"id": name, "title": name, "text": doc, "module": name, "kind": "module"}
    public = getattr(module, "__all__", None)
    members = sorted(public) if isinstance(public, (list, tuple)) else sorted(dir(module))
    for attr in members:
        if not isinstance(attr, str) or attr.startswith("_"):
            continue
        obj = getattr(module, attr, None)
        if not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        if not _defined_in(obj, name):
            continue
        qual = f"{name}.{attr}"
        doc = _own_doc(obj)
        if doc:
            kind = "class" if inspect.isclass(obj) else "function"
            yield {"id": qual, "title": qual, "text": doc, "module": name, "kind": kind}
        if inspect.isclass(obj):
            for meth in sorted(vars(obj)):
                if meth.startswith("_"):
                    continue
                mdoc = _own_doc(vars(obj)[meth])
                if mdoc:
                    yield {
                        "id": f"{qual}.{meth}", "title": f"{qual}.{meth}", "text": mdoc,
                        "module": name, "kind": "method",
                    }  # fmt: skip


def stdlib_docs(limit: int | None = STDLIB_DEFAULT_LIMIT, per_module: int = STDLIB_PER_MODULE) -> list[dict]:
    """Docstrings of the Python standard library, as documents ``{id, title, text, module, kind}``.

    Modules are visited in sorted order and each contributes at most ``per_module`` docstrings
    (module docstring first, then its public classes, functions and methods, longest first), so the
    corpus is deterministic for a given Python version and spans the whole library. Docstrings
    shorter than 60 characters and exact duplicates are left out. ``limit=None`` keeps them all.
    """
    docs: list[dict] = []
    seen_text: set[str] = set()
    for name, module in _stdlib_modules():
        found = [d for d in _module_docs(name, module) if d["text"] not in seen_text]
        # The module docstring first, then the most informative (longest) docstrings.
        found.sort(key=lambda d: (d["kind"] != "module", -len(d["text"]), d["id"]))
        for doc in found[:per_module]:
            if doc["text"] not in seen_text:
                seen_text.add(doc["text"])
                docs.append(doc)
    if limit is not None and limit <= 0:
        return []
    if limit is not None and len(docs) > limit:
        # Thin evenly rather than cutting the alphabet short, so every module keeps a share.
        step = len(docs) / limit
        docs = [docs[int(i * step)] for i in range(limit)]
    return docs


# --------------------------------------------------------------------------- dispatch


def open_corpus(spec: str | Path, limit: int | None = None) -> Corpus:
    """Resolve a corpus spec (JSONL file, BEIR folder or corpus.jsonl, ``stdlib:[N]``)."""
    text = str(spec)
    if text.startswith("stdlib:"):
        rest = text[len("stdlib:") :].strip()
        n = limit if limit is not None else STDLIB_DEFAULT_LIMIT
        if rest:
            if rest.lower() == "all":
                n = limit
            else:
                try:
                    n = int(rest)
                except ValueError as exc:
                    raise CorpusError(f"stdlib corpus: expected stdlib: or stdlib:N, got {text!r}") from exc
                if n < 1:
                    raise CorpusError(f"stdlib corpus: {text!r} asks for no documents; expected stdlib:N with N >= 1")
        docs = stdlib_docs(limit=n)
        return Corpus(
            documents=docs,
            name=f"Python {sys.version_info.major}.{sys.version_info.minor} standard library docstrings",
            id_field="id",
            text_fields=("title", "text"),
            payload_fields=("title", "module", "kind"),
            size=len(docs),
        )
    path = Path(spec)
    if not path.exists():
        raise CorpusError(f"corpus not found: {path} (expected a JSONL file, a BEIR folder or stdlib:)")
    if path.is_dir():
        corpus_file = beir_corpus_path(path)
        beir = True
    else:
        corpus_file = path
        beir = path.name == "corpus.jsonl"
    size = count_lines(corpus_file)
    if size == 0:
        raise CorpusError(f"corpus {corpus_file} is empty: no documents to ingest")
    docs = _LocatedDocuments(corpus_file, limit)
    if limit is not None:
        size = min(size, limit)
    return Corpus(
        documents=docs,
        name=str(path),
        id_field="_id" if beir else None,
        text_fields=("title", "text"),
        payload_fields=("title",) if beir else (),
        size=size,
    )
