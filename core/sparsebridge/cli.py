"""The ``sparsebridge`` command line.

::

    sparsebridge ingest stdlib:                      # Python's own docstrings, offline
    sparsebridge search "parse command line arguments"
    sparsebridge ingest data/scifact --config es.toml
    sparsebridge eval data/cranfield                 # nDCG@10, MRR@10, Recall@100
    sparsebridge encode "some text" --top-k 10       # JSONL of token weights
    sparsebridge connectors                          # installed backends
    sparsebridge info                                # model summary and sparsity

Every command takes ``--config`` (default: ``$SPARSEBRIDGE_CONFIG``, else ``./sparsebridge.toml``
when present, else the built-in defaults) and ``--json``. Progress goes to stderr. A user error
(any :class:`~sparsebridge.errors.SparsebridgeError`: bad config, unknown connector, unreachable
backend, missing file or model) ends with one ``Error:`` line and exit status 1, never a traceback;
Ctrl-C ends with exit status 130 (an interrupted ingest first prints the report of what it wrote).
All of this is handled in one place, :class:`_Commands`, so every command gets it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import sys
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click

from . import __version__
from .config import Config, check_device, load_config
from .corpus import CorpusError, InvalidDocument, open_corpus, read_jsonl
from .errors import ConfigError, ConnectorError, IngestInterrupted, SparsebridgeError, SparsebridgeWarning

MAX_LISTED_FAILURES = 20
SAMPLE_TEXTS = (
    "Learned sparse retrieval expands a query into weighted vocabulary terms.",
    "The wing was tested in a wind tunnel at supersonic speed.",
    "json.dumps serializes a Python object to a JSON formatted string.",
    "Where can I find a good pizza restaurant near the train station?",
)


EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
# Every error we raise on purpose, and the OS errors a user causes (a path that is not there).
USER_ERRORS: tuple[type[BaseException], ...] = (SparsebridgeError, FileNotFoundError, PermissionError)
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` safe to print: a lone surrogate (from a JSON ``"\\udc80"`` escape) becomes that escape
    instead of a UnicodeEncodeError in the middle of a report."""
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, (FileNotFoundError, PermissionError)) and exc.filename and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}"
    return printable(" ".join(text.split()))


class _Commands(click.Group):
    """The command group. Its ``invoke`` is the one place where user errors become one ``Error:``
    line (exit 1) and Ctrl-C becomes exit status 130, for every command, present and future."""

    def invoke(self, ctx: click.Context) -> Any:
        with warnings.catch_warnings():
            _one_line_warnings()
            try:
                return super().invoke(ctx)
            except USER_ERRORS as exc:
                raise click.ClickException(_one_line(exc)) from None
            except KeyboardInterrupt:
                click.echo("Error: interrupted", err=True)
                raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


def _one_line_warnings() -> None:
    # Our own warnings as one "Warning:" line, without the file name and source line Python adds.
    default = warnings.showwarning

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        if issubclass(category, SparsebridgeWarning):
            click.echo(f"Warning: {printable(str(message))}", err=True)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user errors into one ``Error:`` line; the group already does it for every command, this
    is for a command used on its own (``ingest.main(...)``) or outside the group."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            raise click.ClickException(_one_line(exc)) from None

    return wrapper


def common_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(fn)
    fn = click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="TOML config (default: $SPARSEBRIDGE_CONFIG, else ./sparsebridge.toml, else built-in defaults).",
    )(fn)
    return fn


def progress_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--quiet", "-q", is_flag=True, help="No progress bar.")(fn)


def index_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--index", default=None, help="Index name (overrides [backend] index).")(fn)


def model_change_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--allow-model-change",
        is_flag=True,
        default=None,
        help="Use an index built by another model (weights, pooling, max_active_dims, query side) "
        "([ingest] allow_model_change).",
    )(fn)


def _config(path: Path | None, *, check_connector: bool = True, index: str | None = None) -> Config:
    config = load_config(path, check_connector=check_connector)
    if index:
        config.backend.index = index
    return config


def _quiet_libraries() -> None:
    # The CLI prints its own progress; the model loaders' bars and warnings are noise here.
    warnings.filterwarnings("ignore", message="Sparse invariant checks")
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except (ImportError, AttributeError):  # pragma: no cover - optional
        pass


def _pipeline(config: Config, quiet: bool, cache: Any = None) -> Any:
    from .components import connector_from_config

    # The backend is checked before torch and the models load: an unreachable one fails in a second.
    connector = connector_from_config(config)
    try:
        connector.check()
        from .pipeline import Pipeline

        _quiet_libraries()
        return Pipeline.from_config(config, connector=connector, show_progress=not quiet, cache=cache)
    except BaseException:
        connector.close()
        raise


def _open_cache(no_cache: bool, path: Path | None) -> Any:
    """The encode cache an ingest uses (None with --no-cache)."""
    if no_cache:
        return None
    from .cache import EncodeCache

    return EncodeCache(path)


