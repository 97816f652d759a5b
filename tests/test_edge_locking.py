"""Two real processes on one Qdrant Edge folder: the owner keeps working, the other is refused or waits.

Every test here runs the other process for real (``subprocess``) against the real Edge engine: an
OS lock only means something between processes. What must hold:

* a second process is refused with one line naming the folder and the holder's pid, before the
  engine opens anything: the owner's files are byte-for-byte what they were, and the owner goes on
  writing and flushing afterwards;
* with ``lock_timeout`` the second process waits for the owner to finish instead;
* ``sparsebridge search`` and a second ``sparsebridge ingest`` started during a running CLI ingest
  exit non-zero with one ``Error:`` line, and the running ingest completes with every document
  stored (the case that used to kill it with "tracker_journal.dat is shorter than expected").
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import types
from pathlib import Path

import pytest

pytest.importorskip("qdrant_edge")

from sparsebridge.connector import ConnectorError, IndexSpec, Record, SparseVector  # noqa: E402
from sparsebridge_qdrant import QdrantConnector  # noqa: E402

META = {"model": "test/splade", "vocab_size": 100, "vocab_fingerprint": "fp-lock"}
TESTS = Path(__file__).resolve().parent

# The owner: creates a collection, writes n records, says "ready <pid>", waits for a line on stdin,
# then writes n more (each write flushed) and reports what it counts before closing.
_OWNER = textwrap.dedent(
    """
    import os, sys
    from sparsebridge.connector import IndexSpec, Record, SparseVector
    from sparsebridge_qdrant import QdrantConnector

    path, n = sys.argv[1], int(sys.argv[2])
    meta = {meta!r}
    records = [
        Record(f"d{{i}}", f"text {{i}}", SparseVector.from_pairs([(i % 97, f"t{{i % 97}}", 1.0 + i)]))
        for i in range(2 * n)
    ]
    c = QdrantConnector(mode="edge", path=path, collection="held")
    c.ensure_index(IndexSpec("held", metadata=meta))
    c.write(records[:n])
    print("ready", os.getpid(), flush=True)
    sys.stdin.readline()
    for start in range(n, 2 * n, 50):
        c.write(records[start:start + 50])
    print("done", c.count(), flush=True)
    c.close()
    """
).format(meta=META)


def _files(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under ``folder`` with its size, mtime and content hash."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            st = path.stat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            out[str(path.relative_to(folder))] = (st.st_size, st.st_mtime_ns, digest)
    return out


def _start_owner(tmp_path: Path, n: int) -> tuple[subprocess.Popen, int]:
    script = tmp_path / "owner.py"
    script.write_text(_OWNER, encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "edge"), str(n)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    if not line.startswith("ready"):
        proc.kill()
        raise AssertionError(f"the owner did not start: {line!r} {proc.stderr.read()[-2000:]}")
    return proc, int(line.split()[1])


def test_second_process_is_refused_and_leaves_the_owners_files_untouched(tmp_path):
    n = 300
    owner, pid = _start_owner(tmp_path, n)
    try:
        folder = tmp_path / "edge" / "held"
        before = _files(folder)
        assert any(name.startswith("shard/") for name in before)
        attempts = {
            "count": lambda c: c.count(),
            "get": lambda c: c.get(["d1"]),
            "ensure_index": lambda c: c.ensure_index(IndexSpec("held", metadata=META)),
            "write": lambda c: c.write([Record("x", "x", SparseVector.from_pairs([(1, "t1", 1.0)]))]),
            "drop": lambda c: c.drop(),
        }
        messages = {}
        for what, attempt in attempts.items():
            other = QdrantConnector(mode="edge", path=str(tmp_path / "edge"), collection="held")
            with pytest.raises(ConnectorError) as info:
                attempt(other)
            messages[what] = str(info.value)
            other.close()
        # Reading the stored metadata needs no engine and is allowed.
        meta_reader = QdrantConnector(mode="edge", path=str(tmp_path / "edge"), collection="held")
        assert meta_reader.index_metadata() == META
        meta_reader.close()
        assert _files(folder) == before  # nothing of the owner's was opened, touched or deleted

        owner.stdin.write("go\n")
        owner.stdin.flush()
        out, err = owner.communicate(timeout=120)
    finally:
        if owner.poll() is None:
            owner.kill()
    assert owner.returncode == 0, err[-3000:]  # the owner went on writing and flushing
    assert out.split() == ["done", str(2 * n)]
    for what, message in messages.items():
        assert "\n" not in message, what
        assert str(tmp_path / "edge") in message and f"pid {pid}" in message, (what, message)
    with QdrantConnector(mode="edge", path=str(tmp_path / "edge"), collection="held") as c:
        assert c.count() == 2 * n
        assert sorted(c.get([f"d{i}" for i in range(2 * n)])) == sorted(f"d{i}" for i in range(2 * n))


class _LockAttempts:
    """Spy on portalocker's lock attempts in this process (the real lock still runs): events for
    the first attempt refused because another process holds the lock, and for the lock taken."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import portalocker

        self.refused, self.taken = threading.Event(), threading.Event()
        self.refusals = 0
        real = portalocker.Lock._get_lock

        def attempt(lock, fh):
            try:
                out = real(lock, fh)
            except portalocker.exceptions.AlreadyLocked:
                self.refusals += 1
                self.refused.set()
                raise
            self.taken.set()
            return out

        monkeypatch.setattr(portalocker.Lock, "_get_lock", attempt)


