"""Prometheus metrics (``GET /metrics``), on a registry of the app's own so that two apps in one
process (the tests) do not collide."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    """What an operator needs to size the server: requests by route and status, latency, batch sizes
    in texts and tokens, time per model pass, and texts waiting."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "sparsebridge_serve_requests", "HTTP requests by route and status.", ["route", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "sparsebridge_serve_request_seconds", "Request latency in seconds.", ["route"], registry=r
        )
        self.inputs = Counter("sparsebridge_serve_inputs", "Texts encoded, by model kind.", ["kind"], registry=r)
        self.batch_texts = Histogram(
            "sparsebridge_serve_batch_texts",
            "Texts per model pass.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        self.batch_tokens = Histogram(
            "sparsebridge_serve_batch_tokens",
            "Tokens per model pass.",
            buckets=(16, 64, 256, 1024, 4096, 16384, 65536),
            registry=r,
        )
        self.batch_seconds = Histogram("sparsebridge_serve_batch_seconds", "Seconds per model pass.", registry=r)
        self.queue_texts = Gauge("sparsebridge_serve_queue_texts", "Texts admitted and not yet answered.", registry=r)

    def render(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)