def cache_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--no-cache", is_flag=True, help="Encode everything; neither read nor fill the encode cache.")(fn)
    fn = click.option(
        "--cache",
        "cache_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Encode cache file (default: $SPARSEBRIDGE_CACHE, else ./sparsebridge-data/encode-cache.sqlite3).",
    )(fn)
    return fn


def _encoder(config: Config) -> Any:
    from .components import load_sparse_encoder

    check_device(config)
    _quiet_libraries()
    return load_sparse_encoder(config.model.name_or_path, config.model.device)


def _emit_json(data: Any) -> None:
    click.echo(printable(json.dumps(data, ensure_ascii=False, indent=2, default=str)))


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sparsebridge")
def main() -> None:
    """Learned sparse (SPLADE) vectors in and out of Elasticsearch, OpenSearch and Qdrant.

    With no config, sparsebridge uses the packaged SPLADE model and an embedded Qdrant Edge index
    in ./sparsebridge-data. Try it offline on Python's own docstrings:

    \b
        sparsebridge ingest stdlib:
        sparsebridge search "read a gzip compressed file"
    """


# --------------------------------------------------------------------------- ingest


@main.command()
@click.argument("corpus")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Ingest at most N documents.")
@click.option("--recreate", is_flag=True, help="Drop the index first.")
@click.option(
    "--split-passages/--no-split-passages",
    default=None,
    help="Split documents longer than the model's max length into passages ([ingest] split_passages).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Encoding batch size.")
