"""Engines that encode text with ``sparsebridge serve``: ``sparsebridge register`` and
``[search] query_encoding = "engine"``.

No Elasticsearch or OpenSearch server can run here, so the engines are the engine double
(``lucene_testkit.FakeEngine``, its inference in ``engine_inference.py``), which calls a real
``sparsebridge serve`` process on loopback the way the engines document it: Elasticsearch's
``custom`` service (request template, ``json_parser`` paths), OpenSearch's ML connector
(``request_body``, the default embedding pre-process, the ``response`` map). The clients are the
official ``elasticsearch`` / ``opensearch-py``, the model the packaged SPLADE model, the data the
first documents and queries of cranfield. Every request and answer of a session is validated
against the engines' specifications (``shared/specs``) under the strict rules.

What must hold: the engine-encoded searches (``sparse_vector`` + ``inference_id``,
``neural_sparse`` + ``model_id``, a ``semantic`` query on ``semantic_text``, documents encoded at
ingest by OpenSearch's default pipeline or Elasticsearch's ``semantic_text``) rank exactly as
client-side encoding does, and no model loads in the client that searches.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import read_jsonl
from lucene_testkit import FakeEngine, FakeServer
from serve_support import ServerProcess
from sparsebridge.cli import main
from sparsebridge.config import ConfigError, config_from_dict
from sparsebridge.config.builder import connector_from_config
from sparsebridge.connector import ConnectorError, ModelServer
from sparsebridge.index.engine_search import engine_search
from sparsebridge.index.pipeline import Pipeline
from sparsebridge.vectors.cache import EncodeCache
from spec_validation import elasticsearch_validator, opensearch_validator

ROOT = Path(__file__).resolve().parent.parent
N_DOCS = 200
N_QUERIES = 20
TOP_K = 10
LUCENE_RTOL = 2.0**-7  # Lucene keeps 9 significant bits of a stored weight
HEAVY = ("torch", "transformers", "sparsebridge.encoders.encoder", "sparsebridge.encoders.modules")
ENGINES = {"elasticsearch": "9.1.0", "opensearch": "3.3.0"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``sparsebridge serve`` with no config: the packaged model, as the Python API loads it."""
    with ServerProcess(tmp_path_factory.mktemp("serve")) as srv:
        yield srv


@pytest.fixture(scope="module")
def docs(data_dir):
    return [{"_id": d["_id"], "text": d["text"]} for d in read_jsonl(data_dir / "cranfield" / "corpus.jsonl", N_DOCS)]


@pytest.fixture(scope="module")
def queries(data_dir):
    return [q["text"] for q in read_jsonl(data_dir / "cranfield" / "queries.jsonl", N_QUERIES)]


def config_for(engine: str, url: str, index: str, **search):
    return config_from_dict(
        {
            "backend": {"connector": engine, "url": url, "index": index, "max_retries": 0},
            "ingest": {"id_field": "_id", "text_fields": ["text"]},
            "search": {"top_k": TOP_K, **search},
        },
        f"{engine}.toml",
    )


def ranking(results) -> list[list[tuple[str, float]]]:
    return [[(h.id, h.score) for h in r.hits] for r in results]


def same_ranking(got: list[list[tuple[str, float]]], want: list[list[tuple[str, float]]], rel: float = 1e-5) -> None:
    """The same hits in the same order; scores equal up to float32 noise (the server encodes each
    query in a batch of its own, the client all of them in one, and padding moves the last bits).
    Documents encoded by the engine at ingest: up to Lucene's 9-bit weights (``rel=2**-7``), as
    float noise can cross a truncation step of a stored weight."""
    assert [[i for i, _ in r] for r in got] == [[i for i, _ in r] for r in want]
    for g, w in zip(got, want):
        assert [s for _, s in g] == pytest.approx([s for _, s in w], rel=rel)


def check_specs(engine: FakeEngine) -> set[str]:
    """Every request and answer of the session against the engine's specification; the APIs seen."""
    validator = elasticsearch_validator() if engine.is_es else opensearch_validator()
    seen = set()
    for req in engine.requests:
        seen.add(validator.validate_request(req.method, req.path, req.body))
        validator.validate_response(req.method, req.path, req.status, req.response)
    return seen


