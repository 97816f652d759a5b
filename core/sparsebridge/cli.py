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
(bad config, unknown connector, unreachable backend, missing file) ends with one ``Error:`` line
and exit status 1, never a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click

from . import __version__
from .config import Config, ConfigError, load_config
from .connector import ConnectorError
from .corpus import CorpusError, InvalidDocument, open_corpus, read_jsonl
from .defaults import ModelNotFoundError

MAX_LISTED_FAILURES = 20
SAMPLE_TEXTS = (
    "Learned sparse retrieval expands a query into weighted vocabulary terms.",
    "The wing was tested in a wind tunnel at supersonic speed.",
    "json.dumps serializes a Python object to a JSON formatted string.",
    "Where can I find a good pizza restaurant near the train station?",
)


def _user_errors() -> tuple[type[BaseException], ...]:
    from .plugins import UnknownConnectorError

    return (
        ConfigError,
        ConnectorError,
        CorpusError,
        ModelNotFoundError,
        UnknownConnectorError,
        FileNotFoundError,
        PermissionError,
    )


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, (FileNotFoundError, PermissionError)) and exc.filename and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}"
    return " ".join(text.split())


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn expected failures into one readable ``Error:`` line (exit status 1)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _user_errors() as exc:
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


def _pipeline(config: Config, quiet: bool) -> Any:
    from .pipeline import Pipeline

    _quiet_libraries()
    return Pipeline.from_config(config, show_progress=not quiet)


def _encoder(config: Config) -> Any:
    from .pipeline import load_sparse_encoder

    _quiet_libraries()
    return load_sparse_encoder(config.model.name_or_path, config.model.device)


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
@user_errors
def ingest(
    corpus: str,
    limit: int | None,
    recreate: bool,
    split_passages: bool | None,
    batch_size: int | None,
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
    "stdlib:" - the docstrings of this Python's standard library (offline; "stdlib:N" for N docs).
    Re-running updates records in place (ids are the documents' ids or a hash of their text).
    """
    config = _config(config_path, index=index)
    if split_passages is not None:
        config.ingest.split_passages = split_passages
    if batch_size is not None:
        config.model.batch_size = batch_size
    if allow_model_change:
        config.ingest.allow_model_change = True
    source = open_corpus(corpus, limit=limit)
    if engine == "ray":
        report = _ingest_with_ray(config, corpus, address, workers, gpus_per_worker, limit, recreate, quiet)
    else:
        with _pipeline(config, quiet) as pipe:
            report = pipe.ingest(source, recreate=recreate)
    data = {"corpus": source.name, "backend": config.backend.connector, **report.to_dict()}
    if as_json:
        _emit_json(data)
    else:
        click.echo(
            f"ingested {report.documents} documents from {source.name} into index {report.index!r} "
            f"({config.backend.connector}): {report.written} records written, {len(report.failed)} failed, "
            f"{report.retries} retries, {report.seconds:.1f}s ({report.docs_per_second:.1f} docs/s; "
            f"encoding {report.encode_seconds:.1f}s, writing {report.write_seconds:.1f}s)"
        )
        for note in report.notes:
            click.echo(f"  note: {note}")
        for i, (doc_id, reason) in enumerate(sorted(report.failed.items())):
            if i == MAX_LISTED_FAILURES:
                click.echo(f"  ... and {len(report.failed) - i} more (--json lists all)")
                break
            click.echo(f"  failed {doc_id}: {reason}")
    if report.failed:
        raise click.ClickException(f"{len(report.failed)} documents failed; fix them and run the same command again")


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
@user_errors
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
        click.echo(f"query: {result.query}")
        for note in result.notes:
            click.echo(f"  note: {note}")
        if not result.hits:
            click.echo("  no hits")
        for rank, hit in enumerate(result.hits, 1):
            click.echo(f"  {rank:>2}. {hit.id}  score {hit.score:.4f}")
            snippet = _snippet(hit.id, hit.payload)
            if snippet:
                click.echo(f"      {snippet}")
            if hit.explanation is not None:
                if hit.explanation.note:
                    click.echo(f"      ({hit.explanation.note})")
                elif hit.explanation.matches:
                    shown = ", ".join(
                        f"{m.token} {m.query_weight:.2f}x{m.document_weight:.2f}" for m in hit.explanation.matches[:8]
                    )
                    more = len(hit.explanation.matches) - 8
                    click.echo(f"      matched: {shown}" + (f" (+{more} more)" if more > 0 else ""))
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
@index_option
@model_change_option
@common_options
@progress_option
@user_errors
def eval_cmd(
    beir_dir: Path,
    split: str,
    recreate: bool,
    per_query: bool,
    no_ingest: bool,
    index: str | None,
    allow_model_change: bool | None,
    config_path: Path | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """nDCG@10, MRR@10 and Recall@100 on a BEIR dataset through the configured backend.

    Compares the index with BEIR_DIR/corpus.jsonl first and ingests the documents it lacks (all of
    them for a new index; the rest of an interrupted ingest), or with --no-ingest refuses to score a
    partial index.
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
        result = pipe.evaluate(beir_dir, split=split, ingest_if_missing=not no_ingest)
    if not per_query:
        result.pop("per_query", None)
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
    where = f"{config.backend.connector} index {result['index']!r}"
    click.echo(f"{beir_dir.name} ({split}, {result['queries']} queries) on {where}:")
    click.echo(
        f"  nDCG@10 {result['ndcg@10']:.4f}   MRR@10 {result['mrr@10']:.4f}   Recall@100 {result['recall@100']:.4f}"
    )


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
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write JSONL here (default: stdout)."
)
@click.option("--query", "as_query", is_flag=True, help="Encode as queries (encode_query) instead of documents.")
@click.option("--top-k", "-k", type=click.IntRange(min=1), default=None, help="Keep the k strongest tokens.")
@common_options
@progress_option
@user_errors
def encode(
    texts: tuple[str, ...],
    input_path: Path | None,
    output: Path | None,
    as_query: bool,
    top_k: int | None,
    config_path: Path | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Encode TEXTS (or --input FILE.jsonl) to JSONL: {"id", "tokens": {token: weight}} per line."""
    from .pipeline import Vocabulary, to_sparse_vectors

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
            click.echo(line, file=out)
    finally:
        if out is not None:
            out.close()
    if output is not None and not as_json:
        click.echo(f"wrote {len(items)} vectors to {output}", err=True)


# --------------------------------------------------------------------------- connectors, info


@main.command()
@common_options
@user_errors
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
@user_errors
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
