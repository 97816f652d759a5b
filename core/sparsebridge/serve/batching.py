"""Dynamic batching: the texts of concurrent requests joined into model passes.

Requests wait in one queue. One worker takes the oldest request and every waiting request with the
same :class:`~sparsebridge.serve.service.BatchKey` (side, prompt, truncation...) that still fits the
token budget and the text limit, and runs them as one model pass on a thread of its own while the
event loop keeps accepting requests. The next batch is formed from whatever arrived meanwhile, so
there is no fixed wait: under light load a request goes alone, under heavy load passes fill up.
Past ``max_queue`` admitted texts a request is refused with 429.

Keys whose pass is a table lookup (``inline``: the query side of an inference-free model) skip
the model thread: handing a pass to it and back costs more than the pass. Their requests are
collected as they arrive and run together on the event loop in the loop's next iteration, so
requests that arrived together still share one pass, with no wait added.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .errors import InferenceFailed, Overloaded, Unhealthy
from .metrics import Metrics
from .service import BatchKey, Job

log = logging.getLogger("sparsebridge.serve")


@dataclass
class _Pending:
    job: Job
    future: asyncio.Future = field(repr=False)


class Batcher:
    """Joins :class:`Job` s into passes of ``run(key, texts)``; ``batching=False`` runs each alone."""

    def __init__(
        self,
        run: Callable[[BatchKey, list[str]], list[Any]],
        *,
        max_batch_tokens: int,
        max_batch_requests: int,
        max_queue: int,
        batching: bool = True,
        metrics: Metrics | None = None,
        inline: Callable[[BatchKey], bool] | None = None,
    ) -> None:
        self._run = run
        self._inline = inline or (lambda key: False)
        self._inline_pending: list[_Pending] = []
        self.max_batch_tokens, self.max_batch_requests, self.max_queue = max_batch_tokens, max_batch_requests, max_queue
        self.batching = batching
        self.metrics = metrics or Metrics()
        self._pending: deque[_Pending] = deque()
        self._admitted = 0  # texts admitted and not yet answered (waiting or in a pass)
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._stopping = False

    @property
    def running(self) -> bool:
        """Whether the batching worker is running."""
        return self._worker is not None and not self._worker.done()

    async def start(self) -> None:
        """Start the worker that forms batches and runs them."""
        self._wake = asyncio.Event()
        # One thread: passes run one at a time, each using the cores through torch's own threads.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sparsebridge-model")
        self._worker = asyncio.create_task(self._work(), name="sparsebridge-batcher")

    async def stop(self) -> None:
        """Finish every admitted request, then stop the worker."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        if self._worker is not None:
            await self._worker
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def submit(self, job: Job) -> list[Any]:
        """The results for ``job`` 's texts, in order, once its pass ran."""
        if not self.running or self._stopping:
            raise Unhealthy("the server is stopping" if self._stopping else "the model worker is not running")
        if self._admitted + len(job.texts) > self.max_queue:
            raise Overloaded(
                f"{self._admitted} texts are waiting (max_queue {self.max_queue}); retry after a short wait"
            )
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._admitted += len(job.texts)
        self.metrics.queue_texts.set(self._admitted)
        if self._inline(job.key):
            if not self._inline_pending:
                loop.call_soon(self._run_inline)
            self._inline_pending.append(_Pending(job, future))
        else:
            self._pending.append(_Pending(job, future))
            assert self._wake is not None
            self._wake.set()
        try:
            return await asyncio.shield(future)
        finally:
            if not future.done():  # the client went away: its texts still run, the answer is dropped
                future.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)

    def _take(self, pending: deque[_Pending]) -> tuple[list[_Pending], deque[_Pending]]:
        """The next batch from ``pending`` (the oldest request and what may join it), and the rest."""
        first = pending.popleft()
        batch, tokens, texts = [first], first.job.cost, len(first.job.texts)
        if not self.batching:
            return batch, pending
        rest: deque[_Pending] = deque()
        while pending:
            p = pending.popleft()
            fits = tokens + p.job.cost <= self.max_batch_tokens and texts + len(p.job.texts) <= self.max_batch_requests
            if p.job.key == first.job.key and fits:
                batch.append(p)
                tokens, texts = tokens + p.job.cost, texts + len(p.job.texts)
            else:
                rest.append(p)
        return batch, rest

    def _run_inline(self) -> None:
        """Run every inline request collected since the last call, in batches, on the loop."""
        pending, self._inline_pending = deque(self._inline_pending), []
        while pending:
            batch, pending = self._take(pending)
            texts = [t for p in batch for t in p.job.texts]
            started = time.perf_counter()
            try:
                results = self._run(batch[0].job.key, texts)
            except Exception as exc:  # noqa: BLE001 - as in _work: a 424 for the batch's requests
                results = exc
            self._finish(batch, texts, results, started)
        if self._stopping and self._wake is not None:
            self._wake.set()  # stop() waits for the worker, which waits for these

    async def _work(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._stopping and not self._inline_pending:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch, self._pending = self._take(self._pending)
            texts = [t for p in batch for t in p.job.texts]
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self._run, batch[0].job.key, texts)
            except Exception as exc:  # noqa: BLE001 - every failure becomes a 424 for the batch's requests
                results = exc
            self._finish(batch, texts, results, started)

    def _finish(self, batch: list[_Pending], texts: list[str], results: Any, started: float) -> None:
        """Answer the batch's requests with their slices of ``results`` (or the pass's failure)."""
        if not isinstance(results, Exception) and len(results) != len(texts):
            results = RuntimeError(f"the model gave {len(results)} results for {len(texts)} texts")
        if isinstance(results, Exception):
            log.error("model pass over %d texts failed", len(texts), exc_info=results)
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(InferenceFailed(f"inference failed: {type(results).__name__}"))
        else:
            start = 0
            for p in batch:
                end = start + len(p.job.texts)
                if not p.future.done():
                    p.future.set_result(results[start:end])
                start = end
        self._admitted -= len(texts)
        key, m = batch[0].job.key, self.metrics
        m.queue_texts.set(self._admitted)
        m.batch_texts.observe(len(texts))
        m.batch_tokens.observe(sum(p.job.cost for p in batch))
        m.batch_seconds.observe(time.perf_counter() - started)
        m.inputs.labels(key.kind).inc(len(texts))
