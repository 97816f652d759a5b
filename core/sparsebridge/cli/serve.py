"""``sparsebridge serve``: the configured model over HTTP (see :mod:`sparsebridge.serve`)."""

from __future__ import annotations

from pathlib import Path

import click

from .app import _config, _quiet_libraries, main


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
    from ..serve import serve

    config = _config(config_path, check_connector=False)
    _quiet_libraries()
    serve(config, host=host, port=port)