@pytest.fixture(scope="module")
def sessions(served, encoder, docs, queries, tmp_path_factory):
    """Per engine: the double, its server, the client-side ranking of the queries, and the
    ranking with the engine encoding them after ``sparsebridge register`` (run through the CLI)."""
    out = {}
    cache = EncodeCache(tmp_path_factory.mktemp("cache") / "cache.sqlite3")  # the docs are encoded once
    for name, version in ENGINES.items():
        engine = FakeEngine(flavor=name, version=version)
        srv = FakeServer(engine).__enter__()
        config = config_for(name, srv.url, "cran")
        connector = connector_from_config(config)
        settings = dict(ingest_settings=config.ingest, search_settings=config.search, show_progress=False)
        pipe = Pipeline(encoder, connector, "cran", cache=cache, **settings)
        report = pipe.ingest(docs)
        assert report.written == len(docs) and not report.failed
        client = ranking(pipe.search(queries, explain=False))
        connector.close()  # not pipe.close(): the cache serves the next engine
        folder = Path(served.cwd)
        (folder / f"{name}.toml").write_text(
            f'[backend]\nconnector = "{name}"\nurl = "{srv.url}"\nindex = "cran"\nmax_retries = 0\n'
        )
        done = CliRunner().invoke(
            main, ["register", "--server-url", served.url, "--config", str(folder / f"{name}.toml"), "--json"]
        )
        assert done.exit_code == 0, done.output
        created = json.loads(done.output)
        engine_config = config_for(name, srv.url, "cran", query_encoding="engine")
        with connector_from_config(engine_config) as conn:
            by_engine = ranking(engine_search(engine_config, conn, queries))
        out[name] = {"engine": engine, "server": srv, "client": client, "by_engine": by_engine, "created": created}
    cache.close()
    yield out
    for s in out.values():
        s["server"].__exit__(None, None, None)


@pytest.mark.parametrize("name", list(ENGINES))
def test_engine_encoded_queries_rank_as_client_side_encoding(sessions, served, name, queries):
    s = sessions[name]
    assert len(s["client"]) == len(queries) and all(len(r) == TOP_K for r in s["client"])
    same_ranking(s["by_engine"], s["client"])
    calls = [c for c in s["engine"].model_calls if "/query/" in c["url"]]
    route = "elasticsearch/sparse_embedding" if name == "elasticsearch" else "opensearch/sparse_encoding"
    assert {c["url"] for c in calls} == {f"{served.url}/query/{route}"}
    asked = [t for c in calls for t in json.loads(c["body"])["input" if name == "elasticsearch" else "texts"]]
    assert set(queries) <= set(asked)  # each query text went to the server, encoded there


def test_register_creates_what_the_engines_document(sessions):
    es, os_ = sessions["elasticsearch"], sessions["opensearch"]
    assert es["created"]["query"] == "cran-sparsebridge-query"
    assert es["created"]["document"] == "cran-sparsebridge-document"
    meta = es["engine"].indices["cran"]["mappings"]["_meta"]
    assert meta["engine_encoding"]["query"] == "cran-sparsebridge-query"
    assert meta["vocab_fingerprint"]  # the rest of _meta survives the update
    ml = os_["engine"]._state()
    model = ml["models"][os_["created"]["query"]]
    assert model["deployed"] and model["function_name"] == "remote"
    assert os_["engine"].indices["cran"]["settings"]["index"]["default_pipeline"] == "cran-sparsebridge-ingest"
    pipeline = ml["pipelines"]["cran-sparsebridge-ingest"]
    assert pipeline["processors"] == [
        {"sparse_encoding": {"model_id": os_["created"]["document"], "field_map": {"text": "sparse"}, "batch_size": 16}}
    ]
    polled = os_["engine"].calls(r"^/_plugins/_ml/tasks/", "GET")
    assert len(polled) >= 4  # each deploy was polled until its task completed


def test_documents_encoded_by_the_engine_at_ingest_rank_as_client_side(sessions, served, docs, queries):
    """Elasticsearch ``semantic_text`` (an index made by ``register --semantic-index``) and an
    OpenSearch index whose default pipeline encodes: documents written as text only."""
    from elasticsearch import Elasticsearch, helpers
    from opensearchpy import OpenSearch
    from opensearchpy import helpers as os_helpers

    es = sessions["elasticsearch"]
    folder = Path(served.cwd)
    done = CliRunner().invoke(
        main,
        ["register", "--server-url", served.url, "--semantic-index", "cran-semantic"]
        + ["--config", str(folder / "elasticsearch.toml")],
    )
    assert done.exit_code == 0, done.output
    with Elasticsearch(es["server"].url, request_timeout=300) as client:  # ingest encodes each document
        rows = [{"_index": "cran-semantic", "_id": d["_id"], "text": d["text"], "sparse": d["text"]} for d in docs]
        assert helpers.bulk(client, rows, refresh=True)[0] == len(docs)
    config = config_for("elasticsearch", es["server"].url, "cran-semantic", query_encoding="engine")
    with connector_from_config(config) as conn:
        same_ranking(ranking(engine_search(config, conn, queries)), es["client"], rel=LUCENE_RTOL)
    assert any('"semantic"' in r.body.decode() for r in es["engine"].calls(r"_msearch$"))

    os_ = sessions["opensearch"]
    engine = os_["engine"]
    # An index like "cran" (same mapping and metadata), registered, then fed texts only.
    engine.add_index("cran-text", json.loads(json.dumps(engine.indices["cran"]["mappings"])))
    (folder / "opensearch-text.toml").write_text(
        f'[backend]\nconnector = "opensearch"\nurl = "{os_["server"].url}"\nindex = "cran-text"\n'
    )
    done = CliRunner().invoke(
        main, ["register", "--server-url", served.url, "--config", str(folder / "opensearch-text.toml")]
    )
    assert done.exit_code == 0, done.output
    before = len(engine.model_calls)
    with OpenSearch(os_["server"].url, timeout=300) as client:  # the pipeline encodes each document
        rows = [{"_index": "cran-text", "_id": d["_id"], "text": d["text"]} for d in docs]
        assert os_helpers.bulk(client, rows)[0] == len(docs)
    ingested = [
        t for c in engine.model_calls[before:] if "/document/" in c["url"] for t in json.loads(c["body"])["texts"]
    ]
    assert sorted(ingested) == sorted(d["text"] for d in docs)  # every document encoded by the server
    config = config_for("opensearch", os_["server"].url, "cran-text", query_encoding="engine")
    with connector_from_config(config) as conn:
        same_ranking(ranking(engine_search(config, conn, queries)), os_["client"], rel=LUCENE_RTOL)


