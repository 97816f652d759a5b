"""Encode once, ingest anywhere: figures for the vector dataset, the encode cache, export and migrate.

    python benchmarks/encode_once.py ../shared/data/vaswani [--docs N] [--work DIR]

On the BEIR collection (all of it by default), with the packaged SPLADE model on CPU:

1. ``encode`` the corpus into a Parquet dataset (filling a fresh encode cache);
2. a text ingest *with* encoding (``--no-cache``) into Qdrant Edge: the baseline;
3. an ingest *from the dataset* into Qdrant Edge (no encoder run);
4. ``export`` of that Edge index back into a dataset, compared with the original (ids, indices,
   values, text, payload);
5. ``migrate`` Edge -> Qdrant local mode, then the top 10 of every query on both backends;
6. a second text ingest served by the cache;
7. peak RSS of writing and reading back a 10k and a 100k document dataset (the larger synthesised
   from the collection's vectors, ids suffixed), each in its own subprocess.

Targets: (3) >= 20x faster than (2); (6) >= 10x faster than (2); (4) identical; (5) 10 of 10 equal
for every query; (7) within 10%. Each is printed with PASS/FAIL; the load average is printed too,
because the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "core"), str(ROOT / "connectors")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} / {five:.1f} on {os.cpu_count()} CPUs"


def _rows(path: Path) -> dict[str, dict]:
    from sparsebridge.vectors.dataset import open_dataset

    data = open_dataset(path)
    return {row["id"]: row for batch in data.batches() for row in data.rows_of(batch)}


_RSS_CHILD = r"""
import json, sys
sys.path[:0] = sys.argv[4:6]
from sparsebridge.vectors.dataset import DatasetWriter, open_dataset
from sparsebridge.vectors.vocabulary import Vocabulary
from transformers import AutoTokenizer
src, out, copies = sys.argv[1], sys.argv[2], int(sys.argv[3])
base = open_dataset(src)
vocab = Vocabulary(AutoTokenizer.from_pretrained(sys.argv[6]), base.metadata["model"])
def rss():
    # VmHWM: the peak resident set since the last reset below (Linux), in MB.
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith("VmHWM")) / 1024
baseline = rss()  # interpreter, pyarrow, tokenizer: before any row is written or read
with open("/proc/self/clear_refs", "w") as fh:  # reset the peak: what follows is the dataset's own
    fh.write("5")
with DatasetWriter(out, base.metadata, part_rows=8192) as w:
    n = 0
    for c in range(copies):
        for records in base.records(vocab):
            for r in records:
                r.id = f"{r.id}~{c}"
            w.write(records)
            n += len(records)
after_write = rss()
read = 0
for records in open_dataset(out).records(vocab):
    read += len(records)
print(json.dumps({"rows": n, "read": read, "baseline_mb": baseline, "peak_rss_mb_write": after_write,
                  "peak_rss_mb": rss()}))
