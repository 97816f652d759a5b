"""``sparsebridge register``: make the configured engine call a running ``sparsebridge serve``."""

from __future__ import annotations

from pathlib import Path

import click

from ..config import reveal
from .app import _config, _emit_json, common_options, index_option, main


@main.command(name="register")
@click.option(
    "--server-url",
    default=None,
    help="sparsebridge serve's base URL as the ENGINE reaches it (default: http://[serve] host:[serve] port).",
)
@click.option(
    "--check-url",
    default=None,
    help="The server's base URL as THIS machine reaches it, to check the model it serves (default: --server-url).",
)
@click.option(
    "--semantic-index",
    default=None,
    metavar="NAME",
    help="Elasticsearch: also create index NAME whose field is semantic_text on the endpoints.",
)
@index_option
@common_options
def register_cmd(
    server_url: str | None,
    check_url: str | None,
    semantic_index: str | None,
    index: str | None,
    config_path: Path | None,
    as_json: bool,
) -> None:
    """Create in the engine what makes it encode text with `sparsebridge serve`, for the index.

    Elasticsearch 8.19+ / 9.1+: two `custom` inference endpoints (query and document side);
    OpenSearch 2.x / 3.x: ML connectors, remote models registered and deployed, and a
    `sparse_encoding` ingest pipeline as the index's default. The ids are recorded in the index
    metadata, where `search` finds them with `[search] query_encoding = "engine"`. The index must
    exist (`sparsebridge ingest` first), and the server must serve the model the index was built
    with: its `GET /info` fingerprints are compared with the index's before anything is created.
    """
    from ..config.builder import connector_from_config
    from ..connector import ModelServer
    from ..index.model_server import check_server_model, forget_server_info, server_info

    config = _config(config_path, index=index)
    connector = connector_from_config(config)
    with connector:
        if not type(connector).encodes_text:
            raise click.ClickException(
                f"the {connector.name} backend has no facility to call a model server; register works "
                f"with elasticsearch and opensearch"
            )
        stored = connector.index_metadata()
        if stored is None:
            raise click.ClickException(
                f"index {config.backend.index!r} does not exist; run `sparsebridge ingest` first"
            )
        url = server_url or f"http://{config.serve.host}:{config.serve.port}"
        key = reveal(config.serve.api_key)
        api_key = None if key is None else str(key)
        forget_server_info()  # the server as it is now
        info = server_info(check_url or url, api_key)
        notes = check_server_model(stored, info, config.backend.index, check_url or url)
        server = ModelServer(url, api_key=api_key, semantic_index=semantic_index, info_url=check_url)
        created = connector.register_model_server(server)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    if as_json:
        _emit_json({"index": config.backend.index, "server": url, **created})
        return
    click.echo(f"registered {url} with {connector.name} for index {config.backend.index!r}:")
    for name, value in created.items():
        click.echo(f"  {name}: {value}")
    click.echo('search with the engine encoding the queries: [search] query_encoding = "engine"')