@cache_options
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Where to encode: this process, or Ray Data workers (needs sparsebridge[ray]).",
)
@click.option(
    "--address", default=None, help="With --engine ray: the Ray cluster to join (default: start a local Ray)."
)
@click.option(
    "--workers", type=click.IntRange(min=1), default=2, show_default=True, help="With --engine ray: encode actors."
)
@click.option(
    "--gpus-per-worker",
    type=click.FloatRange(min=0),
    default=0,
    show_default=True,
    help="With --engine ray: GPUs per actor.",
)
@index_option
@model_change_option
@common_options
@progress_option
def ingest(
    corpus: str,
    limit: int | None,
    recreate: bool,
    split_passages: bool | None,
    batch_size: int | None,
    no_cache: bool,
    cache_path: Path | None,
    engine: str,
    address: str | None,
    workers: int,
    gpus_per_worker: float,
    index: str | None,
    allow_model_change: bool | None,
    config_path: Path | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Encode a corpus and write it to the configured backend.

    CORPUS is a JSONL file (one object per line), a BEIR folder or its corpus.jsonl, or
    "stdlib:" - the docstrings of this Python's standard library (offline; "stdlib:N" for N docs),
    or a vector dataset written by `sparsebridge encode CORPUS --output vectors.parquet` (no
    encoding at all). Re-running updates records in place (ids are the documents' ids or a hash of
    their text). Texts encoded before by the same model and settings come from the encode cache.
    """
    from .dataset import is_dataset

    config = _config(config_path, index=index)
    if split_passages is not None:
        config.ingest.split_passages = split_passages
    if batch_size is not None:
        config.model.batch_size = batch_size
    if allow_model_change:
        config.ingest.allow_model_change = True
    interrupted = False
    if is_dataset(corpus):
        if limit is not None or engine == "ray":
            raise click.UsageError("--limit and --engine ray apply to text corpora, not to a vector dataset")
        with _pipeline(config, quiet) as pipe:
            report = pipe.ingest_dataset(corpus, recreate=recreate)
        name = corpus
    else:
        source = open_corpus(corpus, limit=limit)
        name = source.name
        if engine == "ray":
            report = _ingest_with_ray(config, corpus, address, workers, gpus_per_worker, limit, recreate, quiet)
        else:
            with _pipeline(config, quiet, _open_cache(no_cache, cache_path)) as pipe:
                try:
                    report = pipe.ingest(source, recreate=recreate)
                except IngestInterrupted as exc:
                    report, interrupted = exc.report, True
    data = {"corpus": name, "backend": config.backend.connector, **report.to_dict()}
    if interrupted:
        data["interrupted"] = True
    if as_json:
        _emit_json(data)
    else:
        _print_ingest_report(report, name, config, interrupted)
    if interrupted:
        click.echo(interrupt_line(report), err=True)
        raise click.exceptions.Exit(EXIT_INTERRUPTED)
    if report.failed:
        raise click.ClickException(f"{len(report.failed)} documents failed; fix them and run the same command again")


def interrupt_line(report: Any) -> str:
    """The last line of an interrupted ingest: what is in the index, and how to go on."""
    return (
        f"Error: interrupted with {report.written} records written to index {report.index!r} of the "
        f"{report.documents} documents read; run the same command again to write the rest (nothing is duplicated)"
    )


def _print_ingest_report(report: Any, source: str, config: Config, interrupted: bool) -> None:
    if interrupted:
        # Documents read, records encoded and records written differ at an interrupt: say which is which.
        head = (
            f"interrupted: {report.documents} documents read from {printable(source)}, {report.records} records "
            f"encoded, of which {report.written} written to index {report.index!r} ({config.backend.connector}) "
            f"before the interrupt"
        )
    else:
        head = (
            f"ingested {report.documents} documents from {printable(source)} into index {report.index!r} "
            f"({config.backend.connector}): {report.written} records written"
        )
    click.echo(
        f"{head}, {len(report.failed)} failed, {report.retries} retries, {report.seconds:.1f}s "
        f"({report.docs_per_second:.1f} docs/s; encoding {report.encode_seconds:.1f}s, writing "
        f"{report.write_seconds:.1f}s)"
    )
    if report.truncated:
        click.echo(
            f"  {report.truncated} documents are longer than the model's max_seq_length "
            f"({report.max_seq_length} tokens) and were truncated; --split-passages indexes them whole"
        )
    for note in report.notes:
        click.echo(printable(f"  note: {note}"))
    if report.cache_hits or report.cache_misses:
        click.echo(f"  encode cache: {report.cache_hits} served, {report.cache_misses} encoded")
    if report.cache_corrupt:
        click.echo(
            f"warning: {report.cache_corrupt} corrupt encode-cache entries were discarded and encoded again",
            err=True,
        )
    for i, (doc_id, reason) in enumerate(sorted(report.failed.items())):
        if i == MAX_LISTED_FAILURES:
            click.echo(f"  ... and {len(report.failed) - i} more (--json lists all)")
            break
        click.echo(printable(f"  failed {doc_id}: {reason}"))


def _ingest_with_ray(
    config: Config,
    corpus: str,
    address: str | None,
    workers: int,
    gpus_per_worker: float,
    limit: int | None,
    recreate: bool,
    quiet: bool,
) -> Any:
    try:
        from .ray import ingest_with_ray
    except ImportError as exc:
        raise ConfigError(f"--engine ray needs Ray: pip install 'sparsebridge[ray]' ({exc})") from exc
    _quiet_libraries()
    return ingest_with_ray(
        config,
        corpus,
        address=address,
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        limit=limit,
        recreate=recreate,
        show_progress=not quiet,
    )


# --------------------------------------------------------------------------- search


def _parse_filters(items: Iterable[str]) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--filter")
        try:
            value = json.loads(raw)
            if isinstance(value, (dict, list)):
                value = raw
        except json.JSONDecodeError:
            value = raw
        if key in out:
            out[key] = (out[key] if isinstance(out[key], list) else [out[key]]) + [value]
        else:
            out[key] = value
    return out or None


def _snippet(hit_id: str, payload: dict[str, Any], width: int = 100) -> str:
    title = payload.get("title")
    text = title if title and str(title) != hit_id else payload.get("text") or ""
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


@main.command()
@click.argument("queries", nargs=-1, required=True)
@click.option("--top-k", "-k", type=click.IntRange(min=1), default=None, help="Hits per query ([search] top_k).")
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE", help="Payload filter; repeat for more.")
@click.option("--mode", type=click.Choice(["sparse", "dense", "hybrid"]), default=None, help="Which vectors to use.")
@click.option("--explain/--no-explain", default=True, show_default=True, help="Show the tokens each hit matched.")
@index_option
@model_change_option
@common_options
@progress_option
def search(
    queries: tuple[str, ...],
    top_k: int | None,
    filters: tuple[str, ...],
    mode: str | None,
    explain: bool,
    index: str | None,
    allow_model_change: bool | None,
    config_path: Path | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Search the index for one or more QUERIES (one batch request) and print ranked hits."""
    for n, query in enumerate(queries, 1):
        if _SURROGATE.search(query):  # bytes that are not UTF-8 in argv arrive as lone surrogates
            raise click.ClickException(f"query {n} ('{printable(query)}') is not valid UTF-8 text")
    config = _config(config_path, index=index)
    if allow_model_change:
        config.ingest.allow_model_change = True
    flt = _parse_filters(filters)
    with _pipeline(config, quiet) as pipe:
        results = pipe.search(list(queries), top_k=top_k, filter=flt, explain=explain, mode=mode)
    if as_json:
        _emit_json([r.to_dict() for r in results])
        return
    for n, result in enumerate(results):
        if n:
            click.echo()
        click.echo(printable(f"query: {result.query}"))
        for note in result.notes:
            click.echo(f"  note: {note}")
        if not result.hits:
            click.echo("  no hits")
        for rank, hit in enumerate(result.hits, 1):
            click.echo(printable(f"  {rank:>2}. {hit.id}  score {hit.score:.4f}"))
            snippet = _snippet(hit.id, hit.payload)
            if snippet:
                click.echo(printable(f"      {snippet}"))
            if hit.explanation is not None:
                if hit.explanation.note:
                    click.echo(f"      ({hit.explanation.note})")
                elif hit.explanation.matches:
                    shown = ", ".join(
                        f"{m.token} {m.query_weight:.2f}x{m.document_weight:.2f}" for m in hit.explanation.matches[:8]
                    )
                    more = len(hit.explanation.matches) - 8
                    click.echo(printable(f"      matched: {shown}" + (f" (+{more} more)" if more > 0 else "")))
                else:
                    click.echo("      matched: no shared tokens (dense hit)")


# --------------------------------------------------------------------------- eval


@main.command(name="eval")
@click.argument("beir_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--split", default="test", show_default=True, help="Which qrels/<split>.tsv to use.")
@click.option("--recreate", is_flag=True, help="Drop the index and ingest the corpus again.")
@click.option("--per-query", is_flag=True, help="Include per-query figures in --json output.")
@click.option(
    "--no-ingest", is_flag=True, help="Refuse an index that lacks documents of the corpus instead of ingesting them."
)
@click.option(
    "--exact-recall",
    is_flag=True,
    help="Also measure what pruning/approximation costs: recall of the exact sparse top 10 in the engine's top 10.",
)
@index_option
@model_change_option
@common_options
@progress_option
def eval_cmd(
    beir_dir: Path,
    split: str,
    recreate: bool,
    per_query: bool,
    no_ingest: bool,
    exact_recall: bool,
    index: str | None,
    allow_model_change: bool | None,
    config_path: Path | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """nDCG@10, MRR@10 and Recall@100 on a BEIR dataset through the configured backend.

    Compares the index with BEIR_DIR/corpus.jsonl first and ingests the documents it lacks (all of
    them for a new index; the rest of an interrupted ingest), or with --no-ingest refuses to score a
    partial index. With --exact-recall, the sparse top 10 of every query is also compared with the
    exact ranking (the dot product with every vector the index holds, read back from it), so a
    pruned or approximate index (Elasticsearch token pruning, OpenSearch SEISMIC) shows its cost;
    an exact backend scores 1.0.
    """
    from .corpus import beir_corpus_path

    config = _config(config_path, index=index)
    if allow_model_change:
        config.ingest.allow_model_change = True
    with _pipeline(config, quiet) as pipe:
        if recreate:
            pipe.connector.drop()
        elif pipe.exists() and pipe.count() > 0:
            _check_index_holds(pipe, beir_corpus_path(beir_dir), config)
        result = pipe.evaluate(beir_dir, split=split, ingest_if_missing=not no_ingest, exact_recall=exact_recall)
    if not per_query:
        result.pop("per_query", None)
        for figures in (result.get("exact_recall") or {}).values():
            figures.pop("per_query", None)
    result["backend"] = config.backend.connector
    if as_json:
        _emit_json(result)
        return
    if "ingest" in result:
        ing, cov = result["ingest"], result["coverage"]
        if cov["indexed"]:
            click.echo(f"the index held {cov['indexed']} of the {cov['documents']} documents: resuming the ingest")
        click.echo(
            f"ingested {ing['documents']} documents ({ing['written']} records, {len(ing['failed'])} failed) "
            f"in {ing['seconds']:.1f}s"
        )
        for note in ing.get("notes", []):
            click.echo(printable(f"  note: {note}"))
    where = f"{config.backend.connector} index {result['index']!r}"
    click.echo(f"{beir_dir.name} ({split}, {result['queries']} queries) on {where}:")
    click.echo(
        f"  nDCG@10 {result['ndcg@10']:.4f}   MRR@10 {result['mrr@10']:.4f}   Recall@100 {result['recall@100']:.4f}"
    )
    for note in result.get("notes", []):
        click.echo(printable(f"  note: {note}"))
    for side, figures in (result.get("exact_recall") or {}).items():
        k, recall = figures["k"], figures["recall"]
        shown = "n/a (no query shares a token with the index)" if recall is None else f"{recall:.4f}"
        click.echo(
            f"  exact recall@{k} ({side}): {shown}: the engine's top {k} against the exact dot product with "
            f"the {figures['documents']} records of the index, {figures['queries']} queries"
        )
        for note in figures.get("notes", []):
            click.echo(printable(f"  note: {note}"))


def _check_index_holds(pipe: Any, corpus_file: Path, config: Config) -> None:
    """Refuse to evaluate an index that holds other documents (e.g. the stdlib demo)."""
    sample: list[str] = []
    for row in read_jsonl(corpus_file):
        if not isinstance(row, InvalidDocument) and row.get("_id") is not None:
            sample.append(str(row["_id"]))
        if len(sample) >= 20:
            break
    try:
        found = pipe.connector.get(sample + [f"{s}#p0" for s in sample])
    except NotImplementedError:
        return
    if sample and not found:
        raise click.ClickException(
            f"index {config.backend.index!r} already holds {pipe.count()} records that are not from "
            f"{corpus_file.parent.name}; evaluate into another index (--index NAME) or use --recreate"
        )


# --------------------------------------------------------------------------- encode


def _encode_inputs(texts: tuple[str, ...], input_path: Path | None, config: Config) -> list[tuple[str, str]]:
    from .pipeline import AUTO_ID_FIELDS, text_id

    items: list[tuple[str, str]] = [(text_id(t), t) for t in texts]
    if input_path is not None:
        fields = config.ingest.text_fields or ("title", "text")
        for n, row in enumerate(read_jsonl(input_path), 1):
            if isinstance(row, InvalidDocument):
                raise CorpusError(f"{input_path}: line {row.ref}: {row.reason}")
            parts = [row[f].strip() for f in fields if isinstance(row.get(f), str) and row[f].strip()]
            if not parts:
                raise CorpusError(f"{input_path}: document {n} has no text in {', '.join(fields)}")
            text = " ".join(parts)
            id_fields = (config.ingest.id_field,) if config.ingest.id_field else AUTO_ID_FIELDS
            doc_id = next((str(row[f]) for f in id_fields if row.get(f) is not None), None)
            items.append((doc_id or text_id(text), text))
    if not items:
        raise click.UsageError("give TEXTS or --input FILE.jsonl")
    return items


@main.command()
@click.argument("texts", nargs=-1)
@click.option(
    "--input", "input_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="JSONL documents."
)
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path),
    help="Write JSONL here (default: stdout); a NAME.parquet folder, or any name after a CORPUS path: "
    "a vector dataset.",
)
@click.option("--query", "as_query", is_flag=True, help="Encode as queries (encode_query) instead of documents.")
@click.option("--top-k", "-k", type=click.IntRange(min=1), default=None, help="Keep the k strongest tokens.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Dataset mode: encode at most N documents.")
@click.option(
    "--part-rows", type=click.IntRange(min=1), default=None, help="Dataset mode: rows per Parquet part file (4096)."
)
@click.option("--no-text", is_flag=True, help="Dataset mode: leave the text column empty.")
@cache_options
@common_options
@progress_option
def encode(
    texts: tuple[str, ...],
    input_path: Path | None,
    output: Path | None,
    as_query: bool,
    top_k: int | None,
    limit: int | None,
    part_rows: int | None,
    no_text: bool,
    no_cache: bool,
    cache_path: Path | None,
    config_path: Path | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Encode TEXTS (or --input FILE.jsonl) to JSONL: {"id", "tokens": {token: weight}} per line.

    With --output NAME.parquet, encode a corpus once into a vector dataset instead:
    `sparsebridge encode CORPUS --output vectors.parquet` (CORPUS as for ingest). It is resumable:
    a run that was stopped or killed is run again and encodes only what is missing; texts the encode
    cache holds are not encoded again (as for ingest). A CORPUS path that exists is a corpus whatever
    the output is called. Then `sparsebridge ingest vectors.parquet` writes it to any backend without
    encoding.
    """
    from .pipeline import Vocabulary, to_sparse_vectors

    # A path that exists is a corpus, whatever the output is called: never a text to encode.
    names_corpus = len(texts) == 1 and input_path is None and Path(texts[0]).exists()
    if output is not None and (output.suffix == ".parquet" or names_corpus):
        cache = _open_cache(no_cache, cache_path)
        with cache or contextlib.nullcontext():
            args = (texts, input_path, output, as_query, top_k, limit, part_rows, no_text, config_path)
            _encode_dataset(*args, as_json, quiet, cache)
        return
    config = _config(config_path, check_connector=False)
    items = _encode_inputs(texts, input_path, config)
    encoder = _encoder(config)
    vocab = Vocabulary(encoder.tokenizer, config.model.name_or_path)
    method = encoder.encode_query if as_query else encoder.encode_document
    kwargs: dict[str, Any] = {"batch_size": config.model.batch_size, "show_progress_bar": not quiet}
    if config.model.max_active_dims:
        kwargs["max_active_dims"] = config.model.max_active_dims
    vectors = to_sparse_vectors(method([t for _, t in items], **kwargs), vocab)
    out = open(output, "w", encoding="utf-8") if output else None  # noqa: SIM115 - closed below
    try:
        for (doc_id, _), vec in zip(items, vectors):
            pairs = sorted(zip(vec.tokens, vec.values), key=lambda p: (-p[1], p[0]))[:top_k]
            line = json.dumps({"id": doc_id, "tokens": {t: round(w, 6) for t, w in pairs}}, ensure_ascii=False)
            click.echo(printable(line), file=out)
    finally:
        if out is not None:
            out.close()
    if output is not None and not as_json:
        click.echo(f"wrote {len(items)} vectors to {output}", err=True)


def _encode_dataset(
    texts: tuple[str, ...],
    input_path: Path | None,
    output: Path,
    as_query: bool,
    top_k: int | None,
    limit: int | None,
    part_rows: int | None,
    no_text: bool,
    config_path: Path | None,
    as_json: bool,
    quiet: bool,
    cache: Any = None,
) -> None:
    from .pipeline import Pipeline

    if as_query or top_k is not None:
        raise click.UsageError("--query and --top-k apply to JSONL output, not to a vector dataset")
    spec = str(input_path) if input_path is not None else (texts[0] if len(texts) == 1 else None)
    if spec is None or (input_path is not None and texts):
        raise click.UsageError("give one CORPUS (JSONL file, BEIR folder or stdlib:) to encode into a dataset")
    config = _config(config_path, check_connector=False)
    source = open_corpus(spec, limit=limit)
    _quiet_libraries()
    encoder = load_sparse_encoder_for(config)
    dense = None
    if config.search.hybrid:
        from .components import load_dense_encoder

        dense = load_dense_encoder(config.search.dense_model, config.model.device)
    pipe = Pipeline(
        encoder,
        connector=None,  # type: ignore[arg-type]  # encoding into a dataset needs no backend
        model_name=config.model.name_or_path,
        dense_encoder=dense,
        dense_model_name=config.search.dense_model if dense is not None else None,
        batch_size=config.model.batch_size,
        max_active_dims=config.model.max_active_dims,
        ingest_settings=config.ingest,
        show_progress=not quiet,
        cache=cache,
    )
    report = pipe.encode_dataset(source, output, part_rows=part_rows, with_text=not no_text)
    data = {"corpus": source.name, "output": str(output), **report.to_dict()}
    if as_json:
        _emit_json(data)
    else:
        # records: encoded by this run; skipped: documents a previous run already wrote (resume).
        click.echo(
            f"encoded {report.records} records of {report.documents} documents from {source.name} into {output}: "
            f"{report.written} written, {report.skipped} documents already there, {len(report.failed)} failed, "
            f"{report.seconds:.1f}s"
        )
        if report.cache_hits or report.cache_misses:
            click.echo(f"  encode cache: {report.cache_hits} served, {report.cache_misses} encoded")
        for i, (doc_id, reason) in enumerate(sorted(report.failed.items())):
            if i == MAX_LISTED_FAILURES:
                click.echo(f"  ... and {len(report.failed) - i} more (--json lists all)")
                break
            click.echo(f"  failed {doc_id}: {reason}")
    if report.failed:
        raise click.ClickException(f"{len(report.failed)} documents failed; fix them and run the same command again")


def load_sparse_encoder_for(config: Config) -> Any:
    """The configured sparse encoder (loaded lazily: the CLI's other commands never import torch)."""
    from .pipeline import load_sparse_encoder

    return load_sparse_encoder(config.model.name_or_path, config.model.device)


# --------------------------------------------------------------------------- export, migrate


@main.command()
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path), help="Dataset folder (NAME.parquet).")
@click.option("--batch-size", type=click.IntRange(min=1), default=500, show_default=True, help="Records per request.")
@index_option
@common_options
@progress_option
@user_errors
def export(
    output: Path, batch_size: int, index: str | None, config_path: Path | None, as_json: bool, quiet: bool
) -> None:
    """Read the configured index back, vectors included, into a vector dataset (no encoding).

    What was written comes back bit for bit (Qdrant, and Elasticsearch/OpenSearch documents whose
    _source holds the weights); weights an engine kept only as Lucene's 9-bit values are marked so
    in the dataset's metadata (values_quantised = "lucene-9bit"). Re-running resumes.
    """
    from .components import connector_from_config
    from .transfer import export_index
    from .vocabulary import Vocabulary

    config = _config(config_path, index=index)
    _quiet_libraries()
    with connector_from_config(config) as conn:
        encoder = load_sparse_encoder_for(config)
        vocab = Vocabulary.of(encoder, config.model.name_or_path)
        report = export_index(
            conn, vocab, output, index=config.backend.index, batch_size=batch_size, show_progress=not quiet
        )
    if as_json:
        _emit_json(report.to_dict())
        return
    click.echo(
        f"exported {report.read} records of {config.backend.connector} index {config.backend.index!r} to {output}: "
        f"{report.written} written, {report.skipped} already there, {len(report.failed)} failed; weights "
        f"{'as written' if report.values_quantised == 'none' else 'Lucene 9-bit'}; {report.seconds:.1f}s"
    )
    if report.restarted:
        click.echo(printable(f"  note: {report.restarted}"))
    if report.failed:
        raise click.ClickException(f"{len(report.failed)} records could not be exported; see --json")


