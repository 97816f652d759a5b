"""``sparsebridge search``: queries against the configured index, with explanations."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import click

from .app import _SURROGATE, IndexCommand, _emit_json, _pipeline, index_command_options, main, printable


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
@click.option(
    "--explain/--no-explain",
    default=None,
    help='Show the tokens each hit matched (default: on, unless [search] query_encoding = "engine").',
)
@index_command_options
def search(
    queries: tuple[str, ...],
    top_k: int | None,
    filters: tuple[str, ...],
    mode: str | None,
    explain: bool | None,
    cmd: IndexCommand,
) -> None:
    """Search the index for one or more QUERIES (one batch request) and print ranked hits."""
    for n, query in enumerate(queries, 1):
        if _SURROGATE.search(query):  # bytes that are not UTF-8 in argv arrive as lone surrogates
            raise click.ClickException(f"query {n} ('{printable(query)}') is not valid UTF-8 text")
    config = cmd.config
    flt = _parse_filters(filters)
    if config.search.query_encoding == "engine":
        # The engine encodes the query text: no sparse model loads here.
        from ..config.builder import connector_from_config
        from ..index.engine_search import engine_search

        with connector_from_config(config) as connector:
            results = engine_search(
                config, connector, list(queries), top_k=top_k, filter=flt, mode=mode, explain=bool(explain)
            )
    else:
        explain = explain is not False
        # Without explanations only queries are encoded: an inference-free model needs no torch for them.
        queries_only = not explain and mode in (None, "sparse")
        with _pipeline(config, cmd.quiet, queries_only=queries_only) as pipe:
            results = pipe.search(list(queries), top_k=top_k, filter=flt, explain=explain, mode=mode)
    if cmd.as_json:
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
