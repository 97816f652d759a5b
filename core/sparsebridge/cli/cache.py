"""``sparsebridge cache info | clear``: the encode cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .app import (
    _emit_json,
    main,
    user_errors,
)


@main.group()
def cache() -> None:
    """The encode cache: vectors a text ingest computed, reused by later ingests."""


@cache.command(name="info")
@click.option("--cache", "cache_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@user_errors
def cache_info(cache_path: Path | None, as_json: bool) -> None:
    """Size report: file size, entries, and entries per model and settings."""
    from ..vectors.cache import EncodeCache, default_cache_path

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
    from ..vectors.cache import clear_cache, default_cache_path

    freed = clear_cache(cache_path)
    click.echo(f"cleared {cache_path or default_cache_path()} ({freed / 1e6:.1f} MB freed)")
