"""Ingest and search on the embedded default backend (Qdrant Edge), end to end.

    python benchmarks/pipeline.py ../shared/data/vaswani [--docs N] [--batch-size 32]

Prints, in one run on the same documents:
* encode-only docs/s (``encode_document``) next to end-to-end ingest docs/s (read, encode, convert,
  write, flush), measured in alternating rounds (``--rounds``) so that both see the same machine, and
  the share of ingest time spent outside encoding (target: under 10%), with the ingest's own account
  of where its time went (encoding, connector writes, the rest);
* search latency p50/p99 per query and per batch of all queries, top 10: through the connector with
  pre-encoded query vectors (the engine path), and end to end through ``Pipeline.search`` with the
  full SPLADE query encoder and with inference-free (corpus IDF) queries.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from sparsebridge import SparseEncoder
from sparsebridge.connector import Query, SearchOptions
from sparsebridge.connector.plugins import create_connector
from sparsebridge.defaults import splade_model_path
from sparsebridge.encoders.modules import Router, SparseStaticEmbedding, SpladePooling
from sparsebridge.index.corpus import open_corpus, read_beir_queries
from sparsebridge.index.pipeline import Pipeline


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def latencies(fn, items, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        for item in items:
            start = time.perf_counter()
            fn(item)
            out.append((time.perf_counter() - start) * 1000)
    return out


def row(label: str, ms: list[float]) -> str:
    return f"{label:<52} p50 {percentile(ms, 50):8.3f} ms   p99 {percentile(ms, 99):8.3f} ms   (n={len(ms)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus_dir", type=Path)
    parser.add_argument("--docs", type=int, default=None, help="first N documents (default: all)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="passes over the queries for latency")
    parser.add_argument("--rounds", type=int, default=3, help="alternating encode-only / ingest rounds")
    args = parser.parse_args()

    torch.set_num_threads(torch.get_num_threads())
    encoder = SparseEncoder(str(splade_model_path()), device="cpu")
    docs = list(open_corpus(args.corpus_dir, limit=args.docs).documents)
    texts = [f"{d.get('title', '')} {d.get('text', '')}".strip() for d in docs]
    queries = list(read_beir_queries(args.corpus_dir / "queries.jsonl").values())
    encoder.encode_document(texts[: args.batch_size], batch_size=args.batch_size)  # warm-up

    # Alternate encode-only and ingest rounds: a shared or throttled machine drifts by tens of
    # percent over minutes, and alternating lets both sides see the same drift.
    encode_runs, ingest_runs, reports = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for round_no in range(args.rounds):
            start = time.perf_counter()
            encoder.encode_document(texts, batch_size=args.batch_size)
            encode_runs.append(time.perf_counter() - start)

            connector = create_connector(
                "qdrant", mode="edge", path=str(Path(tmp) / f"edge{round_no}"), collection="bench"
            )
            pipeline = Pipeline(encoder, connector, "bench", batch_size=args.batch_size, show_progress=False)
            start = time.perf_counter()
            report = pipeline.ingest(args.corpus_dir, limit=args.docs)
            ingest_runs.append(time.perf_counter() - start)
            reports.append(report)
            if not report.ok or connector.count() != len(docs):
                sys.exit(f"ingest incomplete: {json.dumps(report.to_dict())[:2000]}")
            print(
                f"round {round_no + 1}: encode only {len(docs) / encode_runs[-1]:.1f} docs/s, "
                f"ingest {len(docs) / ingest_runs[-1]:.1f} docs/s",
                file=sys.stderr,
            )
            if round_no < args.rounds - 1:
                connector.close()

        options = SearchOptions(top_k=10)
        vectors = pipeline.encode_queries(queries)
        engine = latencies(lambda v: connector.search([Query(sparse=v)], options), vectors, args.repeats)
        start = time.perf_counter()
        connector.search([Query(sparse=v) for v in vectors], options)
        engine_batch_ms = (time.perf_counter() - start) * 1000
        full = latencies(lambda q: pipeline.search([q], top_k=10), queries, max(1, args.repeats // 2))
        start = time.perf_counter()
        pipeline.search(queries, top_k=10)
        full_batch_ms = (time.perf_counter() - start) * 1000

        static = SparseStaticEmbedding.from_corpus(encoder.tokenizer, texts, frozen=True)
        free_encoder = SparseEncoder(
            modules=[Router.for_query_document([static], [encoder[0], SpladePooling("max", "relu")])], device="cpu"
        )
        free_pipeline = Pipeline(free_encoder, connector, "bench", batch_size=args.batch_size, show_progress=False)
        free = latencies(lambda q: free_pipeline.search([q], top_k=10), queries, args.repeats)
        start = time.perf_counter()
        free_pipeline.search(queries, top_k=10)
        free_batch_ms = (time.perf_counter() - start) * 1000
        connector.close()

    n = len(docs)
    encode_s, ingest_s = statistics.median(encode_runs), statistics.median(ingest_runs)
    spent = {
        "encoding": sum(r.encode_seconds for r in reports),
        "connector writes": sum(r.write_seconds for r in reports),
    }
    total = sum(r.seconds for r in reports)
    spent["reading, preparing, converting"] = total - sum(spent.values())
    print(f"corpus {args.corpus_dir} | {n} documents | {len(queries)} queries | batch {args.batch_size}")
    print(f"medians of {args.rounds} alternating rounds:")
    print(f"encode only (encode_document)    {n / encode_s:8.1f} docs/s  ({encode_s:.1f} s)")
    print(f"ingest end to end (Qdrant Edge)  {n / ingest_s:8.1f} docs/s  ({ingest_s:.1f} s)")
    print(f"time outside encoding: {max(0.0, ingest_s - encode_s) / ingest_s:.1%} of ingest (target < 10%)")
    print("inside the ingest: " + ", ".join(f"{k} {v / total:.1%}" for k, v in spent.items()))
    print(row("search, connector, pre-encoded query (engine path)", engine))
    print(row("search end to end, full SPLADE query encoder", full))
    print(row("search end to end, inference-free queries", free))
    nq = len(queries)
    print(
        f"batch of {nq} queries: connector {engine_batch_ms:.1f} ms ({engine_batch_ms / nq:.3f} ms/query), "
        f"full {full_batch_ms:.1f} ms ({full_batch_ms / nq:.3f} ms/query), "
        f"inference-free {free_batch_ms:.1f} ms ({free_batch_ms / nq:.3f} ms/query)"
    )


if __name__ == "__main__":
    main()
