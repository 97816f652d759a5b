"""Qdrant Edge storage options (issue 22): memory-mapped sparse index and payloads, and the writer's
optimizer that turns the in-RAM appendable segment into an immutable, memory-mapped one.

Against the real Edge engine; the segment types are read from the engine's own ``segment.json``
files, the rankings are checked against brute-force dot products computed here.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

pytest.importorskip("qdrant_edge")

from sparsebridge.connector import IndexSpec, Query, Record, SearchOptions, SparseVector  # noqa: E402
from sparsebridge.plugins import create_connector  # noqa: E402
from sparsebridge_qdrant import QdrantOptionError  # noqa: E402

VOCAB = 2000
META = {"model": "test/splade", "vocab_size": VOCAB, "vocab_fingerprint": "fp-1"}


def records(n: int, seed: int = 0) -> list[Record]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ids = rng.sample(range(VOCAB), rng.randint(20, 60))
        sparse = SparseVector.from_pairs((t, f"tok{t}", rng.uniform(0.05, 3.0)) for t in ids)
        out.append(Record(id=f"doc-{i}", text=f"document {i} " + "x" * 200, sparse=sparse))
    return out


def expected_top(recs: list[Record], q: SparseVector, k: int) -> list[tuple[str, float]]:
    qd = q.as_index_dict()
    scores = {r.id: sum(v * qd.get(i, 0.0) for i, v in r.sparse.as_index_dict().items()) for r in recs}
    return sorted(((rid, s) for rid, s in scores.items() if s > 0), key=lambda x: (-x[1], x[0]))[:k]


def segment_kinds(edge_path: Path, collection: str) -> list[str]:
    """The sparse index type of each segment, as the engine wrote it."""
    kinds = []
    for seg in sorted((edge_path / collection / "shard" / "segments").iterdir()):
        config = json.loads((seg / "segment.json").read_text())["config"]
        kinds += [v["index"]["index_type"] for v in config["sparse_vector_data"].values()]
    return kinds


def write_all(connector, recs: list[Record], batch: int = 500, pause: float = 0.0) -> None:
    connector.ensure_index(IndexSpec(name="c", metadata=META))
    for start in range(0, len(recs), batch):
        res = connector.write(recs[start : start + batch])
        assert not res.failed and len(res.written) == len(recs[start : start + batch])
        time.sleep(pause)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sparse_on_disk": "yes"}, "qdrant option sparse_on_disk must be true or false, got 'yes'"),
        ({"payload_on_disk": 1}, "qdrant option payload_on_disk must be true or false, got 1"),
        ({"optimize_mb": -1}, "qdrant option optimize_mb must be a number of megabytes, 0 or more"),
        ({"optimize_mb": "64"}, "qdrant option optimize_mb must be a number of megabytes, 0 or more"),
        ({"optimize_mb": float("inf")}, "qdrant option optimize_mb must be a number of megabytes, 0 or more"),
        ({"segment_number": 0}, "qdrant option segment_number must be a whole number >= 1, got 0"),
        ({"segment_number": True}, "qdrant option segment_number must be a whole number >= 1, got True"),
        ({"max_segment_mb": 0}, "qdrant option max_segment_mb must be a whole number of megabytes >= 1, got 0"),
        ({"max_segment_mb": 1.5}, "qdrant option max_segment_mb must be a whole number of megabytes >= 1"),
    ],
)
def test_a_bad_storage_option_is_refused_in_one_line_naming_it(tmp_path, options, message):
    with pytest.raises(QdrantOptionError) as err:
        create_connector("qdrant", path=str(tmp_path), **options)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_storage_options_belong_to_edge_mode(tmp_path):
    with pytest.raises(
        QdrantOptionError, match=r"'optimize_mb' is not known .* mode='local' \(it applies to mode='edge'\)"
    ):
        create_connector("qdrant", mode="local", optimize_mb=8)


def test_a_writer_leaves_memory_mapped_segments_with_the_same_rankings(tmp_path):
    recs = records(3000)
    queries = [r.sparse for r in records(8, seed=7)]
    mapped = create_connector("qdrant", path=str(tmp_path / "mapped"), optimize_mb=0.25)
    in_ram = create_connector("qdrant", path=str(tmp_path / "ram"), optimize_mb=0)
    for connector in (mapped, in_ram):
        write_all(connector, recs)
        connector.close()
    # Edge alone never optimizes: every point stays in the appendable, in-RAM segment.
    assert set(segment_kinds(tmp_path / "ram", "c")) == {"MutableRam"}
    kinds = segment_kinds(tmp_path / "mapped", "c")
    assert "Mmap" in kinds, kinds
    config = json.loads((tmp_path / "mapped" / "c" / "shard" / "edge_config.json").read_text())
    assert config["sparse_vectors"]["sparse"]["on_disk"] is True
    assert config["optimizers"]["default_segment_number"] == 64
    for path in ("mapped", "ram"):
        reader = create_connector("qdrant", path=str(tmp_path / path), collection="c")
        assert reader.count() == len(recs)
        for q in queries:
            hits = reader.search([Query(sparse=q)], SearchOptions(top_k=10))[0].hits
            want = expected_top(recs, q, 10)
            assert [h.id for h in hits] == [rid for rid, _ in want], path
            assert [h.score for h in hits] == pytest.approx([s for _, s in want], rel=1e-5)
        reader.close()


def test_sparse_on_disk_false_keeps_the_optimized_index_in_ram(tmp_path):
    connector = create_connector("qdrant", path=str(tmp_path), optimize_mb=0.25, sparse_on_disk=False)
    write_all(connector, records(1500))
    connector.close()
    kinds = segment_kinds(tmp_path, "c")
    assert "ImmutableRam" in kinds and "Mmap" not in kinds, kinds


def test_the_optimizer_runs_while_the_writer_is_still_writing(tmp_path, monkeypatch):
    import sparsebridge_qdrant._edge as edge

    monkeypatch.setattr(edge, "_OPTIMIZE_CHECK_S", 0.05)
    connector = create_connector("qdrant", path=str(tmp_path), optimize_mb=0.25)
    recs = records(3000)
    write_all(connector, recs, batch=300, pause=0.3)
    # Still open: what is optimized by now was optimized during the writes, not by close().
    kinds = segment_kinds(tmp_path, "c")
    assert "Mmap" in kinds, kinds
    assert connector.count() == len(recs)
    connector.close()


_KILLED_WRITER = """
import random, sys
import sparsebridge_qdrant._edge as edge
from sparsebridge.connector import IndexSpec, Record, SparseVector
from sparsebridge.plugins import create_connector