HANG_S = 120  # only a hang runs this long; the waits below end on events


def test_lock_timeout_waits_for_the_owner(tmp_path, monkeypatch):
    n = 100
    owner, _ = _start_owner(tmp_path, n)
    attempts = _LockAttempts(monkeypatch)
    got: dict[str, object] = {}

    def reader() -> None:
        c = QdrantConnector(mode="edge", path=str(tmp_path / "edge"), collection="held", lock_timeout=HANG_S)
        try:
            got["count"] = c.count()
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            got["error"] = exc
        finally:
            c.close()

    try:
        thread = threading.Thread(target=reader)
        thread.start()
        # The reader is waiting on the lock once an attempt of it was refused: an event, not a sleep.
        assert attempts.refused.wait(HANG_S), f"the reader never tried the lock within {HANG_S} s: hung"
        assert not attempts.taken.is_set() and thread.is_alive() and not got  # still waiting, nothing read
        owner.stdin.write("go\n")
        owner.stdin.flush()
        out, err = owner.communicate(timeout=HANG_S)
        thread.join(timeout=HANG_S)
    finally:
        if owner.poll() is None:
            owner.kill()
    assert owner.returncode == 0, err[-3000:]
    assert not thread.is_alive(), f"the reader still waits {HANG_S} s after the owner exited: hung"
    assert "error" not in got, got
    assert attempts.taken.is_set()
    # It saw the owner's writes made after "go", so it read after the owner let go: it waited.
    assert got["count"] == 2 * n


def test_lock_timeout_runs_out_with_a_clear_line(tmp_path, monkeypatch):
    import portalocker

    owner, pid = _start_owner(tmp_path, 20)
    attempts = _LockAttempts(monkeypatch)
    # portalocker's retry loop runs on a virtual clock: each sleep advances it, so the wait is
    # checked as the time it slept (the timeout, whatever the machine's load), not as seconds taken.
    clock = {"now": 0.0, "slept": 0.0}

    def sleep(seconds: float) -> None:
        clock["now"] += seconds
        clock["slept"] += seconds

    virtual = types.SimpleNamespace(perf_counter=lambda: clock["now"], monotonic=lambda: clock["now"], sleep=sleep)
    monkeypatch.setattr(portalocker.utils, "time", virtual)
    try:
        c = QdrantConnector(mode="edge", path=str(tmp_path / "edge"), collection="held", lock_timeout=0.5)
        with pytest.raises(ConnectorError, match=f"pid {pid}.*after waiting 0.5 s"):
            c.count()
        # It retried until the timeout was spent (not refused on the first try) and never got the lock;
        # portalocker caps each sleep at the time left, so the sleeps add up to the timeout (float64 sums).
        assert clock["slept"] == pytest.approx(0.5) and attempts.refusals >= 2 and not attempts.taken.is_set()
        c.close()
    finally:
        owner.kill()
        owner.wait(timeout=60)
    with pytest.raises(ConnectorError, match="lock_timeout"):
        QdrantConnector(mode="edge", path=str(tmp_path / "edge"), collection="held", lock_timeout="soon")


def test_the_lock_goes_with_the_process(tmp_path):
    """A killed owner holds nothing: the OS drops its lock, and the next process opens the folder."""
    owner, _ = _start_owner(tmp_path, 50)
    owner.kill()
    owner.wait(timeout=60)
    with QdrantConnector(mode="edge", path=str(tmp_path / "edge"), collection="held") as c:
        assert c.count() == 50


# --------------------------------------------------------------------------- the CLI, for real

INDEX = "vaswani"
CLI_DOCS = 2000
PAUSE_AT = 500
MARKER = "SB-LOCK-PAUSED"