def test_every_request_and_answer_matches_the_specs(sessions):
    seen = {name: check_specs(s["engine"]) for name, s in sessions.items()}
    assert {"request:inference.put_custom", "msearch", "request:indices.create"} <= seen["elasticsearch"]
    assert {
        "request:ml/ml.create_connector",
        "request:ml/ml.register_model",
        "request:ingest/ingest.put_pipeline",
        "request:indices/indices.put_settings",
        "msearch",
    } <= seen["opensearch"]


PROBE = (
    "import json, sys\n"
    "from sparsebridge.cli import main\n"
    "code = 0\n"
    "try:\n"
    "    main(sys.argv[1:], standalone_mode=False)\n"
    "except SystemExit as exc:\n"
    "    code = exc.code or 0\n"
    f"print('LOADED', json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    "sys.exit(code)\n"
)


def test_search_with_engine_encoding_loads_no_model(sessions, tmp_path, queries):
    """``sparsebridge search`` in a fresh interpreter: the hits are the client-side ones, and
    neither torch nor transformers nor an encoder module was imported."""
    s = sessions["elasticsearch"]
    cfg = tmp_path / "engine.toml"
    cfg.write_text(
        f'[backend]\nconnector = "elasticsearch"\nurl = "{s["server"].url}"\nindex = "cran"\n'
        f'[search]\ntop_k = {TOP_K}\nquery_encoding = "engine"\n'
    )
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "search", queries[0], "--config", str(cfg), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={"PYTHONPATH": f"{ROOT / 'core'}:{ROOT / 'connectors'}", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out, _, probe = done.stdout.rpartition("LOADED ")
    assert json.loads(probe) == []
    (result,) = json.loads(out)
    same_ranking([[(h["id"], h["score"]) for h in result["hits"]]], s["client"][:1])


def test_qdrant_has_no_such_facility(tmp_path):
    cfg = tmp_path / "q.toml"
    cfg.write_text(f'[backend]\nconnector = "qdrant"\nmode = "edge"\npath = "{tmp_path / "data"}"\nindex = "docs"\n')
    done = CliRunner().invoke(main, ["register", "--config", str(cfg)])
    assert done.exit_code == 1
    assert done.output.strip().splitlines() == [
        "Error: the qdrant backend has no facility to call a model server; register works with elasticsearch and "
        "opensearch"
    ]
    cfg.write_text(cfg.read_text() + '[search]\nquery_encoding = "engine"\n')
    done = CliRunner().invoke(main, ["search", "anything", "--config", str(cfg)])
    assert done.exit_code == 1
    assert "the qdrant backend cannot encode query text in the engine" in done.output
    assert len(done.output.strip().splitlines()) == 1


def test_query_encoding_config_is_checked():
    assert config_from_dict({}, "t.toml").search.query_encoding == "client"
    assert config_from_dict({"search": {"query_encoding": "engine"}}, "t.toml").search.query_encoding == "engine"
    with pytest.raises(ConfigError, match=r"t.toml: \[search\] query_encoding .*'client', 'engine'"):
        config_from_dict({"search": {"query_encoding": "server"}}, "t.toml")


def test_search_before_register_says_what_to_do(sessions):
    s = sessions["elasticsearch"]
    s["engine"].add_index("fresh", {"properties": {"sparse": {"type": "sparse_vector"}}, "_meta": {"model": "m"}})
    config = config_for("elasticsearch", s["server"].url, "fresh", query_encoding="engine")
    with connector_from_config(config) as conn, pytest.raises(ConfigError, match="run `sparsebridge register`"):
        engine_search(config, conn, ["lift"])


def test_register_refuses_an_elasticsearch_without_the_custom_service(served):
    """9.0 has no custom inference service (it came with 8.19 and 9.1): one clear line, nothing made."""
    engine = FakeEngine(flavor="elasticsearch", version="9.0.3")
    engine.add_index("cran", {"properties": {"sparse": {"type": "sparse_vector"}}, "_meta": {"model": "m"}})
    with FakeServer(engine) as srv:
        config = config_for("elasticsearch", srv.url, "cran")
        with connector_from_config(config) as conn, pytest.raises(ConnectorError, match="no custom inference service"):
            conn.register_model_server(ModelServer(served.url))
    assert not engine.calls(r"^/_inference")
