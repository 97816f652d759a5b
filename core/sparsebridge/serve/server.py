"""Running the app: the model loaded first, a listening socket, uvicorn, and a graceful stop."""

from __future__ import annotations

import ipaddress
import socket
import sys
from typing import Any

from ..config import Config, reveal
from ..errors import ConfigError


def serve(config: Config, host: str | None = None, port: int | None = None) -> None:
    """Serve ``config`` 's model until SIGTERM or Ctrl-C.

    The socket is bound first (a port in use fails at once, before the model loads); connections
    made while the model loads wait in the listen backlog. The line ``sparsebridge serve: listening
    on http://HOST:PORT`` (the real port, also with port 0) goes to stderr once requests are
    accepted. On SIGTERM uvicorn stops accepting, answers the requests in flight (the batcher
    finishes every admitted text), then the process exits.
    """
    import uvicorn

    from .app import create_app
    from .service import ModelService

    settings = config.serve
    host = host or settings.host
    port = settings.port if port is None else port
    sock = _listen(host, port)
    try:
        if not _is_loopback(host) and reveal(settings.api_key) is None:
            print(
                f"Warning: serving on {host}, reachable from other machines, without an API key ([serve] api_key)",
                file=sys.stderr,
            )
        service = ModelService.from_config(config)
        app = create_app(service, settings)
        server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", server_header=False)
        )
        bound = sock.getsockname()
        shown = f"[{bound[0]}]" if sock.family == socket.AF_INET6 else bound[0]
        _announce(server, f"sparsebridge serve: listening on http://{shown}:{bound[1]}")
        server.run(sockets=[sock])
    finally:
        sock.close()


def _announce(server: Any, line: str) -> None:
    """Print ``line`` once uvicorn has started (its ``startup`` done), not before."""
    startup = server.startup

    async def announced_startup(*args: Any, **kwargs: Any) -> None:
        await startup(*args, **kwargs)
        if server.started:
            print(line, file=sys.stderr, flush=True)

    server.startup = announced_startup


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, reuse_port=False)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    # asyncio turns Nagle's algorithm off only on sockets whose proto says TCP, and this one's is 0;
    # its connections (which inherit the option) then held each response's body back until the
    # client's delayed ACK of the head: about 40 ms per request on loopback.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
