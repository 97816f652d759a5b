"""``sparsebridge export`` and ``migrate``: an index read back, or copied, with no encoding."""

from __future__ import annotations

from pathlib import Path

import click

from .app import (
    _config,
    _emit_json,
    _index_writer,
    common_options,
    index_option,
    main,
    printable,
    progress_option,
    user_errors,
)


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
    from ..config.builder import build_vocabulary, connector_from_config
    from ..index.transfer import export_index

    config = _config(config_path, index=index)
    with connector_from_config(config) as conn:
        vocab = build_vocabulary(config)
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
    from ..config.builder import connector_from_config
    from ..index.transfer import check_distinct_indexes
    from ..index.transfer import migrate as migrate_index

    source_config = _config(from_path)
    target_config = _config(to_path)
    check_distinct_indexes(source_config, target_config)
    with connector_from_config(source_config) as source, _index_writer(target_config, quiet) as target:
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
