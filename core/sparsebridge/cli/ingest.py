"""``sparsebridge ingest``: a text corpus or a vector dataset into the configured index."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..config import Config
from ..errors import ConfigError, IngestInterrupted
from ..index.corpus import open_corpus
from .app import (
    EXIT_INTERRUPTED,
    MAX_LISTED_FAILURES,
    IndexCommand,
    _emit_json,
    _index_writer,
    _open_cache,
    _pipeline,
    _quiet_libraries,
    cache_options,
    index_command_options,
    main,
    printable,
)


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
@index_command_options
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
    cmd: IndexCommand,
) -> None:
    """Encode a corpus and write it to the configured backend.

    CORPUS is a JSONL file (one object per line), a BEIR folder or its corpus.jsonl, or
    "stdlib:" - the docstrings of this Python's standard library (offline; "stdlib:N" for N docs),
    or a vector dataset written by `sparsebridge encode CORPUS --output vectors.parquet` (no
    encoding at all). Re-running updates records in place (ids are the documents' ids or a hash of
    their text). Texts encoded before by the same model and settings come from the encode cache.
    """
    from ..vectors.dataset import is_dataset

    config = cmd.config
    if split_passages is not None:
        config.ingest.split_passages = split_passages
    if batch_size is not None:
        config.model.batch_size = batch_size
    interrupted = False
    if is_dataset(corpus):
        if limit is not None or engine == "ray":
            raise click.UsageError("--limit and --engine ray apply to text corpora, not to a vector dataset")
        with _index_writer(config, cmd.quiet) as writer:
            report = writer.ingest_dataset(corpus, recreate=recreate)
        name = corpus
    else:
        source = open_corpus(corpus, limit=limit)
        name = source.name
        if engine == "ray":
            report = _ingest_with_ray(config, corpus, address, workers, gpus_per_worker, limit, recreate, cmd.quiet)
        else:
            with _pipeline(config, cmd.quiet, _open_cache(no_cache, cache_path)) as pipe:
                try:
                    report = pipe.ingest(source, recreate=recreate)
                except IngestInterrupted as exc:
                    report, interrupted = exc.report, True
    data = {"corpus": name, "backend": config.backend.connector, **report.to_dict()}
    if interrupted:
        data["interrupted"] = True
    if cmd.as_json:
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
        from ..index.ray_engine import ingest_with_ray
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
