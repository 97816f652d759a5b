"""``sparsebridge encode``: texts to token weights (JSONL), or a corpus to a vector dataset."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import click

from ..config import Config
from ..index.corpus import CorpusError, InvalidDocument, open_corpus, read_jsonl
from .app import (
    MAX_LISTED_FAILURES,
    _config,
    _emit_json,
    _encoder,
    _open_cache,
    cache_options,
    common_options,
    main,
    printable,
    progress_option,
)


def _encode_inputs(texts: tuple[str, ...], input_path: Path | None, config: Config) -> list[tuple[str, str]]:
    from ..index.documents import AUTO_ID_FIELDS, text_id

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
    from ..vectors.convert import to_sparse_vectors
    from ..vectors.vocabulary import Vocabulary

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
    from ..index.encoding import Encoding
    from ..index.text_vectors import encode_to_dataset

    if as_query or top_k is not None:
        raise click.UsageError("--query and --top-k apply to JSONL output, not to a vector dataset")
    spec = str(input_path) if input_path is not None else (texts[0] if len(texts) == 1 else None)
    if spec is None or (input_path is not None and texts):
        raise click.UsageError("give one CORPUS (JSONL file, BEIR folder or stdlib:) to encode into a dataset")
    config = _config(config_path, check_connector=False)
    source = open_corpus(spec, limit=limit)
    encoding = Encoding.from_config(config, _encoder(config), cache=cache)  # no backend: into a dataset
    report = encode_to_dataset(
        encoding,
        source,
        output,
        part_rows=part_rows,
        with_text=not no_text,
        settings=config.ingest,
        show_progress=not quiet,
    )
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
