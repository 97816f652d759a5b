"""Ray Data: encode and ingest on a local Ray (2 CPUs), checked against the in-process path.

Real Ray (local mode), real packaged model, real Qdrant Edge engine, cranfield. The reference is
always sparsebridge's own in-process path on the same texts: ``SparseEncoder.encode_document`` for
``encode_dataset``, an in-process ``sparsebridge ingest`` for ``--engine ray``; the Elasticsearch
parallel-writer path runs against the loopback engine double (no Elasticsearch server can run here).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from tolerances import FLOAT32_ATOL, FLOAT32_RTOL

ray = pytest.importorskip("ray")
pytest.importorskip("qdrant_edge")

INDEX = "cranfield"
# Enough of cranfield for a run that a killed worker interrupts (about 20 s of encoding per run on
# this project's 2-core machine); the CLI accepts the whole collection the same way.
DOCS = 800
HANG_S = 300  # only a hang runs this long; the kill waits for an event (the held actor's file)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SPARSEBRIDGE_CONFIG", None)
    env["HF_HUB_OFFLINE"] = "1"
    return env


def _config(workdir: Path) -> Path:
    path = workdir / "sparsebridge.toml"
    path.write_text(
        f'[model]\ndevice = "cpu"\n\n[backend]\nconnector = "qdrant"\nmode = "edge"\n'
        f"path = {json.dumps(str(workdir / 'edge'))}\nindex = {json.dumps(INDEX)}\n",
        encoding="utf-8",
    )
    return path


def _cli(*args: str, cwd: Path, timeout: float = 1800) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "sparsebridge.cli", *args, "--json", "--quiet"],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    # Exit 1 with the report is the CLI's answer when documents failed (cranfield has empty ones).
    assert proc.returncode == 0 or "documents failed" in proc.stderr, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _index(workdir: Path) -> dict[str, tuple[dict[int, float], dict]]:
    """Every stored record of the Edge index, read back with its vectors through the connector's
    export: id -> (sparse vector as {index: weight}, payload)."""
    from sparsebridge.defaults import splade_model_path
    from sparsebridge.vocabulary import vocabulary
    from sparsebridge_qdrant import QdrantConnector
    from transformers import AutoTokenizer

    tokens = vocabulary(AutoTokenizer.from_pretrained(str(splade_model_path())))
    out = {}
    with QdrantConnector(mode="edge", path=str(workdir / "edge"), index=INDEX) as conn:
        count = conn.count()
        for batch in conn.export(tokens):
            for rec in batch:
                out[rec.id] = (dict(zip(rec.sparse.indices, rec.sparse.values)), dict(rec.payload))
    assert count == len(out), f"count {count} but {len(out)} records read back"
    return out


def cranfield_corpus() -> Path:
    from sparsebridge.corpus import beir_corpus_path

    root = Path(os.environ.get("SPARSEBRIDGE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    return beir_corpus_path(root / "data" / "cranfield")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def in_process(tmp_path_factory, data_dir):
    """The reference: an in-process ``sparsebridge ingest`` of all of cranfield."""
    work = tmp_path_factory.mktemp("in_process")
    report = _cli("ingest", str(data_dir / "cranfield"), "--limit", str(DOCS), "--config", str(_config(work)), cwd=work)
    return work, report, _index(work)


def _same_index(got: dict, want: dict) -> list[str]:
    problems = []
    if set(got) != set(want):
        problems.append(f"ids differ: {len(set(got) ^ set(want))} ids in one index only")
    for doc_id in sorted(set(got) & set(want)):
        (gv, gp), (wv, wp) = got[doc_id], want[doc_id]
        if set(gv) != set(wv):
            problems.append(f"{doc_id}: active dimensions differ")
        # Ray batches texts differently from the in-process run, so each weight is summed in another
        # order: float32 noise, within PyTorch's documented float32 tolerances (tests/tolerances.py).
        elif any(abs(gv[i] - wv[i]) > FLOAT32_ATOL + FLOAT32_RTOL * abs(wv[i]) for i in wv):
            problems.append(f"{doc_id}: weights differ by {max(abs(gv[i] - wv[i]) for i in wv):.2e}")
        if gp != wp:
            problems.append(f"{doc_id}: payloads differ")
    return problems


def _compare(rows: dict, docs: list[dict], texts: list[str], want) -> float:
    assert set(rows) == {d["_id"] for d in docs}
    worst = 0.0
    for k, doc in enumerate(docs):
        row = rows[doc["_id"]]
        assert row["error"] is None
        assert row["text"] == texts[k]
        nonzero = want[k].nonzero().flatten().tolist()
        assert row["indices"] == nonzero, doc["_id"]
        worst = max(worst, max(abs(v - float(want[k][i])) for i, v in zip(row["indices"], row["values"])))
    return worst


def test_encode_dataset_equals_encode_document(local_ray, encoder, data_dir):
    from sparsebridge.corpus import read_jsonl
    from sparsebridge.ray import encode_dataset, iter_rows

    docs = [d for d in read_jsonl(data_dir / "cranfield" / "corpus.jsonl")][:120]
    texts = [(d.get("title", "") + " " + d["text"]).strip() for d in docs]
    ds = ray.data.from_items([{"_id": d["_id"], "text": t} for d, t in zip(docs, texts)])

    # Texts encoded one at a time on both sides: the same arithmetic, so the same floats.
    rows = {r["id"]: r for r in iter_rows(encode_dataset(ds, "packaged:splade", batch_size=1, concurrency=2))}
    want = encoder.encode_document(texts, batch_size=1, convert_to_sparse_tensor=False)
    assert _compare(rows, docs, texts, want) <= 1e-6

    # Batched as Ray batches them (other neighbours, other padding): float32 summation-order noise only.
    rows = {r["id"]: r for r in iter_rows(encode_dataset(ds, "packaged:splade", batch_size=16, concurrency=2))}
    want = encoder.encode_document(texts, batch_size=16, convert_to_sparse_tensor=False)
    assert _compare(rows, docs, texts, want) <= 5e-5


def test_encode_dataset_reports_empty_texts_and_refuses_a_missing_column(local_ray):
    from sparsebridge.ray import encode_dataset, iter_rows

    ds = ray.data.from_items([{"_id": "a", "text": "wing flutter"}, {"_id": "b", "text": "   "}])
    rows = {r["id"]: r for r in iter_rows(encode_dataset(ds, "packaged:splade"))}
    assert rows["a"]["error"] is None and rows["a"]["indices"]
    assert rows["b"]["error"] == "no text: the text column is empty" and rows["b"]["indices"] == []

    with pytest.raises(Exception, match="no column 'body'"):
        encode_dataset(ds, "packaged:splade", text_column="body").materialize()


def test_read_corpus_keeps_line_numbers_and_reports_bad_lines(local_ray, tmp_path):
    from sparsebridge.ray import read_corpus

    path = tmp_path / "docs.jsonl"
    path.write_bytes(b'{"_id": "1", "text": "a"}\n\n{oops\n' + b'{"_id": "4", "text": "\xff"}\n' * 5)
    rows = sorted(read_corpus(path, lines_per_task=2).take_all(), key=lambda r: r["n"])
    assert [r["n"] for r in rows] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert rows[2]["ref"] == "docs.jsonl:3" and rows[2]["document"] == b"{oops\n"
    assert len(read_corpus(path, limit=3).take_all()) == 3


def test_cli_ray_ingest_gives_the_in_process_index(in_process, tmp_path, data_dir):
    ref_dir, ref_report, want = in_process
    report = _cli(
        "ingest", str(data_dir / "cranfield"), "--limit", str(DOCS), "--engine", "ray", "--workers", "2",
        "--config", str(_config(tmp_path)), cwd=tmp_path,
    )  # fmt: skip
    for key in ("documents", "records", "written", "failed"):
        assert report[key] == ref_report[key], key
    assert _same_index(_index(tmp_path), want) == []

    # The top 10 of every cranfield query, through the ordinary search path, is the same.
    queries = [json.loads(line)["text"] for line in (data_dir / "cranfield" / "queries.jsonl").open()]
    tops = []
    for work in (ref_dir, tmp_path):
        from sparsebridge.pipeline import Pipeline
        from sparsebridge_qdrant import QdrantConnector

        conn = QdrantConnector(mode="edge", path=str(work / "edge"), index=INDEX)
        with Pipeline.from_config(_load(work), connector=conn, show_progress=False) as pipe:
            tops.append([[(h.id, h.score) for h in r.hits] for r in pipe.search(queries, top_k=10)])
    # Same ids in the same order; scores equal up to float32 noise (the vectors above agree to 1e-6).
    assert [[i for i, _ in q] for q in tops[0]] == [[i for i, _ in q] for q in tops[1]]
    worst = max(abs(a - b) / max(1.0, abs(b)) for qa, qb in zip(*tops) for (_, a), (_, b) in zip(qa, qb))
    assert worst <= 1e-4, worst


def _load(work: Path):
    from sparsebridge.config import load_config

    return load_config(work / "sparsebridge.toml")


@pytest.mark.slow
def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(local_ray, in_process, tmp_path, data_dir):
    import ray_gate
    from sparsebridge.ray import ingest_with_ray

    _, ref_report, want = in_process
    config = _load_written(tmp_path)
    gate = tmp_path / "gate"
    gate.mkdir()
    # A Ray session whose workers run the gate hook: the first encode actor to finish a batch holds
    # it and says so (a file with its pid). The kill waits for that event, not for CPU time.
    ray.shutdown()
    ray.cloudpickle.register_pickle_by_value(ray_gate)  # the workers cannot import tests/
    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
        runtime_env={
            "env_vars": {ray_gate.FOLDER_VAR: str(gate)},
            "worker_process_setup_hook": ray_gate.hold_first_encode_batch,
        },
    )  # fmt: skip
    killed: list[int] = []

    def kill_the_held_worker() -> None:
        pid = ray_gate.wait_held(gate, HANG_S)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    try:
        killer = threading.Thread(target=kill_the_held_worker, daemon=True)
        killer.start()
        report = ingest_with_ray(config, data_dir / "cranfield", workers=2, limit=DOCS, show_progress=False)
        killer.join(HANG_S)
    finally:
        ray.shutdown()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")  # as local_ray

    assert killed, f"no encode actor held a batch within {HANG_S} s: hung (or the gate hook never ran)"
    assert report.written == ref_report["written"] and report.failed == ref_report["failed"]
    assert _same_index(_index(tmp_path), want) == []


def _load_written(work: Path):
    _config(work)
    return _load(work)


def test_parallel_writers_upsert_into_a_server_backend(local_ray, encoder, tmp_path, data_dir):
    """Elasticsearch through the loopback engine double: writes come from Ray actors, in parallel."""
    sys.path.insert(0, str(Path(__file__).parent))
    from lucene_testkit import FakeEngine, FakeServer
    from sparsebridge.config import config_from_dict
    from sparsebridge.ray import ingest_with_ray

    engine = FakeEngine(flavor="elasticsearch", version="9.1.0")
    with FakeServer(engine) as server:
        config = config_from_dict(
            {"model": {"device": "cpu"}, "backend": {"connector": "elasticsearch", "url": server.url, "index": "docs"}}
        )
        first = ingest_with_ray(config, data_dir / "cranfield", workers=2, limit=120, show_progress=False)
        again = ingest_with_ray(config, data_dir / "cranfield", workers=2, limit=120, show_progress=False)
        lines = [line for call in engine.calls(r"_bulk") for line in call.lines()]
        bulk_sources = [line for line in lines if "index" not in line and "delete" not in line]
    assert first.written == again.written == 120 and not first.failed
    assert len(engine.indices["docs"]["docs"]) == 120  # upserts: the second run replaced, never added
    assert len(bulk_sources) == 240


def test_backend_notes_reach_the_report_once(local_ray, tmp_path, data_dir):
    """OpenSearch SEISMIC through the loopback engine double, written from Ray actors: a ceiling below
    the packaged model's weights clips some in every batch; the report says so once, as in-process."""
    sys.path.insert(0, str(Path(__file__).parent))
    from lucene_testkit import FakeEngine, FakeServer
    from sparsebridge.config import config_from_dict
    from sparsebridge.ray import ingest_with_ray

    engine = FakeEngine(flavor="opensearch", version="3.3.0")
    with FakeServer(engine) as server:
        backend = {"connector": "opensearch", "url": server.url, "index": "docs", "sparse_field_type": "sparse_vector"}
        backend["index_options"] = {"quantization_ceiling_ingest": 0.5}
        config = config_from_dict({"model": {"device": "cpu", "batch_size": 8}, "backend": backend})
        report = ingest_with_ray(config, data_dir / "cranfield", workers=2, limit=40, show_progress=False)
    assert report.written == 40 and not report.failed
    assert report.notes == [
        "weights above the index's SEISMIC quantization_ceiling_ingest 0.5 were clipped to it by OpenSearch; "
        "re-create the index with a higher ceiling to keep them"
    ]


