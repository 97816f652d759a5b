"""Big collections on the embedded default (Qdrant Edge): ingest, memory, disk, open, search latency.

    python benchmarks/scale.py ../shared/data/vaswani --docs 100000,1000000 [--work DIR]
        [--vectors DIR.parquet] [--storage NAME:key=value,key=value ...] [--repeats 3] [--keep]

Builds the collections from a real encoded corpus: the corpus is encoded once with the packaged
SPLADE model (``sparsebridge encode CORPUS --output base.parquet``, resumable; ``--vectors`` reuses a
dataset made before), then its rows are replicated with new ids (``<id>~<copy>``; copy 0 keeps the
original ids) into a vector dataset of N rows, for each N of ``--docs``. Each N is then measured as
whole processes, as a user runs them:

* ``sparsebridge ingest rows.parquet`` (no encoding): wall time, docs/s, and the peak RSS of the
  process (``wait4``'s ``ru_maxrss``; next to it the peak of its anonymous memory, ``RssAnon`` polled
  every 0.2 s: what the process holds itself, as against mapped index files the kernel can drop);
* the collection's size on disk;
* a search process: model load, then open (connector creation up to the first answered search),
  then per query, top 10, ``--repeats`` passes over the corpus's queries: (a) the full SPLADE query
  side (``encode_query`` of the model), (b) the inference-free query side (corpus IDF weights on the
  query's tokens, ``SparseStaticEmbedding.from_corpus``, what an inference-free model's query side
  is). The encode and the engine search are timed apart; p50/p99 are given for the engine search
  and p50 for the encode. Its peak RSS too.

``--storage`` names sets of qdrant connector options to measure side by side (default: one set,
``default``, the connector's defaults); e.g. ``--storage "in-ram:optimize_mb=0,sparse_on_disk=false"
--storage default``. After the table comes an extrapolation to 10M documents: for each figure, a
straight line ``y = a + b * N`` fitted by least squares over the measured points of that storage set
(at least two N): a fixed part (the interpreter, the model) plus a part per document (postings,
payloads, ids; a search visits posting lists that grow with N), with both parts printed. The CPU
(model and flags) and the load average (``uptime``) before and after every measured step are
printed with the table. The replicated datasets and collections are deleted after each N unless ``--keep``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from cpu_facts import cpu_model_and_flags

HERE = Path(__file__).resolve().parent
COLLECTION = "scale"


def load() -> str:
    """``uptime``'s load averages (1, 5, 15 minutes)."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def machine() -> str:
    """The CPU model, the flags that matter for encoding and search, and the cores."""
    model, have = cpu_model_and_flags()
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem = f"; {kb / 2**20:.0f} GiB RAM"
    except (OSError, IndexError, ValueError):
        pass
    return f"CPU: {model}; {len(os.sched_getaffinity(0))} usable cores of {os.cpu_count()}; flags: {have}{mem}"


def du_bytes(path: Path) -> int:
    """Bytes used on disk under ``path`` (allocated blocks, as ``du``)."""
    total = 0
    for base, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(base, f)).st_blocks * 512
    return total


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


# --------------------------------------------------------------------------- data


