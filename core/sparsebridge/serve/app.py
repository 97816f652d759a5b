"""The routes: TEI's API at the root and under ``/query`` and ``/document``, the engines' endpoints,
and the safety rails every request passes (API key, body size, one-line errors)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .._version import __version__
from ..config import ServeSettings, reveal
from .auth import check_bearer
from .batching import Batcher
from .errors import ApiError, InvalidInput, TooLarge, Unhealthy, error_response
from .identity import served_identity
from .metrics import Metrics
from .schemas import (
    ElasticsearchSparseRequest,
    EmbedRequest,
    EmbedSparseRequest,
    OpenSearchSparseRequest,
    parse,
)
from .service import SIDES, ModelService

log = logging.getLogger("sparsebridge.serve")
OPEN_ROUTES = frozenset({"/health", "/query/health", "/document/health"})  # a load balancer's probe needs no key
_ES_SIDES = {"search": "query", "query": "query", "ingest": "document", "document": "document"}


def create_app(service: ModelService, settings: ServeSettings | None = None) -> FastAPI:
    """The ASGI app serving ``service`` under ``settings`` ' limits (defaults: ``ServeSettings()``)."""
    settings = settings or ServeSettings()
    metrics = Metrics()
    batcher = Batcher(
        service.run,
        max_batch_tokens=settings.max_batch_tokens,
        max_batch_requests=settings.max_batch_requests,
        max_queue=settings.max_queue,
        batching=settings.batching,
        metrics=metrics,
        inline=service.inline,
    )
    api_key = reveal(settings.api_key)
    identity: dict[str, Any] = {}  # served_identity(service), at the first /info (it hashes the weights)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        yield
        await batcher.stop()  # uvicorn calls this after the requests in flight were answered

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None, title="sparsebridge")
    app.state.batcher, app.state.service, app.state.metrics = batcher, service, metrics

    app.add_middleware(Guard, api_key=api_key, max_request_bytes=settings.max_request_bytes, metrics=metrics)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, "validation", str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)  # the trace goes to the log, never the client
        return error_response(500, "backend", f"internal error: {type(exc).__name__}")

    async def body(request: Request) -> bytes:
        """The body, refused past ``max_request_bytes`` even when no Content-Length announced it."""
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > settings.max_request_bytes:
                raise TooLarge(f"the body exceeds max_request_bytes ({settings.max_request_bytes})")
            chunks.append(chunk)
        return b"".join(chunks)

    async def sparse(inputs: str | list[str], **options: Any) -> list[Any]:
        return await batcher.submit(service.job("sparse", inputs, **options))

    def register(prefix: str, side: str | None) -> None:
        @app.post(f"{prefix}/embed_sparse")
        async def embed_sparse(request: Request) -> JSONResponse:
            req = parse(EmbedSparseRequest, await body(request))
            vectors = await sparse(
                req.inputs,
                fixed_side=side,
                prompt_name=req.prompt_name,
                truncate=req.truncate,
                direction=req.truncation_direction,
            )
            return JSONResponse([[{"index": i, "value": v} for i, v in zip(x.indices, x.values)] for x in vectors])

        @app.post(f"{prefix}/embed")
        async def embed(request: Request) -> JSONResponse:
            req = parse(EmbedRequest, await body(request))
            job = service.job(
                "dense",
                req.inputs,
                fixed_side=side,
                prompt_name=req.prompt_name,
                truncate=req.truncate,
                direction=req.truncation_direction,
                normalize=req.normalize,
                dimensions=req.dimensions,
            )
            return JSONResponse(await batcher.submit(job))

        @app.post(f"{prefix}/elasticsearch/sparse_embedding")
        async def elasticsearch(request: Request) -> JSONResponse:
            req = parse(ElasticsearchSparseRequest, await body(request))
            asked = _ES_SIDES[req.input_type] if req.input_type else None
            if side is not None and asked is not None and asked != side:
                raise InvalidInput(f"input_type {req.input_type!r} is the {asked} side, but this is the /{side} route")
            vectors = await sparse(req.input, fixed_side=side or asked)
            return JSONResponse(
                {
                    "sparse_embeddings": [
                        {"embedding": [{"token": t, "weight": w} for t, w in zip(x.tokens, x.values)]} for x in vectors
                    ]
                }
            )

        @app.post(f"{prefix}/opensearch/sparse_encoding")
        async def opensearch(request: Request) -> JSONResponse:
            req = parse(OpenSearchSparseRequest, await body(request))
            vectors = await sparse(req.texts, fixed_side=side)
            return JSONResponse({"response": [dict(zip(x.tokens, x.values)) for x in vectors]})

        @app.get(f"{prefix}/info")
        async def info() -> JSONResponse:
            if not identity:
                identity.update(await run_in_threadpool(served_identity, service))
            return JSONResponse({**_info(service, settings), **identity})

        @app.get(f"{prefix}/health")
        async def health() -> Response:
            if not batcher.running:
                raise Unhealthy("the model worker is not running")
            return Response(status_code=200)

    register("", None)
    for s in SIDES:
        register(f"/{s}", s)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    return app


class Guard:
    """What every request passes first: the API key, the announced body size, and the request metrics.

    A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` runs each request through a task
    group and memory streams, which costs more than the inference-free query side's model pass.
    """

    def __init__(self, app: Any, *, api_key: str | None, max_request_bytes: int, metrics: Metrics) -> None:
        self.app, self.api_key, self.max_request_bytes, self.metrics = app, api_key, max_request_bytes, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Check the request (API key, announced body size), count it, then pass it on."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            headers = dict(scope["headers"])
            if scope["path"] not in OPEN_ROUTES:
                auth = headers.get(b"authorization")
                check_bearer(auth.decode("latin-1") if auth is not None else None, self.api_key)
            length = headers.get(b"content-length", b"").decode("latin-1")
            if length.isdigit() and int(length) > self.max_request_bytes:
                raise TooLarge(f"the body has {length} bytes; max_request_bytes is {self.max_request_bytes}")
        except ApiError as exc:
            await exc.response()(scope, receive, send_status)
        else:
            await self.app(scope, receive, send_status)
        finally:
            # FastAPI puts the matched route into the shared scope: label by its template, not the raw path.
            label = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(label, str(status)).inc()
            self.metrics.request_seconds.labels(label).observe(time.perf_counter() - started)


def _info(service: ModelService, settings: ServeSettings) -> dict[str, Any]:
    """TEI's ``Info`` object (its required keys), plus the dense model's id when there is one (the
    route adds ``producer`` and ``vocab_fingerprint``: :mod:`.identity`)."""
    about = service.info()
    return {
        "model_id": about["model_id"],
        "model_sha": None,
        "model_dtype": about["dtype"],
        "model_type": {"embedding": {"pooling": "splade"}},
        "max_concurrent_requests": settings.max_queue,
        "max_input_length": about["max_input_length"] or 0,
        "max_batch_tokens": settings.max_batch_tokens,
        "max_batch_requests": settings.max_batch_requests,
        "max_client_batch_size": settings.max_client_batch_size,
        "auto_truncate": settings.auto_truncate,
        "tokenization_workers": 1,
        "version": f"sparsebridge {__version__}",
        "sha": None,
        "docker_label": None,
        "prompts": about["prompts"],
        "dense_model_id": about["dense_model_id"],
    }