@pytest.mark.parametrize("backend", ["edge", "elasticsearch"])
def test_truncated_documents_are_counted_as_in_process(local_ray, tmp_path, backend):
    """A document longer than max_seq_length is cut by the encoder: the Ray report counts it, as the
    in-process report does (driver-written Edge, and parallel writers into the ES engine double)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from lucene_testkit import FakeEngine, FakeServer
    from sparsebridge.config import config_from_dict
    from sparsebridge.pipeline import Pipeline
    from sparsebridge.ray import ingest_with_ray

    corpus = tmp_path / "docs.jsonl"
    long_text = " ".join(f"wing{i} lift flutter" for i in range(400))  # well over 512 tokens
    rows = [{"id": "long", "text": long_text}] + [{"id": f"d{i}", "text": f"short text {i}"} for i in range(5)]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    engine = FakeEngine(flavor="elasticsearch", version="9.1.0")
    with FakeServer(engine) as server:
        reports = []
        for name in ("ray", "local"):
            if backend == "edge":
                section = {"connector": "qdrant", "mode": "edge", "path": str(tmp_path / f"edge-{name}")}
            else:
                section = {"connector": "elasticsearch", "url": server.url, "index": f"docs-{name}"}
            config = config_from_dict({"model": {"device": "cpu"}, "backend": section})
            if name == "ray":
                reports.append(ingest_with_ray(config, corpus, workers=2, show_progress=False))
            else:
                pipe = Pipeline.from_config(config, show_progress=False)
                try:
                    reports.append(pipe.ingest(str(corpus)))
                finally:
                    pipe.close()
    ray_report, local_report = reports
    assert local_report.truncated == 1 and local_report.max_seq_length == 512
    assert (ray_report.truncated, ray_report.max_seq_length) == (1, 512)
    assert ray_report.written == local_report.written == 6