edge._OPTIMIZE_CHECK_S = 0.02
c = create_connector("qdrant", path=sys.argv[1], optimize_mb=1)
c.ensure_index(IndexSpec(name="c", metadata={"model": "test/splade", "vocab_size": 2000, "vocab_fingerprint": "fp-1"}))
rng = random.Random(0)
for b in range(1000):
    recs = [
        Record(id=f"d{b}-{i}", text="x" * 300,
               sparse=SparseVector.from_pairs((t, f"t{t}", rng.uniform(0.1, 2)) for t in rng.sample(range(2000), 60)))
        for i in range(300)
    ]
    res = c.write(recs)
    assert len(res.written) == 300 and not res.failed
    print("acked", b, flush=True)
"""


@pytest.mark.parametrize("kill_after", [2.5, 4.0, 6.0])
def test_a_writer_killed_while_it_optimizes_loses_nothing_acknowledged(tmp_path, kill_after):
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    time.sleep(kill_after)
    proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate()
    acked = [int(line.split()[1]) for line in out.splitlines() if line.startswith("acked")]
    assert acked, f"the writer acknowledged nothing in {kill_after} s: {err[-2000:]}"
    if kill_after >= 6.0:  # by then the writer has optimized (about every 4 batches): the kill hit that path
        assert "Mmap" in segment_kinds(tmp_path, "c")
    reader = create_connector("qdrant", path=str(tmp_path), collection="c")
    assert reader.count() >= (acked[-1] + 1) * 300
    wanted = [f"d{b}-{i}" for b in range(acked[-1] + 1) for i in (0, 299)]
    assert set(reader.get(wanted)) == set(wanted)
    reader.close()
