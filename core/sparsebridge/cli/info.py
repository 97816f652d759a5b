"""``sparsebridge count``, ``connectors`` and ``info``: what is installed, indexed and configured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..errors import ConnectorError
from .app import (
    SAMPLE_TEXTS,
    _config,
    _emit_json,
    _encoder,
    common_options,
    index_option,
    main,
)


@main.command()
@index_option
@common_options
def count(index: str | None, config_path: Path | None, as_json: bool) -> None:
    """Number of records in the index (documents, or passages with --split-passages); no model loads."""
    from ..config.builder import connector_from_config

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
    from ..connector.plugins import get_connectors, plugin_versions

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
    from ..defaults import resolve_model
    from ..vectors.convert import to_sparse_vectors
    from ..vectors.vocabulary import Vocabulary

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
        # what the transformer really runs (fp32 where the hardware lacks what was asked)
        "precision": getattr(encoder[0], "precision", config.model.precision) if len(encoder) else None,
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
