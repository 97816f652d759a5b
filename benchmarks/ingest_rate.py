"""Vector dataset -> Qdrant Edge: ``sparsebridge ingest vectors.parquet`` against Edge's own upsert.

    python benchmarks/ingest_rate.py ../shared/data/cranfield [--docs 200000] [--rounds 3] [--work DIR]

1. ``sparsebridge encode CORPUS --output`` with the packaged model (skipped when ``--work`` already
   holds it), then that real encoded corpus replicated with new ids (``ID~rN``) up to ``--docs``
   rows, written as a dataset folder of the layout ``encode`` writes (parts of 4,096 rows, row
   groups of 1,024, zstd, the same file metadata);
2. as whole processes, interleaved and repeated ``--rounds`` times, each into a fresh folder:

   * ``sparsebridge ingest vectors.parquet`` into a fresh Qdrant Edge index (the CLI, config file
     pointing at the folder), with the connector's default storage (memory-mapped segments, which
     the writer optimizes as it goes: work the engine's side below does not do);
   * the same with the storage the engine's side gets (``in-ram``: ``optimize_mb = 0``, the sparse
     index and payloads in RAM): the like-for-like side, which the 0.8x target is measured on;
   * Qdrant Edge's own upsert of the same points from Python: the Parquet rows read with pyarrow,
     points built as the engine's examples do (UUID ids, the sparse vector, the payload with the
     text and the id), ``upsert_points`` in batches of 1,024 and one ``flush`` at the end.

3. Elasticsearch and OpenSearch bulk bodies (no server can run here): the bulk actions the connector
   hands its client's bulk helper, built in-process from ``--body-rows`` rows, through Records (the
   path before) and straight from the columns, per sparse field type and key scheme.

``--before DIR`` runs a third side in the same rounds: the ``sparsebridge ingest`` of another
checkout (``git archive OLD core connectors | tar -x -C DIR``), for a before/after in one run.

Prints docs/s of each (process start to exit), the ratio (target: sparsebridge >= 0.8x the
engine), the peak RSS of each process, the CPU model and flags, and ``uptime``'s load before and
after each run: this machine is shared, so compare figures of one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cpu_facts import cpu_model_and_flags

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "core"), str(ROOT / "connectors")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PART_ROWS = 4096
ROW_GROUP_ROWS = 1024
ENGINE_BATCH = 1024


def uptime() -> str:
    """``uptime``'s load averages (the machine is shared with other sessions)."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def cpu() -> str:
    """The CPU model and the SIMD flags that matter for the engine."""
    model, have = cpu_model_and_flags()
    return f"CPU: {model}; {len(os.sched_getaffinity(0))} usable cores; flags: {have}"


def cli() -> list[str]:
    """The sparsebridge CLI of this checkout (its core and connectors first on the path)."""
    return [sys.executable, "-m", "sparsebridge.cli"]


def child_env(root: Path = ROOT) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SPARSEBRIDGE_CONFIG", None)
    env["PYTHONPATH"] = os.pathsep.join([str(root / "core"), str(root / "connectors"), env.get("PYTHONPATH", "")])
    env["HF_HUB_OFFLINE"] = "1"
    return env


def encode(corpus: Path, out: Path) -> None:
    """The real encoded corpus: ``sparsebridge encode CORPUS --output`` with the packaged model."""
    if out.is_dir() and any(out.glob("part-*.parquet")):
        return
    proc = subprocess.run(
        [*cli(), "encode", str(corpus), "--output", str(out), "--no-cache", "--quiet"],
        env=child_env(),
        capture_output=True,
        text=True,
    )
    # Documents without text are refused by id (cranfield has two); the rest is written.
    if not any(out.glob("part-*.parquet")):
        raise SystemExit(f"encode failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")


