"""``sparsebridge serve`` under concurrent clients: requests/s and p50/p99 latency.

    python benchmarks/serve.py ../shared/data/cranfield --requests 300 --clients 1,4,16,64

Each client sends one query text per request (``POST /query/embed_sparse``, the query path) and
waits for the answer before sending the next; a level runs ``--requests`` requests in all (after a
warm-up of 20). Servers, each its own process on a loopback port, measured one after another:

* ``batched``: ``sparsebridge serve`` with the packaged model (dynamic batching on);
* ``unbatched``: the same with ``[serve] batching = false`` (one model pass per request);
* ``st-fastapi``: what users write today: a FastAPI handler calling sentence-transformers'
  ``SparseEncoder.encode_query`` per request (a plain ``def`` handler, run in FastAPI's thread pool);
* ``inference-free``: ``sparsebridge serve`` with an inference-free model (Router: an IDF
  ``SparseStaticEmbedding`` from the corpus for queries, the packaged model for documents).

The load generator is one asyncio process (httpx) on the same machine, so it takes CPU from the
servers; on a shared machine the figures are a lower bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# The packaged model and the BEIR readers, as the query latency benchmark has them (same folder).
from query_latency import packaged_model, read_jsonl

READY = re.compile(r"listening on (http://\S+)")


# --------------------------------------------------------------------------- the baseline server


def baseline_server(port: int) -> None:
    """A FastAPI app as users write it today around sentence-transformers, on uvicorn."""
    import uvicorn
    from fastapi import FastAPI
    from sentence_transformers import SparseEncoder

    model = SparseEncoder(packaged_model(), device="cpu")
    app = FastAPI()

    @app.post("/query/embed_sparse")
    def embed(body: dict) -> list:
        emb = model.encode_query(body["inputs"], convert_to_sparse_tensor=True).coalesce()
        return [[{"index": int(i), "value": float(v)} for i, v in zip(emb.indices()[0], emb.values())]]

    sock = socket.create_server(("127.0.0.1", port))
    print(f"baseline listening on http://127.0.0.1:{sock.getsockname()[1]}", file=sys.stderr, flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])


# --------------------------------------------------------------------------- running servers


def start(cmd: list[str], cwd: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("SPARSEBRIDGE_CONFIG", None)
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        m = READY.search(line)
        if m:
            return proc, m.group(1)
    sys.exit(f"server did not start: {' '.join(cmd)} (exit {proc.wait()})")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def sparsebridge_cmd(config: Path) -> list[str]:
    return [sys.executable, "-m", "sparsebridge.cli", "serve", "--port", "0", "--config", str(config)]


def inference_free_model(folder: Path, corpus: list[str]) -> Path:
    from sparsebridge import SparseEncoder
    from sparsebridge.modules import MLMTransformer, Router, SparseStaticEmbedding, SpladePooling

    transformer = MLMTransformer(packaged_model())
    static = SparseStaticEmbedding.from_corpus(transformer.tokenizer, corpus, frozen=True)
    router = Router.for_query_document([static], [transformer, SpladePooling("max", "relu")])
    SparseEncoder(modules=[router], device="cpu").save(folder / "inference-free")
    return folder / "inference-free"


# --------------------------------------------------------------------------- load


async def level(url: str, queries: list[str], clients: int, requests: int) -> dict[str, float]:
    import httpx

    latencies: list[float] = []
    failures = 0
    counter = iter(range(requests))

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal failures
        for i in counter:
            started = time.perf_counter()
            r = await client.post("/query/embed_sparse", json={"inputs": queries[i % len(queries)]})
            latencies.append(time.perf_counter() - started)
            failures += r.status_code != 200

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        for q in queries[:20]:  # warm-up
            await client.post("/query/embed_sparse", json={"inputs": q})
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    ms = np.asarray(latencies) * 1e3
    return {
        "rps": requests / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "failed": failures,
    }


def load_average() -> float:
    return os.getloadavg()[0]


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "_baseline":
        baseline_server(int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("beir_dir", type=Path)
    parser.add_argument("--requests", type=int, default=300, help="requests per concurrency level")
    parser.add_argument("--clients", default="1,4,16,64")
    parser.add_argument("--servers", default="batched,unbatched,st-fastapi,inference-free")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    queries = read_jsonl(args.beir_dir / "queries.jsonl", "query")
    levels = [int(c) for c in args.clients.split(",")]
    results: dict[str, dict[int, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "batched.toml").write_text("[serve]\nmax_queue = 4096\n")
        (folder / "unbatched.toml").write_text("[serve]\nbatching = false\nmax_queue = 4096\n")
        commands = {
            "batched": sparsebridge_cmd(folder / "batched.toml"),
            "unbatched": sparsebridge_cmd(folder / "unbatched.toml"),
            "st-fastapi": [sys.executable, str(Path(__file__).resolve()), "_baseline", "0"],
        }
        if "inference-free" in args.servers:
            corpus = read_jsonl(args.beir_dir / "corpus.jsonl", "doc")
            model = inference_free_model(folder, corpus)
            (folder / "free.toml").write_text(
                f'[model]\nname_or_path = "{model}"\nquery_side = "inference-free"\n[serve]\nmax_queue = 4096\n'
            )
            commands["inference-free"] = sparsebridge_cmd(folder / "free.toml")
        for name in args.servers.split(","):
            proc, url = start(commands[name], folder)
            try:
                results[name] = {}
                for clients in levels:
                    load = load_average()
                    r = asyncio.run(level(url, queries, clients, args.requests))
                    r["load_avg_1m"] = load
                    results[name][clients] = r
                    print(
                        f"{name:<15} {clients:>3} clients: {r['rps']:8.1f} req/s  p50 {r['p50_ms']:7.1f} ms  "
                        f"p99 {r['p99_ms']:7.1f} ms  failed {r['failed']}  (load avg {load:.1f})",
                        file=sys.stderr,
                    )
            finally:
                stop(proc)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    cores = os.cpu_count()
    print(f"\n| server | clients | req/s | p50 ms | p99 ms | failed | x st-fastapi req/s | load avg ({cores} cores) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, by_level in results.items():
        for clients, r in by_level.items():
            base = results.get("st-fastapi", {}).get(clients)
            ratio = f"{r['rps'] / base['rps']:.2f}" if base else "-"
            print(
                f"| {name} | {clients} | {r['rps']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['failed']} | "
                f"{ratio} | {r['load_avg_1m']:.1f} |"
            )


if __name__ == "__main__":
    main()