def base_dataset(corpus: Path, work: Path, given: Path | None) -> Path:
    """The corpus encoded once by the packaged model (a vector dataset folder)."""
    if given is not None:
        return given
    out = work / "base.parquet"
    cmd = [sys.executable, "-m", "sparsebridge.cli", "encode", str(corpus), "--output", str(out), "--no-cache", "-q"]
    print(f"encoding {corpus} once: {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)
    return out


def replicate(base: Path, n: int, out: Path, part_rows: int = 4096) -> None:
    """A vector dataset of ``n`` rows: the base rows over and over, copy ``k > 0`` with ids ``<id>~<k>``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted(base.glob("part-*.parquet"))
    if not parts:
        sys.exit(f"{base}: no part-*.parquet files (not a vector dataset)")
    table = pa.concat_tables(pq.read_table(p) for p in parts)
    schema = pq.read_schema(parts[0])  # keeps the dataset's sparsebridge metadata
    table = table.cast(schema)
    rows = table.num_rows
    ids = table.column("id").to_pylist()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for part, start in enumerate(range(0, n, part_rows)):
        chunks, new_ids, at = [], [], start
        end = min(n, start + part_rows)
        while at < end:
            copy, offset = divmod(at, rows)
            take = min(end - at, rows - offset)
            chunks.append(table.slice(offset, take))
            new_ids += (
                ids[offset : offset + take] if copy == 0 else [f"{i}~{copy}" for i in ids[offset : offset + take]]
            )
            at += take
        chunk = pa.concat_tables(chunks)
        chunk = chunk.set_column(0, schema.field("id"), pa.array(new_ids, pa.string()))
        pq.write_table(chunk, out / f"part-{part:05d}.parquet", compression="zstd", row_group_size=1024)


# --------------------------------------------------------------------------- processes


class Watch:
    """Polls a process's ``RssAnon`` (and ``VmRSS``) every 0.2 s; keeps the peaks."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.anon = 0
        self.rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        status = Path(f"/proc/{self.pid}/status")
        while not self._stop.wait(0.2):
            try:
                text = status.read_text()
            except OSError:
                return
            for line in text.splitlines():
                if line.startswith("RssAnon:"):
                    self.anon = max(self.anon, int(line.split()[1]) * 1024)
                elif line.startswith("VmRSS:"):
                    self.rss = max(self.rss, int(line.split()[1]) * 1024)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_measured(cmd: list[str], cwd: Path, log: Path) -> dict:
    """Run ``cmd`` to completion; wall seconds, exit status, peak RSS (kernel) and peak anonymous RSS."""
    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        watch = Watch(proc.pid)
        _pid, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        watch.stop()
    return {
        "seconds": seconds,
        "rc": proc.returncode,
        "peak_rss": usage.ru_maxrss * 1024,
        "peak_anon": watch.anon,
        "cpu_s": usage.ru_utime + usage.ru_stime,
    }


def write_config(path: Path, edge_path: Path, options: dict) -> None:
    lines = ["[backend]", 'connector = "qdrant"', f'index = "{COLLECTION}"', f"path = {json.dumps(str(edge_path))}"]
    for key, value in options.items():
        lines.append(f"{key} = {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")


def parse_storage(text: str) -> tuple[str, dict]:
    """``NAME:key=value,key=value`` (values read as JSON, else strings) -> (NAME, options)."""
    name, _, rest = text.partition(":")
    options = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            sys.exit(f"--storage {text!r}: {item!r} is not key=value")
        try:
            options[key.strip()] = json.loads(value)
        except ValueError:
            options[key.strip()] = value
    return name.strip() or "default", options


# --------------------------------------------------------------------------- the search process


def search_process(args: argparse.Namespace) -> None:
    """Runs in its own process: load the model, open the collection, time the two query sides."""
    start = time.perf_counter()
    from sparsebridge import SparseEncoder
    from sparsebridge.connector import Query, SearchOptions
    from sparsebridge.connector.plugins import create_connector
    from sparsebridge.defaults import splade_model_path
    from sparsebridge.encoders.modules import Router, SparseStaticEmbedding, SpladePooling
    from sparsebridge.index.corpus import open_corpus, read_beir_queries
    from sparsebridge.index.pipeline import Pipeline

    encoder = SparseEncoder(str(splade_model_path()), device="cpu")
    model_s = time.perf_counter() - start

    options = SearchOptions(top_k=10)
    queries = list(read_beir_queries(args.corpus / "queries.jsonl").values())
    start = time.perf_counter()
    connector = create_connector("qdrant", collection=COLLECTION, **json.loads(args.connector))
    first = connector.search([Query(sparse=Pipeline(encoder, connector, COLLECTION).encode_queries(queries[:1])[0])])
    open_s = time.perf_counter() - start
    if not first or not first[0].hits:
        sys.exit("the first search found nothing: the collection is empty or was not written")

    texts = [f"{d.get('title', '')} {d.get('text', '')}".strip() for d in open_corpus(args.corpus).documents]
    static = SparseStaticEmbedding.from_corpus(encoder.tokenizer, texts, frozen=True)
    free_encoder = SparseEncoder(
        modules=[Router.for_query_document([static], [encoder[0], SpladePooling("max", "relu")])], device="cpu"
    )
    sides = {
        "full": Pipeline(encoder, connector, COLLECTION, show_progress=False),
        "free": Pipeline(free_encoder, connector, COLLECTION, show_progress=False),
    }
    out: dict = {"model_s": model_s, "open_s": open_s, "queries": len(queries)}
    for side, pipeline in sides.items():
        encode_ms, search_ms, terms = [], [], []
        for _ in range(args.repeats):
            for q in queries:
                t0 = time.perf_counter()
                vector = pipeline.encode_queries([q])[0]
                t1 = time.perf_counter()
                connector.search([Query(sparse=vector)], options)
                t2 = time.perf_counter()
                encode_ms.append((t1 - t0) * 1000)
                search_ms.append((t2 - t1) * 1000)
                terms.append(len(vector.indices))
        out[side] = {
            "encode_p50": percentile(encode_ms, 50),
            "p50": percentile(search_ms, 50),
            "p99": percentile(search_ms, 99),
            "terms": statistics.mean(terms),
            "n": len(search_ms),
        }
    connector.close()
    Path(args.out).write_text(json.dumps(out))


# --------------------------------------------------------------------------- report


def fit_line(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Least squares of y on N: (a, b) of ``y = a + b * N``; None with fewer than two distinct N."""
    if len({n for n, _ in points}) < 2:
        return None
    mx = statistics.mean(n for n, _ in points)
    my = statistics.mean(y for _, y in points)
    b = sum((n - mx) * (y - my) for n, y in points) / sum((n - mx) ** 2 for n, _ in points)
    return my - b * mx, b


def mb(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def print_table(results: list[dict], target: int) -> None:
    head = (
        "| storage | N | ingest s | docs/s | ingest peak RSS MB (anon) | search peak RSS MB (anon) | index MB | "
        "open s (+ model) | full SPLADE p50/p99 ms (encode p50) | inference-free p50/p99 ms (encode p50) | load |"
    )
    print(head)
    print("|" + "---|" * head.count(" | ") + "---|")
    for r in results:
        s = r["search"]
        print(
            f"| {r['storage']} | {r['n']:,} | {r['ingest']['seconds']:.0f} | {r['n'] / r['ingest']['seconds']:,.0f} | "
            f"{mb(r['ingest']['peak_rss'])} ({mb(r['ingest']['peak_anon'])}) | "
            f"{mb(r['search_proc']['peak_rss'])} ({mb(r['search_proc']['peak_anon'])}) | {mb(r['index_bytes'])} | "
            f"{s['open_s']:.2f} (+{s['model_s']:.1f}) | "
            f"{s['full']['p50']:.2f} / {s['full']['p99']:.2f} ({s['full']['encode_p50']:.1f}) | "
            f"{s['free']['p50']:.2f} / {s['free']['p99']:.2f} ({s['free']['encode_p50']:.2f}) | "
            f"{r['load_ingest']} / {r['load_search']} |"
        )
    metrics = {
        "ingest peak RSS MB": lambda r: r["ingest"]["peak_rss"] / 2**20,
        "ingest peak anon MB": lambda r: r["ingest"]["peak_anon"] / 2**20,
        "search peak RSS MB": lambda r: r["search_proc"]["peak_rss"] / 2**20,
        "search peak anon MB": lambda r: r["search_proc"]["peak_anon"] / 2**20,
        "index MB": lambda r: r["index_bytes"] / 2**20,
        "ingest s": lambda r: r["ingest"]["seconds"],
        "open s": lambda r: r["search"]["open_s"],
        "full p50 ms": lambda r: r["search"]["full"]["p50"],
        "full p99 ms": lambda r: r["search"]["full"]["p99"],
        "inference-free p50 ms": lambda r: r["search"]["free"]["p50"],
        "inference-free p99 ms": lambda r: r["search"]["free"]["p99"],
    }
    for storage in dict.fromkeys(r["storage"] for r in results):
        mine = [r for r in results if r["storage"] == storage]
        ns = sorted({r["n"] for r in mine})
        if len(ns) < 2:
            print(f"\n{storage}: one N measured ({ns[0]:,}); an extrapolation needs two or more (--docs a,b)")
            continue
        print(
            f"\n{storage}: extrapolated to N = {target:,} by a straight line y = a + b * N, least squares over "
            f"N = {', '.join(f'{n:,}' for n in ns)} (a: what does not grow with N; b: the cost per document):"
        )
        for label, get in metrics.items():
            fit = fit_line([(r["n"], get(r)) for r in mine])
            if fit is not None:
                a, b = fit
                print(f"  {label:<24} {a + b * target:>12,.1f}   (a = {a:,.2f}, b = {b * 1e6:,.2f} per million docs)")


# --------------------------------------------------------------------------- main


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_search":
        p = argparse.ArgumentParser()
        p.add_argument("_search")
        p.add_argument("--corpus", type=Path, required=True)
        p.add_argument("--connector", required=True)
        p.add_argument("--repeats", type=int, default=3)
        p.add_argument("--out", required=True)
        search_process(p.parse_args())
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", type=Path, help="a BEIR folder (corpus.jsonl, queries.jsonl)")
    parser.add_argument("--docs", default="100000,1000000", help="comma-separated N (default 100000,1000000)")
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--vectors", type=Path, default=None, help="the corpus already encoded (a dataset folder)")
    parser.add_argument("--storage", action="append", default=None, help="NAME:key=value,... (repeatable)")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the queries per query side")
    parser.add_argument("--extrapolate", type=int, default=10_000_000, help="N to extrapolate to")
    parser.add_argument("--keep", action="store_true", help="keep the datasets and collections")
    parser.add_argument(
        "--previous",
        type=Path,
        action="append",
        default=[],
        help="stderr of an earlier run (its JSON result lines): its rows join the table and the fit",
    )
    parser.add_argument("--report-only", action="store_true", help="measure nothing: the table of --previous")
    args = parser.parse_args()
    earlier = []
    for path in args.previous:
        earlier += [json.loads(line) for line in path.read_text().splitlines() if line.startswith('{"storage"')]
    if args.report_only:
        print(machine())
        print_table(sorted(earlier, key=lambda r: (r["storage"], r["n"])), args.extrapolate)
        return
    sizes = [int(x.replace("_", "")) for x in args.docs.split(",") if x.strip()]
    storages = [parse_storage(s) for s in (args.storage or ["default"])]
    work = args.work or Path(tempfile.mkdtemp(prefix="sparsebridge-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    print(machine(), flush=True)
    print(f"start {started:%Y-%m-%d %H:%M} UTC, load {load()}; work folder {work}", flush=True)
    base = base_dataset(args.corpus.resolve(), work, args.vectors)

    results: list[dict] = []
    for n in sizes:
        rows = work / f"rows-{n}.parquet"
        replicate(base, n, rows)
        for name, options in storages:
            edge = work / f"edge-{name}-{n}"
            shutil.rmtree(edge, ignore_errors=True)
            config = work / f"{name}.toml"
            write_config(config, edge, options)
            load_ingest = load()
            ingest = run_measured(
                [sys.executable, "-m", "sparsebridge.cli", "ingest", str(rows), "--config", str(config), "-q"],
                work,
                work / f"ingest-{name}-{n}.log",
            )
            load_ingest += " -> " + load()
            if ingest["rc"] != 0:
                sys.exit(f"ingest of {n} rows ({name}) failed; see {work / f'ingest-{name}-{n}.log'}")
            size = du_bytes(edge / COLLECTION)
            load_search = load()
            out = work / f"search-{name}-{n}.json"
            connector = json.dumps({"path": str(edge), **options})
            search_proc = run_measured(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "_search",
                    "--corpus",
                    str(args.corpus.resolve()),
                    "--connector",
                    connector,
                    "--repeats",
                    str(args.repeats),
                    "--out",
                    str(out),
                ],
                work,
                work / f"search-{name}-{n}.log",
            )
            load_search += " -> " + load()
            if search_proc["rc"] != 0:
                sys.exit(f"search over {n} rows ({name}) failed; see {work / f'search-{name}-{n}.log'}")
            result = {
                "storage": name,
                "options": options,
                "n": n,
                "ingest": ingest,
                "index_bytes": size,
                "search": json.loads(out.read_text()),
                "search_proc": search_proc,
                "load_ingest": load_ingest,
                "load_search": load_search,
            }
            results.append(result)
            print(json.dumps(result), file=sys.stderr, flush=True)
            if not args.keep:
                shutil.rmtree(edge, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(rows, ignore_errors=True)

    print()
    print(machine())
    print(
        f"{started:%Y-%m-%d %H:%M}-{datetime.datetime.now(datetime.timezone.utc):%H:%M} UTC; "
        f"load averages (1/5/15 min) at the start and end of each step in the last column"
    )
    for name, options in storages:
        print(f"storage {name}: qdrant options {json.dumps(options) if options else '(defaults)'}")
    print()
    print_table(sorted(earlier + results, key=lambda r: (r["storage"], r["n"])), args.extrapolate)


if __name__ == "__main__":
    main()
