"""Interrupted and repeated ingests: ``sparsebridge ingest`` killed with SIGKILL, then run again.

The CLI runs as a real subprocess (the installed console script, or ``python -c`` around
``sparsebridge.cli.main`` for the two write-time kill points) on the vaswani collection into an
embedded Qdrant Edge folder under ``tmp_path``. Kill points, all triggered by what the process has
done rather than by wall-clock time:

* ``early``: the progress bar first appears (model loaded, index created, nothing written);
* ``between-writes``: the progress bar shows at least ``1500`` documents written; the process is
  encoding the next chunk;
* ``mid-write``: inside a connector write, after the first half of a batch landed and before the
  second half is sent (the batch write never returns);
* ``before-flush``: inside a connector write, after the whole batch went to the Edge write-ahead
  log and before the segments were flushed.

The last two pause the real write path at that spot (a wrapper around ``EdgeBackend.upsert``,
installed in the child process, prints a marker and sleeps) so the kill lands there every time;
a signal sent from outside would otherwise almost always land during encoding, which takes
nearly all of an ingest's time. Nothing else is changed in the child.

After every kill the folder must open cleanly and hold at least every document the progress bar
reported as written. After the final run: exactly 11,429 documents, every corpus id readable
through the connector (count == number of distinct ids read back), and the same top-10 for the 93
queries as a clean ingest. Running a finished ingest again changes nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytest.importorskip("qdrant_edge")

INDEX = "vaswani"
VASWANI_DOCS = 11_429
VASWANI_QUERIES = 93
KILL_TIMEOUT_S = 900  # generous: CI boxes are slow, and a kill point is reached long before this
MARKER = "SB-FAULT-PAUSED"

# Runs the real CLI after wrapping EdgeBackend.upsert so that, once ``at`` records were written,
# the next write stops at the requested spot, says so on stderr, and waits to be killed.
_PAUSE_IN_WRITE = r"""
import os, sys, time
from sparsebridge_qdrant import _edge

kind, at = os.environ["SB_FAULT_PAUSE"].split(":")
at = int(at)
original = _edge.EdgeBackend.upsert
state = {"written": 0}

def paused_upsert(self, name, layout, points):
    if state["written"] + len(points) <= at:
        out = original(self, name, layout, points)
        state["written"] += len(out[0])
        return out
    if kind == "mid-write":
        half = len(points) // 2
        original(self, name, layout, points[:half])
        done = state["written"] + half
    else:  # before-flush: the whole batch into the write-ahead log, segments not flushed
        self.flush = "close"  # no flush after this write (the default policy may not flush either)
        original(self, name, layout, points)
        done = state["written"] + len(points)
    sys.stderr.write("\nMARKER " + kind + " " + str(done) + "\n")
    sys.stderr.flush()
    time.sleep(3600)

_edge.EdgeBackend.upsert = paused_upsert
from sparsebridge.cli import main
sys.argv[0] = "sparsebridge"
main()
""".replace("MARKER", MARKER)


# --------------------------------------------------------------------------- running the CLI


def cli_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m sparsebridge.cli``."""
    script = Path(sys.executable).with_name("sparsebridge")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "sparsebridge.cli"]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SPARSEBRIDGE_CONFIG", None)
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def write_config(workdir: Path) -> Path:
    """A config pointing the embedded Qdrant Edge folder into ``workdir``."""
    config = workdir / "sparsebridge.toml"
    config.write_text(
        f'[model]\ndevice = "cpu"\n\n[backend]\nconnector = "qdrant"\nmode = "edge"\n'
        f"path = {json.dumps(str(workdir / 'edge'))}\nindex = {json.dumps(INDEX)}\n",
        encoding="utf-8",
    )
    return config


def ingest_args(corpus: Path, config: Path, limit: int | None) -> list[str]:
    args = ["ingest", str(corpus), "--config", str(config), "--json"]
    return args + (["--limit", str(limit)] if limit else [])


_PROGRESS = re.compile(r"ingest:\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)")


@dataclass
class Watched:
    """What a child process said on stderr so far."""

    progress: int = -1  # highest "n/total" seen on the ingest progress bar; -1 before it appears
    paused: str | None = None  # the marker line of a paused write
    text: list[str] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)


