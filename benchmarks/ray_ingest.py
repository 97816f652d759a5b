"""In-process ingest vs the same ingest on Ray Data (local Ray), side by side on this machine.

    python benchmarks/ray_ingest.py ../shared/data/cranfield [--docs N] [--workers 2] [--rounds 2]

Each variant runs as ``sparsebridge ingest`` in its own subprocess, into its own Qdrant Edge folder,
in alternating rounds, and prints: docs/s of the whole command, docs/s of the ingest itself (the
report's own clock), Ray's start-up cost (whole command minus ingest, less the in-process
command's own start-up), and the peak memory of the command's whole process tree (Ray's actors are
separate processes, so the driver's RSS alone would hide them), sampled every 50 ms. Also prints the
CPU count and the foreign CPU load at the start: on a 2-core machine Ray is expected to give no gain;
the point is the same code on a cluster.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # a child that just exited
            total += p.memory_info().rss
    return total


def run(corpus: Path, work: Path, engine: str, docs: int | None, workers: int) -> dict:
    config = work / "sparsebridge.toml"
    config.write_text(
        f'[model]\ndevice = "cpu"\n\n[backend]\nconnector = "qdrant"\nmode = "edge"\npath = "{work / "edge"}"\n'
        'index = "bench"\n',
        encoding="utf-8",
    )
    args = [sys.executable, "-m", "sparsebridge.cli", "ingest", str(corpus.resolve()), "--config", str(config)]
    args += ["--json", "--quiet", "--recreate", "--engine", engine]
    if engine == "ray":
        args += ["--workers", str(workers)]
    if docs:
        args += ["--limit", str(docs)]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    start = time.perf_counter()
    proc = psutil.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=work)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, tree_rss(proc))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    stop.set()
    sampler.join()
    wall = time.perf_counter() - start
    # Exit 1 with a report means some documents failed (cranfield has two empty ones): still a run.
    if proc.returncode != 0 and not out.strip():
        raise SystemExit(f"{engine} run failed:\n{err.decode()[-2000:]}")
    report = json.loads(out)
    return {"wall": wall, "ingest": report["seconds"], "docs": report["documents"], "peak_mb": peak / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus_dir", type=Path)
    parser.add_argument("--docs", type=int, default=None, help="first N documents (default: all)")
    parser.add_argument("--workers", type=int, default=2, help="Ray encode actors")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per variant")
    args = parser.parse_args()

    load = psutil.getloadavg()[0]
    print(f"CPUs: {psutil.cpu_count()} (affinity {len(os.sched_getaffinity(0))}); load average at start {load:.2f}")
    results: dict[str, list[dict]] = {"local": [], "ray": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for engine in ("local", "ray"):
                work = Path(tmp) / f"{engine}{r}"
                work.mkdir()
                res = run(args.corpus_dir, work, engine, args.docs, args.workers)
                results[engine].append(res)
                print(
                    f"round {r + 1} {engine:<5} {res['docs']} docs: command {res['wall']:6.1f} s, "
                    f"ingest {res['ingest']:6.1f} s, peak {res['peak_mb']:7.0f} MB"
                )

    def med(engine: str, key: str) -> float:
        return statistics.median(x[key] for x in results[engine])

    docs = results["local"][0]["docs"]
    print()
    print(f"{'':<28}{'in-process':>14}{'Ray local':>14}")
    print(f"{'docs/s (whole command)':<28}{docs / med('local', 'wall'):>14.1f}{docs / med('ray', 'wall'):>14.1f}")
    print(f"{'docs/s (ingest clock)':<28}{docs / med('local', 'ingest'):>14.1f}{docs / med('ray', 'ingest'):>14.1f}")
    startup_local = med("local", "wall") - med("local", "ingest")
    startup_ray = med("ray", "wall") - med("ray", "ingest")
    print(f"{'start-up + shutdown (s)':<28}{startup_local:>14.1f}{startup_ray:>14.1f}")
    print(f"{'peak memory, tree (MB)':<28}{med('local', 'peak_mb'):>14.0f}{med('ray', 'peak_mb'):>14.0f}")
    per_worker = docs / med("ray", "ingest") / args.workers
    print(
        f"\nRay's cost over in-process start-up: {startup_ray - startup_local:.1f} s; "
        f"measured per-worker throughput {per_worker:.1f} docs/s (load average now {psutil.getloadavg()[0]:.2f})"
    )


if __name__ == "__main__":
    main()
