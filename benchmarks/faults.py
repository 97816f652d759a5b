"""Fault figures: ingests killed and resumed, bulk retries against failing servers, fuzz cases run.

    python benchmarks/faults.py                       # vaswani, full size (a few minutes on 2 cores)
    python benchmarks/faults.py --limit 1000          # a quicker run on the first 1000 documents
    python benchmarks/faults.py --skip-kills --json   # only the bulk, fuzz and concurrency figures, as JSON

Four parts, each reusing the test suite's scenarios:

* kills: ``sparsebridge ingest`` (a real subprocess) on vaswani into Qdrant Edge, SIGKILLed at the
  four kill points of tests/test_interrupted_ingest.py (early, between writes, mid-write, before
  flush), then run to the end. Documents lost = corpus ids not readable back; duplicates = stored
  points beyond the distinct ids read back. A kill is survived when the folder reopens, every id
  acknowledged before the kill reads back, and it holds no point that is not one of those ids read.
* bulk: the Elasticsearch and OpenSearch connectors (real clients) against the local fake server
  of tests/lucene_testkit.py, with whole requests failing (429, 503) and single bulk items
  rejected (429); figures: retried requests, documents lost.
* fuzz: the hypothesis suites tests/test_fuzz_encoder.py and tests/test_fuzz_corpus_config.py,
  run in-process; figures: cases run, and the outcome of each test as pytest reports it.
* concurrent: a ``sparsebridge ingest`` of vaswani into Qdrant Edge (a real subprocess, not paused),
  and while it runs, rounds of a reader (``sparsebridge search``) and a second writer (the same
  ``sparsebridge ingest``) started side by side in two more processes. Figures: how many of them
  were refused with one ``Error:`` line and a non-zero exit (and how many ran into the ingest's
  end instead), then documents lost (corpus ids not readable back), corrupted (stored points
  beyond the distinct ids, or a stored text that is not the document's), and whether the ingest
  completed on its own.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
sys.path.insert(0, str(TESTS))


def kills(corpus: Path, limit: int | None) -> dict:
    from test_interrupted_ingest import (
        DEFAULT_KILLS,
        Kill,
        corpus_ids,
        index_state,
        run_and_kill,
        run_to_end,
        write_config,
    )

    ids = corpus_ids(corpus, limit)
    scale = len(ids) / 11_429
    plan = [Kill(k.name, after_docs=int(k.after_docs * scale), pause=k.pause) if limit else k for k in DEFAULT_KILLS]
    start = time.perf_counter()
    per_kill = []
    with tempfile.TemporaryDirectory(prefix="sb-faults-") as tmp:
        workdir = Path(tmp) / "killed"
        workdir.mkdir(parents=True)
        config = write_config(workdir)
        for kill in plan:
            seen = run_and_kill(corpus, workdir, config, kill, limit)
            state = index_state(workdir, ids)
            stored = set(state["found"])
            # Judged by ids: the ingest writes the corpus in order, so the documents acknowledged
            # before the kill are its first ones; each must be readable back, and nothing else stored.
            acked = set(ids[: seen["written_before_kill"]])
            seen.update(
                count_after=state["count"],
                readable_after=len(stored),
                acknowledged_lost=sorted(acked - stored)[:10],
                unknown_points=state["count"] - len(stored),
            )
            seen["survived"] = not (acked - stored) and state["count"] == len(stored)
            per_kill.append(seen)
        report = run_to_end(corpus, workdir, config, limit)
        state = index_state(workdir, ids)
    return {
        "documents": len(ids),
        "kills": len(per_kill),
        "kills_survived": sum(1 for k in per_kill if k["survived"]),
        "per_kill": per_kill,
        "documents_lost": len(set(ids) - set(state["found"])),
        "duplicates": state["count"] - len(state["found"]),
        "final_report": {k: report[k] for k in ("documents", "written", "failed", "retries")},
        "seconds": round(time.perf_counter() - start, 1),
    }


def _expected_text(doc: dict) -> str:
    # What the pipeline stores as a record's text: title and text, stripped, joined by a space.
    return " ".join(doc[f].strip() for f in ("title", "text") if isinstance(doc.get(f), str) and doc[f].strip())


def concurrent(corpus: Path, limit: int | None, max_rounds: int = 3) -> dict:
    import subprocess
    import threading

    from test_interrupted_ingest import (
        Watched,
        _watch,
        child_env,
        cli_command,
        corpus_ids,
        index_state,
        ingest_args,
        write_config,
    )

    ids = corpus_ids(corpus, limit)
    texts = {}
    with open(corpus / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                doc = json.loads(line)
                texts[str(doc["_id"])] = _expected_text(doc)
                if len(texts) >= len(ids):
                    break
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sb-concurrent-") as tmp:
        workdir = Path(tmp)
        config = write_config(workdir)
        owner = subprocess.Popen(
            cli_command() + ingest_args(corpus, config, limit),
            cwd=workdir,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        seen = Watched()
        reader = threading.Thread(target=_watch, args=(owner.stderr, seen), daemon=True)
        reader.start()
        with seen.changed:  # the first write went through: the ingest holds the folder
            while seen.progress < 1 and owner.poll() is None:
                seen.changed.wait(timeout=0.2)
        others = {
            "reader": cli_command() + ["search", "pressure river", "--config", str(config), "--no-explain"],
            "writer": cli_command() + ingest_args(corpus, config, limit) + ["--quiet"],
        }
        rounds = []
        while owner.poll() is None and len(rounds) < max_rounds:
            pipes = {"stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
            procs = {name: subprocess.Popen(cmd, cwd=workdir, env=child_env(), **pipes) for name, cmd in others.items()}
            row = {}
            for name, proc in procs.items():
                out, err = proc.communicate(timeout=900)
                lines = [ln for ln in err.decode("utf-8", "replace").splitlines() if ln.strip()]
                row[name] = {
                    "exit": proc.returncode,
                    "one_error_line": len(lines) == 1 and lines[0].startswith("Error: ") and "in use by" in lines[0],
                    "line": lines[-1] if lines else "",
                }
            # Refusals only count while the ingest was still running when they ended.
            row["during_ingest"] = owner.poll() is None
            rounds.append(row)
        out = owner.stdout.read()
        rc = owner.wait(timeout=3600)
        reader.join(timeout=10)
        owner.stdout.close()
        owner.stderr.close()
        report = json.loads(out) if rc == 0 else {}
        state = index_state(workdir, ids)
        wrong_text = sum(1 for i, payload in state["found"].items() if payload.get("text") != texts[i])
        after = subprocess.run(
            others["reader"] + ["--json"], cwd=workdir, env=child_env(), capture_output=True, text=True, timeout=900
        )
        hits_after = len(json.loads(after.stdout)[0]["hits"]) if after.returncode == 0 else None
    during = [r for r in rounds if r["during_ingest"]]
    return {
        "documents": len(ids),
        "rounds": len(rounds),
        "rounds_during_ingest": len(during),
        "readers_refused": sum(1 for r in during if r["reader"]["exit"] != 0 and r["reader"]["one_error_line"]),
        "writers_refused": sum(1 for r in during if r["writer"]["exit"] != 0 and r["writer"]["one_error_line"]),
        "example_refusal": during[0]["reader"]["line"] if during else "",
        "ingest_exit": rc,
        "ingest_written": report.get("written"),
        "documents_lost": len(set(ids) - set(state["found"])),
        "corrupted": (state["count"] - len(state["found"])) + wrong_text,
        "search_after_hits": hits_after,
        "seconds": round(time.perf_counter() - start, 1),
    }


def bulk() -> dict:
    from lucene_testkit import FakeEngine, FakeServer
    from sparsebridge.connector import IndexSpec, Record, SparseVector
    from sparsebridge_elasticsearch import ElasticsearchConnector
    from sparsebridge_opensearch import OpenSearchConnector

    engines = {
        "elasticsearch": (ElasticsearchConnector, {"flavor": "elasticsearch", "version": "9.1.0"}),
        "opensearch": (OpenSearchConnector, {"flavor": "opensearch", "version": "3.3.0"}),
    }
    spec = IndexSpec("docs", metadata={"model": "m", "vocab_size": 100, "vocab_fingerprint": "abc"})
    out = {}
    for name, (cls, kwargs) in engines.items():
        engine = FakeEngine(**kwargs)
        n = 200
        records = [
            Record(f"r{i}", f"text {i}", SparseVector.from_pairs([(1, "alpha", 1.0), (i + 2, f"t{i}", 0.5)]))
            for i in range(n)
        ]
        with FakeServer(engine) as server:
            conn = cls(url=server.url, max_retries=4, initial_backoff=0.01, max_backoff=0.05, chunk_size=50)
            conn.ensure_index(spec)
            engine.fail_requests(r"/_bulk$", 429, 503, 503)  # three whole bulk requests refused
            for i in range(0, n, 17):  # every 17th document rejected once or twice by its shard
                engine.fail_items(f"r{i}", *[(429, "es_rejected_execution_exception")] * (1 + i % 2))
            result = conn.write(records)
            bulk_calls = len(engine.calls(r"/_bulk$"))
            stored = conn.count()
            conn.close()
        out[name] = {
            "documents": n,
            # Bulk requests beyond the n/chunk_size a fault-free write sends: the retried requests.
            "retried_requests": bulk_calls - -(-n // 50),
            "retry_rounds": result.retries,  # WriteResult.retries: rounds of retries over the batch
            "bulk_requests": bulk_calls,
            "failed": len(result.failed),
            "documents_lost": n - stored,
        }
    return out


def fuzz() -> dict:
    import pytest

    class Outcomes:
        """The outcome of each test that ran (its call phase), as pytest reports it."""

        def __init__(self) -> None:
            self.outcomes: dict[str, str] = {}

        def pytest_runtest_logreport(self, report) -> None:  # noqa: ANN001 - pytest's hook
            if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
                self.outcomes[report.nodeid] = report.outcome

    files = [str(TESTS / "test_fuzz_encoder.py"), str(TESTS / "test_fuzz_corpus_config.py")]
    start = time.perf_counter()
    seen = Outcomes()
    code = pytest.main(["-q", "-p", "no:cacheprovider", "--no-header", *files], plugins=[seen])
    # Cases are counted by the properties themselves as each example runs (examples hypothesis
    # discards through assume() are not counted); the tests' own outcomes say whether they passed.
    cases: dict[str, int] = {}
    for module in ("test_fuzz_encoder", "test_fuzz_corpus_config"):
        mod = sys.modules.get(module)
        if mod is not None:
            cases.update(getattr(mod, "CASES", {}))
    outcomes = list(seen.outcomes.values())
    return {
        "passed": int(code) == 0 and "failed" not in outcomes,
        "tests": {k: outcomes.count(k) for k in ("passed", "failed", "skipped")},
        "cases": dict(sorted(cases.items())),
        "total": sum(cases.values()),
        "seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "data" / "vaswani")
    parser.add_argument("--limit", type=int, default=None, help="Kill scenario on the first N documents only.")
    parser.add_argument("--skip-kills", action="store_true")
    parser.add_argument("--skip-fuzz", action="store_true")
    parser.add_argument("--skip-concurrent", action="store_true")
    parser.add_argument(
        "--concurrent-limit", type=int, default=None, help="Concurrent-access case on the first N documents only."
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    figures: dict = {}
    figures["bulk"] = bulk()
    if not args.skip_fuzz:
        figures["fuzz"] = fuzz()
    if not args.skip_kills:
        figures["kills"] = kills(args.corpus, args.limit)
    if not args.skip_concurrent:
        figures["concurrent"] = concurrent(args.corpus, args.concurrent_limit or args.limit)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print("\n== fault figures ==")
    if "kills" in figures:
        k = figures["kills"]
        print(f"kills survived      {k['kills_survived']}/{k['kills']}  ({k['documents']} documents, {k['seconds']}s)")
        for row in k["per_kill"]:
            print(
                f"  {row['kill']:<15} acked before kill {row['written_before_kill']:>6}   "
                f"stored after kill {row['count_after']:>6}"
            )
        print(f"documents lost      {k['documents_lost']}")
        print(f"duplicates          {k['duplicates']}")
        print(f"final report        {k['final_report']}")
    for name, b in figures["bulk"].items():
        print(
            f"{name:<19} retried requests {b['retried_requests']} ({b['bulk_requests']} bulk requests, "
            f"{b['retry_rounds']} retry rounds), {b['failed']} failed, documents lost {b['documents_lost']} "
            f"of {b['documents']}"
        )
    if "concurrent" in figures:
        c = figures["concurrent"]
        print(
            f"concurrent access   {c['rounds_during_ingest']} rounds during an ingest of {c['documents']} documents: "
            f"readers refused {c['readers_refused']}/{c['rounds_during_ingest']}, second writers refused "
            f"{c['writers_refused']}/{c['rounds_during_ingest']} (one Error line, non-zero exit)"
        )
        print(f"  refusal           {c['example_refusal']}")
        print(
            f"  ingest            exit {c['ingest_exit']}, {c['ingest_written']} written; documents lost "
            f"{c['documents_lost']}, corrupted {c['corrupted']}; search after it: {c['search_after_hits']} hits "
            f"({c['seconds']}s)"
        )
    if "fuzz" in figures:
        f = figures["fuzz"]
        t = f["tests"]
        verdict = "all passed" if f["passed"] else "FAILURES"
        print(
            f"fuzz cases run      {f['total']} in {sum(t.values())} tests ({t['passed']} passed, {t['failed']} failed, "
            f"{t['skipped']} skipped: {verdict}, {f['seconds']}s)"
        )
        for name, count in f["cases"].items():
            print(f"  {name:<28} {count}")


if __name__ == "__main__":
    main()