def replicate(source: Path, out: Path, docs: int) -> int:
    """``source``'s rows copied with new ids (``ID~rN``) until ``docs`` rows, as a dataset folder."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    done = out.with_name(out.name + ".done")  # beside the folder: every Parquet reader opens the folder
    if done.is_file() and int(done.read_text()) == docs:
        return docs
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    base = ds.dataset(str(source), format="parquet").to_table()
    schema = pq.read_schema(sorted(source.glob("part-*.parquet"))[0])
    base = base.cast(schema)
    rows, copy, part = 0, 0, 0
    pending: list[pa.Table] = []
    pending_rows = 0

    def flush_part(table: pa.Table) -> None:
        nonlocal part
        pq.write_table(table, out / f"part-{part:05d}.parquet", row_group_size=ROW_GROUP_ROWS, compression="zstd")
        part += 1

    while rows < docs:
        take = base.slice(0, min(base.num_rows, docs - rows))
        ids = pc.binary_join_element_wise(take.column("id"), pa.scalar(f"r{copy}"), "~")
        pending.append(take.set_column(take.schema.get_field_index("id"), schema.field("id"), ids))
        pending_rows += take.num_rows
        rows += take.num_rows
        copy += 1
        while pending_rows >= PART_ROWS or (rows >= docs and pending_rows):
            table = pa.concat_tables(pending).combine_chunks()
            head, rest = table.slice(0, PART_ROWS), table.slice(PART_ROWS)
            flush_part(head.replace_schema_metadata(schema.metadata))
            pending, pending_rows = ([rest] if rest.num_rows else []), rest.num_rows
    done.write_text(str(docs))
    return docs


# The engine's own upsert, as a user of qdrant-edge-py writes it: no sparsebridge import.
ENGINE_CHILD = r"""
import json, sys, uuid
import pyarrow.parquet as pq
from pathlib import Path
import qdrant_edge as qe

src, folder, batch = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
ns = uuid.UUID("6f1c2a0e-5b7d-5d4e-9a3c-2b8e0f4d7c61")
shard = qe.EdgeShard.create(folder, qe.EdgeConfig(sparse_vectors={"sparse": qe.EdgeSparseVectorParams()}))
n = 0
for part in sorted(src.glob("part-*.parquet")):
    pf = pq.ParquetFile(part)
    for rb in pf.iter_batches(batch_size=batch):
        ids = rb.column("id").to_pylist()
        texts = rb.column("text").to_pylist()
        payloads = rb.column("payload").to_pylist()
        indices = rb.column("indices").to_pylist()
        values = rb.column("values").to_pylist()
        points = []
        for rid, text, payload, idx, val in zip(ids, texts, payloads, indices, values):
            body = json.loads(payload) if payload else {}
            body["text"] = text or ""
            body["doc_id"] = rid
            vector = {"sparse": qe.SparseVector(indices=idx, values=val)}
            points.append(qe.Point(id=str(uuid.uuid5(ns, rid)), vector=vector, payload=body))
        shard.update(qe.UpdateOperation.upsert_points(points))
        n += len(points)
shard.flush()
count = shard.count(qe.CountRequest(exact=True))
shard.close()
print(json.dumps({"written": n, "count": count}))
"""


def timed(cmd: list[str], cwd: Path | None = None, root: Path = ROOT) -> tuple[float, int, str, str, float]:
    """Run ``cmd`` to its end: (seconds, exit status, stdout, stderr, peak RSS in MB of that process)."""
    out, err = cwd_file(cwd, "stdout"), cwd_file(cwd, "stderr")
    start = time.perf_counter()
    with open(out, "w+b") as fo, open(err, "w+b") as fe:
        proc = subprocess.Popen(cmd, env=child_env(root), stdout=fo, stderr=fe, stdin=subprocess.DEVNULL, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not all children's peak
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        fo.seek(0)
        fe.seek(0)
        return seconds, proc.returncode, fo.read().decode(), fe.read().decode(), usage.ru_maxrss / 1024


def cwd_file(cwd: Path | None, name: str) -> Path:
    return (cwd or Path("/tmp")) / f".ingest-rate-{os.getpid()}.{name}"


def run_engine(data: Path, folder: Path) -> dict:
    """Edge's own upsert as a whole process."""
    shutil.rmtree(folder, ignore_errors=True)
    before = uptime()
    seconds, rc, stdout, stderr, rss = timed(
        [sys.executable, "-c", ENGINE_CHILD, str(data), str(folder), str(ENGINE_BATCH)], folder.parent
    )
    if rc:
        raise SystemExit(f"engine upsert failed (exit {rc}):\n{stderr[-2000:]}")
    out = json.loads(stdout.strip().splitlines()[-1])
    return {"seconds": seconds, "docs": out["count"], "rss": rss, "load": f"{before} -> {uptime()}"}