@main.command()
@click.option(
    "--from", "from_path", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Source config."
)
@click.option("--to", "to_path", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Target config.")
@click.option("--batch-size", type=click.IntRange(min=1), default=500, show_default=True, help="Records per request.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@progress_option
@user_errors
def migrate(from_path: Path, to_path: Path, batch_size: int, as_json: bool, quiet: bool) -> None:
    """Copy an index to another backend or index: vectors move as they are, nothing is encoded.

    Streams the source index (config --from) into the target (config --to) with progress and
    compares the counts at the end. Interrupted? Run the same command again: writes are upserts.
    """
    from .components import connector_from_config
    from .transfer import check_distinct_indexes
    from .transfer import migrate as migrate_index

    source_config = _config(from_path)
    target_config = _config(to_path)
    check_distinct_indexes(source_config, target_config)
    with connector_from_config(source_config) as source, _pipeline(target_config, quiet) as target:
        report = migrate_index(
            source, target, source_name=source_config.backend.index, batch_size=batch_size, show_progress=not quiet
        )
    data = {"from": str(from_path), "to": str(to_path), **report.to_dict()}
    if as_json:
        _emit_json(data)
    else:
        click.echo(
            f"migrated {report.read} records from {source_config.backend.connector} index "
            f"{source_config.backend.index!r} to {target_config.backend.connector} index "
            f"{target_config.backend.index!r}: {report.written} written, {len(report.failed)} failed; "
            f"counts {report.source_count} -> {report.target_count}; {report.seconds:.1f}s"
        )
    if report.failed:
        raise click.ClickException(f"{len(report.failed)} records failed; run the same command again")
    if not report.counts_equal:
        raise click.ClickException(
            f"the target index holds {report.target_count} records, the source {report.source_count}: the target "
            f"held {report.target_before} records before this migration (some of them not from the source), "
            f"or the source changed during the migration"
        )


# --------------------------------------------------------------------------- cache


@main.group()
def cache() -> None:
    """The encode cache: vectors a text ingest computed, reused by later ingests."""


@cache.command(name="info")
@click.option("--cache", "cache_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@user_errors
def cache_info(cache_path: Path | None, as_json: bool) -> None:
    """Size report: file size, entries, and entries per model and settings."""
    from .cache import EncodeCache, default_cache_path

    path = cache_path or default_cache_path()
    if not path.exists():
        data: dict[str, Any] = {"path": str(path), "file_bytes": 0, "entries": 0, "producers": []}
    else:
        with EncodeCache(path) as c:
            data = c.info()
    if as_json:
        _emit_json(data)
        return
    click.echo(f"encode cache {data['path']}: {data['entries']} entries, {data['file_bytes'] / 1e6:.1f} MB")
    for p in data["producers"]:
        click.echo(
            f"  {p['entries']:>8} {p.get('kind', 'sparse')} vectors of {p.get('model')!r} "
            f"(max_active_dims {p.get('max_active_dims')}, weights {str(p.get('weights_sha256'))[:12]})"
        )


@cache.command(name="clear")
@click.option("--cache", "cache_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
@user_errors
def cache_clear(cache_path: Path | None) -> None:
    """Delete the encode cache file."""
    from .cache import clear_cache, default_cache_path

    freed = clear_cache(cache_path)
    click.echo(f"cleared {cache_path or default_cache_path()} ({freed / 1e6:.1f} MB freed)")


# --------------------------------------------------------------------------- serve


@main.command(name="serve")
@click.option("--host", default=None, help="Address to listen on (default: [serve] host, else 127.0.0.1).")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=None, help="Port (default: [serve] port, else 8080; 0: any free)."
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML config (default: $SPARSEBRIDGE_CONFIG, else ./sparsebridge.toml, else built-in defaults).",
)
def serve_cmd(host: str | None, port: int | None, config_path: Path | None) -> None:
    """Serve the configured model over HTTP until SIGTERM or Ctrl-C.

    TEI's API (POST /embed_sparse, /embed, GET /info, /health, /metrics; /query/... and
    /document/... fix the side), plus the endpoints Elasticsearch's custom inference service and an
    OpenSearch ML connector call (see the README). Loopback only unless --host says otherwise.
    """
    from .serve import serve

    config = _config(config_path, check_connector=False)
    _quiet_libraries()
    serve(config, host=host, port=port)


# --------------------------------------------------------------------------- connectors, info


@main.command()
@index_option
@common_options
def count(index: str | None, config_path: Path | None, as_json: bool) -> None:
    """Number of records in the index (documents, or passages with --split-passages); no model loads."""
    from .components import connector_from_config

    config = _config(config_path, index=index)
    with connector_from_config(config) as connector:
        connector.check()
        if connector.index_metadata() is None:
            raise ConnectorError(f"index {config.backend.index!r} does not exist; run `sparsebridge ingest` first")
        n = connector.count()
    if as_json:
        _emit_json({"index": config.backend.index, "backend": config.backend.connector, "count": n})
    else:
        click.echo(f"{n} records in index {config.backend.index!r} ({config.backend.connector})")


@main.command()
@common_options
def connectors(config_path: Path | None, as_json: bool) -> None:
    """List the installed connector plugins, their versions and which one the config uses."""
    from .plugins import get_connectors, plugin_versions

    config = _config(config_path, check_connector=False)
    classes = get_connectors()
    rows = []
    versions = plugin_versions()
    for name, cls in sorted(classes.items()):
        row = next((r for r in versions if name in r.get("connectors", "").split(",")), {})
        rows.append(
            {
                "name": name,
                "distribution": row.get("distribution", "?"),
                "version": row.get("version", "?"),
                "module": cls.__module__.split(".")[0],
                "description": cls.description,
                "configured": name == config.backend.connector,
            }
        )
    if as_json:
        _emit_json(rows)
        return
    if not rows:
        click.echo("no connectors installed; install an extra such as: pip install 'sparsebridge[qdrant]'")
        return
    for r in rows:
        mark = "*" if r["configured"] else " "
        click.echo(f"{mark} {r['name']:<14} {r['distribution']} {r['version']:<10} {r['description']}")
    click.echo("(* = the connector your config uses)")


@main.command()
@click.option("--text", "texts", multiple=True, help="Measure sparsity on these texts instead of built-in samples.")
@common_options
def info(texts: tuple[str, ...], config_path: Path | None, as_json: bool) -> None:
    """Model summary (vocabulary, max length, modules) and the sparsity of its vectors."""
    from .defaults import resolve_model
    from .pipeline import Vocabulary, to_sparse_vectors

    config = _config(config_path, check_connector=False)
    encoder = _encoder(config)
    vocab = Vocabulary(encoder.tokenizer, config.model.name_or_path)
    samples = list(texts) or list(SAMPLE_TEXTS)
    kwargs: dict[str, Any] = {"batch_size": config.model.batch_size, "show_progress_bar": False}
    if config.model.max_active_dims:
        kwargs["max_active_dims"] = config.model.max_active_dims
    docs = encoder.encode_document(samples, **kwargs)
    queries = encoder.encode_query(samples, **kwargs)
    doc_vectors = to_sparse_vectors(docs, vocab)
    dim = int(docs.shape[-1])
    modules = [type(m).__name__ for m in getattr(encoder, "_modules", {}).values()]  # nn.Sequential parts
    data = {
        "model": config.model.name_or_path,
        "path": resolve_model(config.model.name_or_path),
        "modules": modules,
        "device": str(getattr(encoder, "device", "?")),
        "dimensions": dim,
        "vocab_size": vocab.metadata["vocab_size"],
        "vocab_fingerprint": vocab.metadata["vocab_fingerprint"],
        "max_seq_length": getattr(encoder, "max_seq_length", None),
        "max_active_dims": config.model.max_active_dims,
        "query_side": config.model.query_side,
        "sparsity": {
            "texts": len(samples),
            "document": _sparsity(encoder, docs, dim),
            "query": _sparsity(encoder, queries, dim),
        },
        "example": {"text": samples[0], "top_tokens": _top(doc_vectors[0], 10)},
        "config": config.to_dict(),
    }
    if as_json:
        _emit_json(data)
        return
    click.echo(f"model        {data['model']}  ({data['path']})")
    click.echo(f"modules      {' -> '.join(modules) or '?'} on {data['device']}")
    click.echo(
        f"vocabulary   {data['vocab_size']} tokens, {dim} dimensions, fingerprint {data['vocab_fingerprint'][:16]}"
    )
    click.echo(f"max length   {data['max_seq_length']} tokens; max_active_dims {data['max_active_dims'] or 'all'}")
    for side in ("document", "query"):
        s = data["sparsity"][side]
        click.echo(
            f"{side:<12} {s['active_dims']:.1f} active dimensions on average "
            f"({100 * s['sparsity_ratio']:.3f}% zeros) over {len(samples)} sample texts"
        )
    tops = ", ".join(f"{t} {w:.2f}" for t, w in data["example"]["top_tokens"])
    click.echo(f"example      {samples[0]!r}\n             -> {tops}")
    backend = data["config"]["backend"]
    opts = ", ".join(f"{k}={v!r}" for k, v in backend.items() if k not in ("connector", "index"))
    click.echo(f"backend      {backend['connector']} index {backend['index']!r} ({opts}); config {config.source}")


def _sparsity(encoder: Any, embeddings: Any, dim: int) -> dict[str, float]:
    fn = getattr(encoder, "sparsity", None)
    if fn is not None:
        s = fn(embeddings)
        return {"active_dims": float(s["active_dims"]), "sparsity_ratio": float(s["sparsity_ratio"])}
    emb = embeddings.coalesce() if embeddings.is_sparse else embeddings.to_sparse().coalesce()
    active = emb.values().gt(0).sum().item() / max(emb.shape[0], 1)
    return {"active_dims": active, "sparsity_ratio": 1 - active / dim}


def _top(vector: Any, k: int) -> list[tuple[str, float]]:
    return sorted(zip(vector.tokens, vector.values), key=lambda p: -p[1])[:k]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