"""


def _rss(dataset: Path, work: Path, model_path: str) -> None:
    """Step 7: peak RSS of writing and reading back a 10k and a 100k row dataset, each in a child."""
    n = open_rows = len(_rows(dataset))
    figures = {}
    for label, copies in (("10k", max(1, round(10_000 / n))), ("100k", max(1, round(100_000 / n)))):
        target = work / f"synthetic-{label}.parquet"
        shutil.rmtree(target, ignore_errors=True)
        cmd = [sys.executable, "-c", _RSS_CHILD, str(dataset), str(target), str(copies)]
        cmd += [str(ROOT / "core"), str(ROOT / "connectors"), model_path]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        figures[label] = json.loads(done.stdout.strip().splitlines()[-1])
    small, large = figures["10k"]["peak_rss_mb"], figures["100k"]["peak_rss_mb"]
    flat = large <= small * 1.10
    grow = [figures[k]["peak_rss_mb"] - figures[k]["baseline_mb"] for k in ("10k", "100k")]
    print(f"7. peak RSS writing + reading a dataset: {figures['10k']['rows']} rows {small:.0f} MB, "
          f"{figures['100k']['rows']} rows {large:.0f} MB ({100 * (large / small - 1):+.1f}%) "
          f"[{'PASS' if flat else 'FAIL'} within 10%]; above the process baseline "
          f"({figures['10k']['baseline_mb']:.0f} MB): {grow[0]:.0f} MB vs {grow[1]:.0f} MB "
          f"(synthesised from {open_rows} rows)")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("beir_dir", type=Path)
    ap.add_argument("--docs", type=int, default=None, help="Use the first N documents (default: all).")
    ap.add_argument("--work", type=Path, default=None, help="Working folder (default: a temporary one).")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rss-only", action="store_true", help="Only step 7, from WORK/vectors.parquet of a run.")
    args = ap.parse_args()
    if args.rss_only:
        from sparsebridge.defaults import resolve_model

        _rss(args.work / "vectors.parquet", args.work, resolve_model("packaged:splade"))
        return

    from sparsebridge import SparseEncoder
    from sparsebridge.defaults import resolve_model
    from sparsebridge.index.corpus import open_corpus, read_beir_queries
    from sparsebridge.index.pipeline import Pipeline
    from sparsebridge.index.transfer import export_index, migrate
    from sparsebridge.vectors.cache import EncodeCache
    from sparsebridge_qdrant import QdrantConnector

    work = args.work or Path(tempfile.mkdtemp(prefix="encode-once-"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    model_path = resolve_model("packaged:splade")
    encoder = SparseEncoder(model_path, device="cpu")

    def edge_index(name):
        return QdrantConnector(mode="edge", path=str(work / "edge"), index=name)

    edge = edge_index("ds")

    def pipe(connector, index, cache=None):
        return Pipeline(
            encoder, connector, index, model_name="packaged:splade", batch_size=args.batch_size,
            show_progress=False, cache=cache,
        )  # fmt: skip

    def corpus():
        return open_corpus(args.beir_dir, limit=args.docs)

    print(f"corpus {args.beir_dir} ({args.docs or 'all'} docs), work folder {work}; {_load()}")
    results: dict[str, object] = {}
    cache = EncodeCache(work / "cache.sqlite3")
    dataset = work / "vectors.parquet"

    t = time.perf_counter()
    rep = pipe(None, "-", cache).encode_dataset(corpus(), dataset)
    results["encode_s"] = time.perf_counter() - t
    print(f"1. encode -> Parquet: {rep.written} records in {results['encode_s']:.1f}s; {_load()}")

    p_text = pipe(edge_index("text"), "text")
    t = time.perf_counter()
    rep = p_text.ingest(corpus())
    text_s = time.perf_counter() - t
    print(f"2. text ingest with encoding (no cache) -> Edge: {rep.written} in {text_s:.1f}s "
          f"(encoding {rep.encode_seconds:.1f}s); {_load()}")  # fmt: skip

    p_ds = pipe(edge, "ds")
    t = time.perf_counter()
    rep = p_ds.ingest_dataset(dataset)
    ds_s = time.perf_counter() - t
    ratio = text_s / ds_s
    print(f"3. ingest from Parquet -> Edge: {rep.written} in {ds_s:.2f}s: {ratio:.1f}x faster "
          f"[{'PASS' if ratio >= 20 else 'FAIL'} >= 20x]; {_load()}")  # fmt: skip

    out = work / "export.parquet"
    t = time.perf_counter()
    ex = export_index(edge, p_ds.vocab, out, index="ds")
    export_s = time.perf_counter() - t
    same = _rows(out) == _rows(dataset)
    print(f"4. export Edge -> Parquet: {ex.written} in {export_s:.2f}s; equal to the dataset (ids, indices, "
          f"values, text, payload): {same} [{'PASS' if same else 'FAIL'}]")  # fmt: skip

    local = QdrantConnector(mode="local", path=str(work / "local"), index="migrated")
    p_local = pipe(local, "migrated")
    t = time.perf_counter()
    mig = migrate(edge, p_local, source_name="ds")
    mig_s = time.perf_counter() - t
    queries = list(read_beir_queries(args.beir_dir).values())
    top_edge = [[h.id for h in r.hits] for r in p_ds.search(queries, top_k=10)]
    top_local = [[h.id for h in r.hits] for r in p_local.search(queries, top_k=10)]
    equal = sum(a == b for a, b in zip(top_edge, top_local))
    print(f"5. migrate Edge -> Qdrant local: {mig.written} in {mig_s:.1f}s, counts {mig.source_count} -> "
          f"{mig.target_count}; top 10 equal for {equal}/{len(queries)} queries "
          f"[{'PASS' if equal == len(queries) and mig.counts_equal else 'FAIL'}]")  # fmt: skip

    p_cached = pipe(edge_index("cached"), "cached", cache)
    t = time.perf_counter()
    rep = p_cached.ingest(corpus())
    cached_s = time.perf_counter() - t
    ratio_c = text_s / cached_s
    print(f"6. text ingest served by the cache -> Edge: {rep.written} in {cached_s:.2f}s ({rep.cache_hits} hits, "
          f"{rep.cache_misses} encoded): {ratio_c:.1f}x faster [{'PASS' if ratio_c >= 10 else 'FAIL'} >= 10x]; "
          f"{_load()}")  # fmt: skip
    for p in (p_text, p_ds, p_local, p_cached):
        p.close()

    _rss(dataset, work, model_path)
    print(f"done; {_load()}")


if __name__ == "__main__":
    main()