# The storage the engine's own upsert gets (Edge's defaults: one appendable segment, its sparse
# index in RAM, never optimized), as connector options: the like-for-like side.
IN_RAM = "optimize_mb = 0\nsparse_on_disk = false\npayload_on_disk = false\n"


def run_sparsebridge(data: Path, work: Path, root: Path = ROOT, storage: str = "") -> dict:
    """``sparsebridge ingest vectors.parquet`` into a fresh Edge folder, as a whole process (the
    sparsebridge of checkout ``root``; ``storage``: extra ``[backend]`` lines)."""
    edge = work / "edge-sparsebridge"
    shutil.rmtree(edge, ignore_errors=True)
    config = work / "sparsebridge.toml"
    config.write_text(
        f'[backend]\nconnector = "qdrant"\nmode = "edge"\npath = {json.dumps(str(edge))}\nindex = "bench"\n' + storage,
        encoding="utf-8",
    )
    before = uptime()
    seconds, rc, stdout, stderr, rss = timed(
        [*cli(), "ingest", str(data), "--config", str(config), "--json", "--quiet"], work, root
    )
    if rc:
        raise SystemExit(f"sparsebridge ingest failed (exit {rc}):\n{stderr[-2000:]}")
    report = json.loads(stdout)
    return {"seconds": seconds, "docs": report["written"], "rss": rss, "load": f"{before} -> {uptime()}"}


# Elasticsearch / OpenSearch: no server runs here, so the bulk bodies are built in-process, as the
# connector builds them before its bulk helper sends them: from Records (the path before columns)
# and from the dataset's columns. (connector class, sparse field type, key scheme)
LUCENE = {
    "elasticsearch": ("sparsebridge_elasticsearch", "ElasticsearchConnector", "sparse_vector"),
    "elasticsearch-escaped": ("sparsebridge_elasticsearch", "ElasticsearchConnector", "sparse_vector"),
    "opensearch-rank_features": ("sparsebridge_opensearch", "OpenSearchConnector", "rank_features"),
    "opensearch-sparse_vector": ("sparsebridge_opensearch", "OpenSearchConnector", "sparse_vector"),
}


def _count_actions(batches: Any, build: Any, rows: int) -> int:
    """Build the bulk actions of ``batches`` until ``rows`` rows are done; returns how many."""
    n = 0
    for batch in batches:
        n += len(build(batch))
        if n >= rows:
            break
    return n


def bodies(data: Path, rows: int, rounds: int) -> None:
    """Bulk actions for ``rows`` dataset rows per connector: Records path vs columns, in-process."""
    import importlib

    from sparsebridge.config import Config
    from sparsebridge.config.builder import build_vocabulary
    from sparsebridge.vectors.dataset import open_dataset
    from sparsebridge_lucene_rest import Layout

    vocab = build_vocabulary(Config())
    ds = open_dataset(data)
    print(f"bulk bodies from {rows:,} dataset rows, in-process (reading the Parquet rows included), best of {rounds}:")
    for name, (module, cls_name, sparse_type) in LUCENE.items():
        conn = getattr(importlib.import_module(module), cls_name)(url="http://127.0.0.1:9", index="bench")
        keys = "token-dot-escaped" if name.endswith("escaped") else conn._default_keys(sparse_type)
        # The layout an existing index's mapping would give (what _current() reads from the server).
        conn._layout = Layout(index="bench", sparse_field="sparse", sparse_type=sparse_type, sparse_keys=keys)

        paths = {
            "records": (lambda: ds.records(vocab, batch_rows=1024), conn.bulk_actions),
            "columns": (lambda: ds.columns(vocab, batch_rows=1024), conn.bulk_actions_columns),
        }
        best = {}
        for label, (batches, build) in paths.items():
            times = []
            for _ in range(rounds):
                start = time.perf_counter()
                done = _count_actions(batches(), build, rows)
                times.append(time.perf_counter() - start)
            best[label] = done / min(times)
        print(
            f"  {name:>25}: records {best['records']:8,.0f} docs/s, columns {best['columns']:8,.0f} docs/s: "
            f"{best['columns'] / best['records']:.2f}x ({uptime()})"
        )


