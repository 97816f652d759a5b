"""Multi-process encoding: one worker process per target device (``["cpu", "cpu"]``, ``["cuda:0",
"cuda:1"]``...), fed chunks of texts through a queue.

* Workers start with torch's ``spawn`` context and receive the model once, through a queue (its
  weights in shared memory); ``start_pool`` returns when every worker has said it is ready, and
  raises if one dies on the way (e.g. a script that starts a pool without an
  ``if __name__ == "__main__":`` guard, which spawn re-runs in each worker). CPU workers split the
  machine's cores between them (``torch.set_num_threads``).
* Results travel back as plain numpy arrays (no shared-memory file descriptors) and are put back in
  input order; they equal a single-process ``encode``.
* A worker that raises sends its error back and ``encode`` re-raises it; a worker that dies (killed,
  out of memory) makes ``encode`` raise instead of waiting forever.
* ``stop_pool`` asks workers to exit, then terminates and finally kills whatever is left, and joins
  every process, so none is left behind.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import queue
import traceback
from typing import Any

import numpy as np
import torch
import torch.multiprocessing as mp

from ..errors import WorkerError  # noqa: F401  (defined in errors.py; re-exported here)

logger = logging.getLogger(__name__)

_POLL_SECONDS = 0.5
_JOBS = itertools.count()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _default_devices() -> list[str]:
    if torch.cuda.is_available():
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return ["cpu"] * max(1, min(4, _cores()))


# -- moving results between processes -------------------------------------------------------------
def _pack(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.is_sparse:
            value = value.coalesce()
            return ("sparse", value.indices().numpy(), value.values().numpy(), tuple(value.shape))
        return ("tensor", value.numpy())
    if isinstance(value, list):
        return ("list", [_pack(v) for v in value])
    return ("raw", value)


def _unpack(packed: Any) -> Any:
    kind = packed[0]
    if kind == "sparse":
        _, indices, values, shape = packed
        indices_t, values_t = torch.from_numpy(indices), torch.from_numpy(values)
        return torch.sparse_coo_tensor(indices_t, values_t, shape, check_invariants=False).coalesce()
    if kind == "tensor":
        return torch.from_numpy(packed[1])
    if kind == "list":
        return [_unpack(v) for v in packed[1]]
    return packed[1]


def _concat(parts: list[Any]) -> Any:
    first = parts[0]
    if isinstance(first, torch.Tensor):
        if first.is_sparse:
            return torch.cat(parts, dim=0).coalesce()
        return torch.cat(parts, dim=0)
    if isinstance(first, np.ndarray):
        return np.concatenate(parts, axis=0)
    return [row for part in parts for row in part]


def _in_input_order(rows: Any, order: list[int]) -> Any:
    """Rows produced in ``order`` (row k is input ``order[k]``), put back in input order."""
    inverse = [0] * len(order)
    for k, i in enumerate(order):
        inverse[i] = k
    if isinstance(rows, torch.Tensor):
        picked = rows.index_select(0, torch.tensor(inverse, dtype=torch.long, device=rows.device))
        return picked.coalesce() if picked.is_sparse else picked
    if isinstance(rows, np.ndarray):
        return rows[inverse]
    return [rows[k] for k in inverse]


# -- the worker -----------------------------------------------------------------------------------
_READY = -1  # the job id of start-up messages on the results queue


def _worker(device: str, setup: Any, tasks: Any, results: Any, threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
    try:
        model = setup.get()
        model.to(device)
    except Exception as exc:
        message = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        results.put((_READY, os.getpid(), False, f"worker on {device} (pid {os.getpid()}) failed to start:\n{message}"))
        return
    results.put((_READY, os.getpid(), True, None))
    while True:
        task = tasks.get()
        if task is None:
            return
        job, chunk_id, texts, kwargs = task
        try:
            out = model.encode(texts, device=device, **kwargs)
            results.put((job, chunk_id, True, _pack(out)))
        except Exception as exc:
            message = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            results.put((job, chunk_id, False, f"worker on {device} (pid {os.getpid()}) failed:\n{message}"))


# -- the pool -------------------------------------------------------------------------------------
def start_pool(model: Any, target_devices: list[str] | None = None) -> dict[str, Any]:
    """Start one worker per device and wait until each has the model on its device; returns
    ``{"input", "output", "processes", "devices"}``."""
    devices = [str(d) for d in (target_devices or _default_devices())]
    if not devices:
        raise ValueError("target_devices is empty")
    cpu_workers = sum(1 for d in devices if d.startswith("cpu"))
    threads = max(1, _cores() // cpu_workers) if cpu_workers else None
    ctx = mp.get_context("spawn")
    # The model goes to the workers once, from CPU shared memory; the caller's copy stays on CPU.
    model.to("cpu")
    model.share_memory()
    # The model travels through a queue, not as a Process argument: spawn writes the arguments
    # into a pipe whose read end the parent itself holds open until the write ends, so a worker
    # that dies before reading a large argument (the tokenizer alone is hundreds of KB) would block
    # ``Process.start()`` for ever. A queue's feeder thread blocks instead, and we watch the workers.
    setup, tasks, results = ctx.Queue(), ctx.Queue(), ctx.Queue()
    pool: dict[str, Any] = {"input": tasks, "output": results, "processes": [], "devices": devices, "setup": setup}
    try:
        for device in devices:
            process = ctx.Process(
                target=_worker,
                args=(device, setup, tasks, results, threads if device.startswith("cpu") else None),
                daemon=True,
                name=f"sparsebridge-encode-{device}",
            )
            process.start()
            pool["processes"].append(process)
            setup.put(model)
        _wait_ready(pool)
    except BaseException:
        stop_pool(pool)
        raise
    logger.info("started %d encoding workers on %s", len(devices), ", ".join(devices))
    return pool


def _wait_ready(pool: dict[str, Any]) -> None:
    waiting = {p.pid for p in pool["processes"]}
    while waiting:
        try:
            job, pid, ok, payload = pool["output"].get(timeout=_POLL_SECONDS)
        except queue.Empty:
            dead = [p for p in pool["processes"] if p.pid in waiting and not p.is_alive()]
            if dead:
                details = ", ".join(f"pid {p.pid} exit code {p.exitcode}" for p in dead)
                raise WorkerError(
                    f"{len(dead)} encoding worker(s) died while starting ({details}). Workers start with "
                    f"'spawn', which imports the main script again in each worker: a script that starts a "
                    f'pool must do so under `if __name__ == "__main__":`'
                ) from None
            continue
        if job != _READY:
            continue
        if not ok:
            raise WorkerError(payload)
        waiting.discard(pid)


def stop_pool(pool: dict[str, Any], timeout: float = 10.0) -> None:
    """Stop the workers and wait for them: ask, then terminate, then kill; no process is left."""
    processes = pool.get("processes", [])
    tasks = pool.get("input")
    for process in processes:
        if process.is_alive() and tasks is not None:
            try:
                tasks.put(None)
            except (OSError, ValueError):
                break
    for process in processes:
        process.join(timeout)
    for process in processes:
        if process.is_alive():
            process.terminate()
            process.join(5)
        if process.is_alive():
            process.kill()
            process.join()
    for process in processes:
        with contextlib.suppress(ValueError):  # already closed
            process.close()
    for key in ("input", "output", "setup"):
        q = pool.get(key)
        if q is not None:
            q.cancel_join_thread()
            q.close()
    pool["processes"] = []


def _check_workers(pool: dict[str, Any]) -> None:
    dead = [p for p in pool["processes"] if not p.is_alive()]
    if dead or not pool["processes"]:
        details = ", ".join(f"pid {p.pid} exit code {p.exitcode}" for p in dead) or "no workers"
        raise WorkerError(f"{len(dead)} encoding worker(s) died ({details}); stop this pool and start a new one")


def _collect(pool: dict[str, Any], job: int, n_chunks: int) -> list[Any]:
    outputs: list[Any] = [None] * n_chunks
    pending = n_chunks
    while pending:
        try:
            got_job, chunk_id, ok, payload = pool["output"].get(timeout=_POLL_SECONDS)
        except queue.Empty:
            _check_workers(pool)  # a dead worker may have taken a chunk with it: never wait forever
            continue
        if got_job != job:  # left over from an earlier call that failed part-way
            continue
        if not ok:
            raise WorkerError(payload)
        outputs[chunk_id] = _unpack(payload)
        pending -= 1
    return outputs


def encode_multi_process(
    model: Any,
    texts: list[str],
    *,
    single: bool = False,
    pool: dict[str, Any] | None = None,
    devices: list[str] | None = None,
    chunk_size: int | None = None,
    **encode_kwargs: Any,
) -> Any:
    """``model.encode(texts, **encode_kwargs)`` spread over a pool (given, or started on ``devices``
    and stopped afterwards); the result has the type and row order of a single-process call."""
    if chunk_size is not None and chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    encode_kwargs["show_progress_bar"] = False
    encode_kwargs.pop("device", None)
    if not texts:
        out = model.encode([], **encode_kwargs)
        return out[0] if single else out
    own_pool = pool is None
    if own_pool:
        pool = start_pool(model, list(devices) if devices else None)
    try:
        workers = max(1, len(pool["processes"]))
        if chunk_size is None:
            chunk_size = max(1, min(math.ceil(len(texts) / workers / 10), 5000))
        _check_workers(pool)  # a pool with a dead worker is broken, even if the others could cope
        # Chunks of similar lengths pad less, as a single-process encode's global length sort does;
        # the longest go first so that the last chunks, which no other worker can share, are short.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        ordered = [texts[i] for i in order]
        job = next(_JOBS)
        starts = range(0, len(texts), chunk_size)
        for chunk_id, start in enumerate(starts):
            pool["input"].put((job, chunk_id, ordered[start : start + chunk_size], encode_kwargs))
        result = _in_input_order(_concat(_collect(pool, job, len(starts))), order)
    finally:
        if own_pool:
            stop_pool(pool)
    return result[0] if single else result