def _watch(stream, seen: Watched) -> None:
    buffer = ""
    while True:
        chunk = os.read(stream.fileno(), 65536)
        if not chunk:
            break
        buffer += chunk.decode("utf-8", errors="replace")
        *parts, buffer = re.split(r"[\r\n]", buffer)
        with seen.changed:
            for part in parts:
                seen.text.append(part)
                m = _PROGRESS.search(part)
                if m:
                    seen.progress = max(seen.progress, int(m.group(1)))
                if part.startswith(MARKER):
                    seen.paused = part
            # tqdm ends a refresh with the bar itself (the "\r" comes first): read the open tail too.
            m = _PROGRESS.search(buffer)
            if m:
                seen.progress = max(seen.progress, int(m.group(1)))
            seen.changed.notify_all()
    with seen.changed:
        if buffer:
            seen.text.append(buffer)
            m = _PROGRESS.search(buffer)
            if m:
                seen.progress = max(seen.progress, int(m.group(1)))
        seen.changed.notify_all()


@dataclass
class Kill:
    """A kill point: ``name``, the progress count that triggers it (``pause`` = a write-time pause)."""

    name: str
    after_docs: int = 0
    pause: str | None = None  # "mid-write" or "before-flush"


def run_and_kill(corpus: Path, workdir: Path, config: Path, kill: Kill, limit: int | None) -> dict:
    """Start an ingest, SIGKILL it at ``kill``; returns what was seen at the moment of the kill."""
    env = child_env()
    if kill.pause:
        env["SB_FAULT_PAUSE"] = f"{kill.pause}:{kill.after_docs}"
        cmd = [sys.executable, "-c", _PAUSE_IN_WRITE]
    else:
        cmd = cli_command()
    proc = subprocess.Popen(
        cmd + ingest_args(corpus, config, limit),
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    seen = Watched()
    reader = threading.Thread(target=_watch, args=(proc.stderr, seen), daemon=True)
    reader.start()

    def reached() -> bool:
        if kill.pause:
            return seen.paused is not None
        return seen.progress >= kill.after_docs

    deadline = time.monotonic() + KILL_TIMEOUT_S
    with seen.changed:
        while not reached() and proc.poll() is None and time.monotonic() < deadline:
            seen.changed.wait(timeout=0.2)
        hit = reached()
        progress_at_kill = seen.progress
        paused = seen.paused
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    rc = proc.wait(timeout=60)
    reader.join(timeout=10)
    proc.stdout.close()
    proc.stderr.close()
    tail = "\n".join(seen.text[-15:])
    why = "hung" if rc == -signal.SIGKILL else f"exit {rc}"  # still running at the deadline: killed above
    assert hit, f"kill point {kill.name!r} was never reached in {KILL_TIMEOUT_S} s ({why}); stderr tail:\n{tail}"
    assert rc == -signal.SIGKILL, f"{kill.name}: the ingest ended on its own (exit {rc}) before the kill:\n{tail}"
    written = progress_at_kill
    if paused is not None:
        written = int(paused.split()[-1])  # records whose write went through before the pause
    return {"kill": kill.name, "progress": progress_at_kill, "written_before_kill": written}


def run_to_end(corpus: Path, workdir: Path, config: Path, limit: int | None) -> dict:
    """Run an ingest to completion; returns its JSON report."""
    proc = subprocess.run(
        cli_command() + ingest_args(corpus, config, limit) + ["--quiet"],
        cwd=workdir,
        env=child_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=KILL_TIMEOUT_S,
    )
    assert proc.returncode == 0, f"ingest failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout)


# --------------------------------------------------------------------------- reading the index


def corpus_ids(corpus: Path, limit: int | None) -> list[str]:
    ids = []
    with open(corpus / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                ids.append(str(json.loads(line)["_id"]))
                if limit and len(ids) >= limit:
                    break
    return ids


def queries(corpus: Path) -> list[str]:
    with open(corpus / "queries.jsonl", encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh if line.strip()]


def open_connector(workdir: Path):
    from sparsebridge_qdrant import QdrantConnector

    return QdrantConnector(mode="edge", path=str(workdir / "edge"), index=INDEX)


def index_state(workdir: Path, ids: list[str]) -> dict:
    """Count, the ids readable back (in chunks) and the payloads, through the connector."""
    with open_connector(workdir) as conn:
        count = conn.count()
        found: dict[str, dict] = {}
        for start in range(0, len(ids), 2000):
            found.update(conn.get(ids[start : start + 2000]))
        meta = conn.index_metadata()
    return {"count": count, "found": found, "metadata": meta}


def top10(workdir: Path, encoder, texts: list[str]) -> list[list[tuple[str, float]]]:
    """Top-10 (id, score) per query through the pipeline's search path."""
    from sparsebridge.pipeline import Pipeline

    with Pipeline(encoder, open_connector(workdir), INDEX, model_name="packaged:splade", show_progress=False) as pipe:
        results = pipe.search(texts, top_k=10)
    return [[(h.id, h.score) for h in r.hits] for r in results]


def same_rankings(got: list[list[tuple[str, float]]], want: list[list[tuple[str, float]]]) -> list[str]:
    """Differences between two runs' top-10s; ties (equal scores) may come in either order."""
    problems = []
    for q, (a, b) in enumerate(zip(got, want)):
        if len(a) != len(b):
            problems.append(f"query {q}: {len(a)} hits vs {len(b)}")
            continue
        for (_, sa), (_, sb) in zip(a, b):
            if abs(sa - sb) > 1e-4 * max(1.0, abs(sb)):
                problems.append(f"query {q}: scores {[s for _, s in a]} vs {[s for _, s in b]}")
                break
        else:
            # Group by score; the last group may be cut by top-10, so compare it only by size.
            groups_a, groups_b = _by_score(a), _by_score(b)
            if groups_a[:-1] != groups_b[:-1]:
                problems.append(f"query {q}: ids {[i for i, _ in a]} vs {[i for i, _ in b]}")
    if len(got) != len(want):
        problems.append(f"{len(got)} result lists vs {len(want)}")
    return problems


def _by_score(hits: list[tuple[str, float]]) -> list[frozenset[str]]:
    groups: list[tuple[float, set[str]]] = []
    for doc, score in hits:
        if groups and abs(groups[-1][0] - score) <= 1e-5 * max(1.0, abs(score)):
            groups[-1][1].add(doc)
        else:
            groups.append((score, {doc}))
    return [frozenset(g) for _, g in groups]


# --------------------------------------------------------------------------- the scenario

DEFAULT_KILLS = (
    Kill("early"),
    Kill("between-writes", after_docs=1500),
    Kill("mid-write", after_docs=3000, pause="mid-write"),
    Kill("before-flush", after_docs=4500, pause="before-flush"),
)


def interrupted_ingest(corpus: Path, workdir: Path, limit: int | None = None, kills=DEFAULT_KILLS) -> dict:
    """Kill an ingest at each kill point in turn (same folder), then run it to the end.

    Returns per-kill observations (count found afterwards, records reported written before) and
    the final report. Raises AssertionError when a kill lost acknowledged writes.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    config = write_config(workdir)
    ids = corpus_ids(corpus, limit)
    observed = []
    for kill in kills:
        seen = run_and_kill(corpus, workdir, config, kill, limit)
        state = index_state(workdir, ids)
        seen["count_after"] = state["count"]
        seen["readable_after"] = len(state["found"])
        observed.append(seen)
        # The folder opens, holds nothing unknown, and kept every write that was acknowledged.
        assert state["count"] == len(state["found"]), seen
        assert seen["written_before_kill"] <= state["count"] <= len(ids), seen
    report = run_to_end(corpus, workdir, config, limit)
    return {"kills": observed, "report": report, "ids": ids}


@pytest.fixture(scope="module")
def vaswani(data_dir) -> Path:
    return data_dir / "vaswani"


@pytest.fixture(scope="module")
def clean(vaswani, encoder, tmp_path_factory):
    """A clean, uninterrupted CLI ingest and its top-10s: the reference for the other tests."""
    workdir = tmp_path_factory.mktemp("clean")
    config = write_config(workdir)
    report = run_to_end(vaswani, workdir, config, None)
    texts = queries(vaswani)
    return {"workdir": workdir, "config": config, "report": report, "top10": top10(workdir, encoder, texts)}


@pytest.mark.slow
def test_killed_ingests_resume_to_the_clean_result(vaswani, clean, encoder, tmp_path):
    result = interrupted_ingest(vaswani, tmp_path / "killed")
    kills = result["kills"]
    assert [k["kill"] for k in kills] == ["early", "between-writes", "mid-write", "before-flush"]
    # The kill points are where they claim to be: nothing written yet, then growing partial indexes.
    assert kills[0]["count_after"] == 0
    assert kills[1]["written_before_kill"] >= 1500
    assert kills[2]["count_after"] >= kills[2]["written_before_kill"] > 3000 - 128
    assert kills[3]["count_after"] >= kills[3]["written_before_kill"] > 4500
    assert all(k["count_after"] < VASWANI_DOCS for k in kills)

    report = result["report"]
    assert report["documents"] == VASWANI_DOCS and report["written"] == VASWANI_DOCS
    assert report["failed"] == {}
    ids = result["ids"]
    assert len(ids) == len(set(ids)) == VASWANI_DOCS
    state = index_state(tmp_path / "killed", ids)
    assert state["count"] == VASWANI_DOCS
    assert sorted(state["found"]) == sorted(ids)  # every id once: count == distinct ids read back
    clean_state = index_state(clean["workdir"], ids)
    assert state["metadata"] == clean_state["metadata"]
    assert state["found"] == clean_state["found"]  # same stored text and payload per id

    texts = queries(vaswani)
    assert len(texts) == VASWANI_QUERIES
    got = top10(tmp_path / "killed", encoder, texts)
    assert sum(len(r) for r in got) == 10 * VASWANI_QUERIES
    assert same_rankings(got, clean["top10"]) == []


@pytest.mark.slow
def test_running_a_finished_ingest_again_changes_nothing(vaswani, clean, encoder, tmp_path):
    # Work on a copy so the reference stays untouched whatever the order of the tests.
    workdir = tmp_path / "again"
    shutil.copytree(clean["workdir"], workdir)
    config = write_config(workdir)
    ids = corpus_ids(vaswani, None)
    before = index_state(workdir, ids)
    again = run_to_end(vaswani, workdir, config, None)
    after = index_state(workdir, ids)

    # Timing and the encode cache's counters describe the route, not what was written: the second
    # run is served by the cache the first one filled.
    def what_was_written(report: dict) -> dict:
        return {k: v for k, v in report.items() if not k.endswith(("seconds", "second")) and not k.startswith("cache_")}

    first, second = what_was_written(clean["report"]), what_was_written(again)
    assert second == first
    assert again["cache_hits"] == again["records"] and again["cache_misses"] == 0
    assert second["documents"] == second["written"] == VASWANI_DOCS and second["failed"] == {}
    assert after["count"] == before["count"] == VASWANI_DOCS
    assert after["found"] == before["found"] and after["metadata"] == before["metadata"]
    assert same_rankings(top10(workdir, encoder, queries(vaswani)), clean["top10"]) == []


# --------------------------------------------------------------------------- ingest from a vector dataset
#
# ``sparsebridge ingest vectors.parquet`` writes batches of 1,024 rows and, by default, flushes the
# Edge segments at most every 10 s: what it reports written is safe because Edge's ``update``
# appends the operation to its write-ahead log before it returns. The config below sets
# ``flush_interval = 3600``, so between the shard's creation and the kill no flush happens at all:
# only the WAL can give back the records. Real vectors: vaswani documents encoded by the packaged
# model, replicated with new ids (the builder of ``benchmarks/ingest_rate.py``).

DATASET_SOURCE_DOCS = 300
DATASET_ROWS = 24_000

# Pauses the dataset write path right after Edge's update returned for the batch that crosses
# ``at`` rows (no flush, nothing else done), says how many rows were written, waits to be killed.
_PAUSE_AFTER_UPDATE = r"""
import os, sys, time
from sparsebridge_qdrant import _edge

at = int(os.environ["SB_FAULT_PAUSE"].split(":")[1])
original = _edge.EdgeBackend.upsert_columns
state = {"written": 0}

def paused(self, name, layout, columns, payloads):
    out = original(self, name, layout, columns, payloads)
    state["written"] += len(out[0])
    if state["written"] >= at:
        sys.stderr.write("\nMARKER after-update " + str(state["written"]) + "\n")
        sys.stderr.flush()
        time.sleep(3600)
    return out

_edge.EdgeBackend.upsert_columns = paused
from sparsebridge.cli import main
sys.argv[0] = "sparsebridge"
main()
""".replace("MARKER", MARKER)


@pytest.fixture(scope="module")
def vector_dataset(vaswani, tmp_path_factory) -> Path:
    """vaswani's first documents encoded by ``sparsebridge encode --output``, replicated to
    ``DATASET_ROWS`` rows with new ids."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from ingest_rate import replicate

    work = tmp_path_factory.mktemp("dataset")
    encoded = work / "encoded.parquet"
    proc = subprocess.run(
        cli_command()
        + ["encode", str(vaswani), "--output", str(encoded), "--limit", str(DATASET_SOURCE_DOCS), "--quiet"],
        cwd=work,
        env=child_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=KILL_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = work / "vectors.parquet"
    replicate(encoded, out, DATASET_ROWS)
    return out


def dataset_rows(path: Path) -> dict[str, dict]:
    """id -> text and payload of every row, read with pyarrow (not through sparsebridge)."""
    import pyarrow.dataset as pads

    table = pads.dataset(str(path), format="parquet").to_table(columns=["id", "text", "payload"])
    return {r["id"]: {"text": r["text"] or "", **json.loads(r["payload"] or "{}")} for r in table.to_pylist()}


def write_unflushed_config(workdir: Path) -> Path:
    config = write_config(workdir)
    config.write_text(config.read_text(encoding="utf-8") + "flush_interval = 3600\n", encoding="utf-8")
    return config


@pytest.mark.slow
def test_killed_dataset_ingest_loses_nothing_reported_and_a_rerun_duplicates_nothing(vector_dataset, tmp_path):
    workdir = tmp_path / "ds"
    workdir.mkdir()
    config = write_unflushed_config(workdir)
    want = dataset_rows(vector_dataset)
    assert len(want) == DATASET_ROWS
    ids = sorted(want)
    observed = []
    for kill in (Kill("between-writes", after_docs=6000), Kill("after-update", after_docs=12000, pause="after-update")):
        seen = run_and_kill_dataset(vector_dataset, workdir, config, kill)
        state = index_state(workdir, ids)
        observed.append((kill.name, seen, state["count"]))
        # Everything reported written is there, nothing else, and the kill came before the end.
        assert seen <= state["count"] < DATASET_ROWS, observed
        assert state["count"] == len(state["found"]), observed
        assert all(state["found"][i] == {"text": want[i]["text"], **_payload(want[i])} for i in state["found"])
    assert observed[0][1] >= 6000 and observed[1][1] >= 12000

    report = run_to_end(vector_dataset, workdir, config, None)
    assert report["documents"] == report["written"] == DATASET_ROWS and report["failed"] == {}
    state = index_state(workdir, ids)
    assert state["count"] == DATASET_ROWS and sorted(state["found"]) == ids  # each id once
    assert all(state["found"][i] == {"text": want[i]["text"], **_payload(want[i])} for i in ids)
    again = run_to_end(vector_dataset, workdir, config, None)
    assert again["written"] == DATASET_ROWS
    assert index_state(workdir, ids)["count"] == DATASET_ROWS


def _payload(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "text"}


def run_and_kill_dataset(dataset: Path, workdir: Path, config: Path, kill: Kill) -> int:
    """Start ``ingest vectors.parquet``, SIGKILL it at ``kill``; returns the rows reported written
    (the progress bar advances only after a write returned, or the pause marker's count)."""
    env = child_env()
    if kill.pause:
        env["SB_FAULT_PAUSE"] = f"{kill.pause}:{kill.after_docs}"
        cmd = [sys.executable, "-c", _PAUSE_AFTER_UPDATE]
    else:
        cmd = cli_command()
    proc = subprocess.Popen(
        cmd + ["ingest", str(dataset), "--config", str(config), "--json"],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    seen = Watched()
    reader = threading.Thread(target=_watch, args=(proc.stderr, seen), daemon=True)
    reader.start()

    def reached() -> bool:
        return seen.paused is not None if kill.pause else seen.progress >= kill.after_docs

    deadline = time.monotonic() + KILL_TIMEOUT_S
    with seen.changed:
        while not reached() and proc.poll() is None and time.monotonic() < deadline:
            seen.changed.wait(timeout=0.05)
        hit, progress, paused = reached(), seen.progress, seen.paused
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    rc = proc.wait(timeout=60)
    reader.join(timeout=10)
    proc.stdout.close()
    proc.stderr.close()
    tail = "\n".join(seen.text[-15:])
    assert hit, f"kill point {kill.name!r} was never reached (exit {rc}); stderr tail:\n{tail}"
    assert rc == -signal.SIGKILL, f"{kill.name}: the ingest ended on its own (exit {rc}) before the kill:\n{tail}"
    return int(paused.split()[-1]) if paused is not None else progress
