"""``sparsebridge eval``: a BEIR folder's queries scored over its qrels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..config import Config
from ..index.corpus import InvalidDocument, read_jsonl
from .app import IndexCommand, _emit_json, _pipeline, index_command_options, main, printable


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
@index_command_options
def eval_cmd(
    beir_dir: Path,
    split: str,
    recreate: bool,
    per_query: bool,
    no_ingest: bool,
    exact_recall: bool,
    cmd: IndexCommand,
) -> None:
    """nDCG@10, MRR@10 and Recall@100 on a BEIR dataset through the configured backend.

    Compares the index with BEIR_DIR/corpus.jsonl first and ingests the documents it lacks (all of
    them for a new index; the rest of an interrupted ingest), or with --no-ingest refuses to score a
    partial index. With --exact-recall, the sparse top 10 of every query is also compared with the
    exact ranking (the dot product with every vector the index holds, read back from it), so a
    pruned or approximate index (Elasticsearch token pruning, OpenSearch SEISMIC) shows its cost;
    an exact backend scores 1.0.
    """
    from ..index.corpus import beir_corpus_path

    config = cmd.config
    with _pipeline(config, cmd.quiet) as pipe:
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
    if cmd.as_json:
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