def main() -> None:
    """Build the dataset, run both sides interleaved, print the figures."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path, help="a BEIR folder (e.g. ../shared/data/cranfield)")
    ap.add_argument("--docs", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/tmp/sparsebridge-ingest-rate"))
    ap.add_argument("--body-rows", type=int, default=50_000, help="rows for the Elasticsearch/OpenSearch bodies")
    ap.add_argument("--bodies-only", action="store_true", help="only the in-process bulk-body figures")
    ap.add_argument("--no-bodies", action="store_true", help="skip the in-process bulk-body figures")
    ap.add_argument(
        "--before",
        type=Path,
        default=None,
        help="another sparsebridge checkout (e.g. `git archive` of an older commit) run as a third side",
    )
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(cpu())
    print(f"python {platform.python_version()}; {uptime()}")
    encoded = args.work / f"{args.corpus.name}.parquet"
    encode(args.corpus, encoded)
    data = args.work / f"{args.corpus.name}-{args.docs}.parquet"
    replicate(encoded, data, args.docs)
    print(f"dataset: {data} ({args.docs:,} rows from {encoded.name}, ids replicated)")
    if not args.no_bodies:
        bodies(data, min(args.body_rows, args.docs), rounds=max(1, args.rounds))
    if args.bodies_only:
        return
    # "sparsebridge": the connector's defaults (memory-mapped segments, optimized as it writes);
    # "in-ram": the storage the engine's side gets, so that ratio compares like with like.
    sides = ["sparsebridge", "in-ram", "engine"] + (["before"] if args.before else [])
    rates: dict[str, list[float]] = {side: [] for side in sides}
    for r in range(args.rounds):
        # Rotate who goes first, so a load change during a round hits every side alike.
        order = sides[r % len(sides) :] + sides[: r % len(sides)]
        for side in order:
            if side == "engine":
                res = run_engine(data, args.work / "edge-engine")
            elif side == "in-ram":
                res = run_sparsebridge(data, args.work, storage=IN_RAM)
            else:
                res = run_sparsebridge(data, args.work, args.before if side == "before" else ROOT)
            if res["docs"] != args.docs:
                raise SystemExit(f"{side} wrote {res['docs']} documents, not {args.docs}")
            rate = res["docs"] / res["seconds"]
            rates[side].append(rate)
            print(
                f"round {r + 1} {side:>12}: {rate:8,.0f} docs/s ({res['seconds']:.1f} s, peak RSS {res['rss']:.0f} MB; "
                f"{res['load']})"
            )
        ratios = ", ".join(
            f"{side} / engine {rates[side][-1] / rates['engine'][-1]:.2f}x" for side in sides if side != "engine"
        )
        print(f"round {r + 1}: {ratios}")
    med = {side: statistics.median(v) for side, v in rates.items()}
    sb, ram, en = med["sparsebridge"], med["in-ram"], med["engine"]
    verdict = "PASS" if ram / en >= 0.8 else "FAIL"
    print(
        f"median: sparsebridge in-ram {ram:,.0f} docs/s, engine {en:,.0f} docs/s: {ram / en:.2f}x "
        f"(target >= 0.8x, same storage) {verdict}; with the default storage {sb:,.0f} docs/s: {sb / en:.2f}x"
    )
    if "before" in med:
        print(f"median: before ({args.before}) {med['before']:,.0f} docs/s: {med['before'] / en:.2f}x the engine")
    print(uptime())


if __name__ == "__main__":
    main()
