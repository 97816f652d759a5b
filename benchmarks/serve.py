"""``sparsebridge serve`` under concurrent clients: requests/s and p50/p99 latency.

    python benchmarks/serve.py ../shared/data/cranfield --requests 300 --clients 1,4,16,64

Each client sends one query text per request (``POST /query/embed_sparse``, the query path) and
waits for the answer before sending the next; a level runs ``--requests`` requests in all (after a
warm-up of 20, every connection answered once). Servers, each its own process on a loopback port:

* ``batched``: ``sparsebridge serve`` with the packaged model (dynamic batching on);
* ``unbatched``: the same with ``[serve] batching = false`` (one model pass per request);
* ``st-fastapi``: what users write today: a FastAPI handler calling sentence-transformers'
  ``SparseEncoder.encode_query`` per request (a plain ``def`` handler, run in FastAPI's thread pool);
* ``inference-free``: ``sparsebridge serve`` with an inference-free model (Router: an IDF
  ``SparseStaticEmbedding`` from the corpus for queries, the packaged model for documents).

All four run at once; each concurrency level measures them one after another, so the ratios
compare measurements taken seconds, not minutes, apart.

The load generator runs in ``--client-procs`` processes of its own (default 1), each an asyncio
loop holding its share of the clients as keep-alive connections and speaking HTTP/1.1 through h11
(httpx's own protocol layer, without httpx's per-request client machinery, which cost more CPU than
the inference-free server). It runs on the same machine, so it takes CPU from the servers: its own
CPU time per request is printed next to the server's (both from the kernel's accounting), and a
client near one core per process means the client, not the server, set the pace. On a shared
machine the figures are a lower bound; the CPU milliseconds per request move less with the load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
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
from cpu_facts import cpu_model_and_flags
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
    # As ``uvicorn.run(app)`` binding its own socket has it (asyncio sets it on TCP sockets it makes).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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


class _Connection:
    """One keep-alive HTTP/1.1 connection (h11) posting query bodies one at a time."""

    def __init__(self, url: str) -> None:
        self.host, port = url.removeprefix("http://").rsplit(":", 1)
        self.port = int(port)

    async def open(self) -> _Connection:
        import h11

        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.conn = h11.Connection(our_role=h11.CLIENT)
        return self

    async def post(self, body: bytes) -> int:
        """The status of one ``POST /query/embed_sparse``, its answer read to the end."""
        import h11

        head = [("host", self.host), ("content-type", "application/json"), ("content-length", str(len(body)))]
        request = h11.Request(method="POST", target="/query/embed_sparse", headers=head)
        c = self.conn
        self.writer.write(c.send(request) + c.send(h11.Data(data=body)) + c.send(h11.EndOfMessage()))
        status = 0
        while True:
            event = c.next_event()
            if event is h11.NEED_DATA:
                c.receive_data(await self.reader.read(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
        c.start_next_cycle()
        return status

    async def send_all(self, bodies, latencies: list[float]) -> int:
        """Post ``bodies`` (an iterator shared with the other connections); the failures."""
        failed = 0
        for body in bodies:
            started = time.perf_counter()
            failed += await self.post(body) != 200
            latencies.append(time.perf_counter() - started)
        return failed


def client_process(url: str, queries: list[str], clients: int, requests: int, barrier, results) -> None:
    """``clients`` connections sending ``requests`` in all; puts latencies, failures, CPU seconds
    and the start and end of the measured part (monotonic clock, shared by all processes)."""
    bodies = [json.dumps({"inputs": q}).encode() for q in queries]

    async def run() -> tuple[list[float], int, float, float, float]:
        latencies: list[float] = []
        connections = [await _Connection(url).open() for _ in range(clients)]
        for body in bodies[:20]:  # warm-up: 20 requests, then every connection answered once, at once
            await connections[0].post(body)
        # (one after another, the first connections would idle past uvicorn's 5 s keep-alive at 64)
        await asyncio.gather(*(c.post(bodies[i % len(bodies)]) for i, c in enumerate(connections)))
        await asyncio.to_thread(barrier.wait)
        cpu, started = os.times(), time.monotonic()
        shared = (bodies[i % len(bodies)] for i in range(requests))
        failed = sum(await asyncio.gather(*(c.send_all(shared, latencies) for c in connections)))
        ended, after = time.monotonic(), os.times()
        for c in connections:
            c.writer.close()
        return latencies, failed, started, ended, after.user + after.system - cpu.user - cpu.system

    results.put(asyncio.run(run()))


def level(url: str, pid: int, queries: list[str], clients: int, requests: int, procs: int) -> dict[str, float]:
    """One concurrency level: ``clients`` connections spread over ``procs`` client processes."""
    import psutil

    procs = max(1, min(procs, clients))
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(procs + 1), ctx.Queue()
    shares = [
        (clients // procs + (i < clients % procs), requests // procs + (i < requests % procs)) for i in range(procs)
    ]
    workers = [ctx.Process(target=client_process, args=(url, queries, c, r, barrier, results)) for c, r in shares]
    for w in workers:
        w.start()
    server = psutil.Process(pid)
    barrier.wait()  # every client warmed up and connected
    server_cpu = sum(server.cpu_times()[:2])
    out = [results.get() for _ in workers]
    server_cpu = sum(server.cpu_times()[:2]) - server_cpu
    for w in workers:
        w.join()
    latencies = [x for o in out for x in o[0]]
    elapsed = max(o[3] for o in out) - min(o[2] for o in out)
    ms = np.asarray(latencies) * 1e3
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "failed": sum(o[1] for o in out),
        # CPU time used while the level ran (the server's warm-up excluded), per request.
        "server_cpu_ms": server_cpu / len(latencies) * 1e3,
        "client_cpu_ms": sum(o[4] for o in out) / len(latencies) * 1e3,
        "client_cores": sum(o[4] for o in out) / elapsed,
    }


def machine() -> str:
    """The CPU and what the server stack can use, for the head of the report."""
    import importlib.util

    import torch

    model, have = cpu_model_and_flags()
    stack = {m: importlib.util.find_spec(m) is not None for m in ("uvloop", "httptools")}
    return (
        f"CPU: {model}; {len(os.sched_getaffinity(0))} usable cores of {os.cpu_count()}; "
        f"flags: {have}; torch {torch.__version__} CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}; uvicorn extras: "
        + ", ".join(f"{m} {'installed' if ok else 'absent'}" for m, ok in stack.items())
        + " (absent: uvicorn runs asyncio's loop and h11)"
    )


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
    parser.add_argument("--client-procs", type=int, default=1, help="client processes sharing the connections")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    queries = read_jsonl(args.beir_dir / "queries.jsonl", "query")
    levels = [int(c) for c in args.clients.split(",")]
    print(machine(), file=sys.stderr)
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
        # All servers run at once and each level measures them one after another, so the ratios
        # compare runs seconds apart: on a shared machine the load drifts over minutes.
        names = args.servers.split(",")
        running: dict[str, tuple[subprocess.Popen, str]] = {}
        try:
            for name in names:
                running[name] = start(commands[name], folder)
                results[name] = {}
            for clients in levels:
                for name in names:
                    proc, url = running[name]
                    load = load_average()
                    r = level(url, proc.pid, queries, clients, args.requests, args.client_procs)
                    r["load_avg_1m"] = load
                    results[name][clients] = r
                    print(
                        f"{name:<15} {clients:>3} clients: {r['rps']:8.1f} req/s  p50 {r['p50_ms']:7.1f} ms  "
                        f"p99 {r['p99_ms']:7.1f} ms  failed {r['failed']}  CPU ms/req server "
                        f"{r['server_cpu_ms']:.2f} client {r['client_cpu_ms']:.2f} (client {r['client_cores']:.2f} "
                        f"cores)  (load avg {load:.1f})",
                        file=sys.stderr,
                    )
        finally:
            for proc, _ in running.values():
                stop(proc)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    cores = os.cpu_count()
    print(
        f"\n| server | clients | req/s | p50 ms | p99 ms | failed | x st-fastapi req/s | p99 / st-fastapi p99 "
        f"| server CPU ms/req | client CPU ms/req | load avg ({cores} cores) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, by_level in results.items():
        for clients, r in by_level.items():
            base = results.get("st-fastapi", {}).get(clients)
            ratio = f"{r['rps'] / base['rps']:.2f}" if base else "-"
            p99 = f"{r['p99_ms'] / base['p99_ms']:.2f}" if base else "-"
            print(
                f"| {name} | {clients} | {r['rps']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['failed']} | "
                f"{ratio} | {p99} | {r['server_cpu_ms']:.2f} | {r['client_cpu_ms']:.2f} | {r['load_avg_1m']:.1f} |"
            )


if __name__ == "__main__":
    main()