# The real CLI, with one change: once PAUSE_AT records were written, the next write waits until a
# file appears. The ingest is then mid-run (shard open, half the corpus to go) for as long as the
# test needs to start the other commands; after the file appears it goes on as usual.
_PAUSED_INGEST = r"""
import os, sys, time
from sparsebridge_qdrant import _edge

at, go = int(os.environ["SB_LOCK_PAUSE_AT"]), os.environ["SB_LOCK_GO"]
original = _edge.EdgeBackend.upsert
state = {"written": 0, "paused": False}

def upsert(self, name, layout, points):
    if not state["paused"] and state["written"] >= at:
        state["paused"] = True
        sys.stderr.write("\nMARKER " + str(state["written"]) + "\n")
        sys.stderr.flush()
        while not os.path.exists(go):
            time.sleep(0.1)
    out = original(self, name, layout, points)
    state["written"] += len(out[0])
    return out

_edge.EdgeBackend.upsert = upsert
from sparsebridge.cli import main
sys.argv[0] = "sparsebridge"
main()
""".replace("MARKER", MARKER)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SPARSEBRIDGE_CONFIG", None)
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _cli() -> list[str]:
    return [sys.executable, "-m", "sparsebridge.cli"]


def _config(workdir: Path) -> Path:
    config = workdir / "sparsebridge.toml"
    config.write_text(
        f'[model]\ndevice = "cpu"\n\n[backend]\nconnector = "qdrant"\nmode = "edge"\n'
        f"path = {json.dumps(str(workdir / 'edge'))}\nindex = {json.dumps(INDEX)}\n",
        encoding="utf-8",
    )
    return config


def _corpus_ids(corpus: Path, limit: int) -> list[str]:
    ids = []
    with open(corpus / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                ids.append(str(json.loads(line)["_id"]))
                if len(ids) == limit:
                    break
    return ids


@pytest.mark.slow
def test_search_and_second_ingest_during_a_cli_ingest(data_dir, tmp_path):
    vaswani = data_dir / "vaswani"
    config = _config(tmp_path)
    go = tmp_path / "go"
    env = _env() | {"SB_LOCK_PAUSE_AT": str(PAUSE_AT), "SB_LOCK_GO": str(go)}
    first = subprocess.Popen(
        [sys.executable, "-c", _PAUSED_INGEST, "ingest", str(vaswani), "--limit", str(CLI_DOCS)]
        + ["--config", str(config), "--json", "--quiet"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in first.stderr:
            if line.startswith(MARKER):
                break
        else:
            raise AssertionError(f"the first ingest never reached its pause (exit {first.wait()})")
        others = {
            "search": ["search", "pressure river", "--config", str(config)],
            "ingest": ["ingest", str(vaswani), "--limit", str(CLI_DOCS), "--config", str(config), "--quiet"],
        }
        refused = {}
        for name, args in others.items():
            proc = subprocess.run(
                _cli() + args, cwd=tmp_path, env=_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True
            )
            refused[name] = (proc.returncode, proc.stdout, proc.stderr, first.poll())
        go.touch()
        rest = first.stderr.read()
        out = first.stdout.read()
        rc = first.wait(timeout=900)
    finally:
        go.touch()
        if first.poll() is None:
            first.kill()
    # First what matters most: the running ingest was not disturbed and completed.
    assert rc == 0, rest[-3000:]
    for name, (code, stdout, stderr, first_state) in refused.items():
        assert first_state is None, f"the first ingest ended while {name} ran"
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        assert code != 0, (name, stdout, stderr)
        assert len(lines) == 1 and lines[0].startswith("Error: "), (name, stderr)
        assert str(tmp_path / "edge") in lines[0] and f"pid {first.pid}" in lines[0], lines[0]
    report = json.loads(out)
    assert report["documents"] == report["written"] == CLI_DOCS and report["failed"] == {}
    ids = _corpus_ids(vaswani, CLI_DOCS)
    with QdrantConnector(mode="edge", path=str(tmp_path / "edge"), collection=INDEX) as c:
        assert c.count() == CLI_DOCS
        found = {}
        for start in range(0, len(ids), 1000):
            found.update(c.get(ids[start : start + 1000]))
    assert sorted(found) == sorted(ids)
    # And the search that was refused now runs.
    proc = subprocess.run(
        _cli() + ["search", "pressure river", "--config", str(config), "--json", "--no-explain"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    hits = json.loads(proc.stdout)[0]["hits"]
    assert len(hits) == 10 and {h["id"] for h in hits} <= set(ids)
