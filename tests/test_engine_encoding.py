"""Engines that encode text with ``sparsebridge serve``: ``sparsebridge register`` and
``[search] query_encoding = "engine"``.

No Elasticsearch or OpenSearch server can run here, so the engines are the engine double
(``lucene_testkit.FakeEngine``, its inference in ``engine_inference.py``), which calls a real
``sparsebridge serve`` process on loopback the way the engines document it: Elasticsearch's
``custom`` service (request template, ``json_parser`` paths, ``secret_parameters`` in the headers),
OpenSearch's ML connector (``request_body``, the default embedding pre-process, the ``response``
map, ``credential`` in the headers). The clients are the official ``elasticsearch`` /
``opensearch-py``, the model the packaged SPLADE model (and the packaged MiniLM for the dense side
of hybrid search), the data the first documents and queries of cranfield. Every request and answer
of a session is validated against the engines' specifications (``shared/specs``) under the strict
rules. One serve process, with a bearer API key, serves the whole module.

What must hold: the engine-encoded searches (``sparse_vector`` + ``inference_id``,
``neural_sparse`` + ``model_id``, a ``semantic`` query on ``semantic_text``, documents encoded at
ingest by OpenSearch's default pipeline or Elasticsearch's ``semantic_text``, hybrid search with
the dense side encoded on the client) rank exactly as client-side encoding does, no model loads in
the client that searches, the API key reaches the server as a bearer token, and a server whose
model is not the index's is refused.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from conftest import read_jsonl
from lucene_testkit import FakeEngine, FakeServer
from serve_support import ServerProcess
from sparsebridge.cli import main
from sparsebridge.config import ConfigError, config_from_dict
from sparsebridge.config.builder import build_dense_encoder, connector_from_config
from sparsebridge.connector import ConnectorError, ModelServer
from sparsebridge.errors import ModelMismatchError
from sparsebridge.index.engine_search import engine_search
from sparsebridge.index.model_server import forget_server_info
from sparsebridge.index.pipeline import Pipeline
from sparsebridge.vectors.cache import EncodeCache
from spec_validation import elasticsearch_validator, opensearch_validator

ROOT = Path(__file__).resolve().parent.parent
N_DOCS = 100
N_HYBRID_DOCS = 50  # the dense model is the costly side of a hybrid ingest,
N_HYBRID_QUERIES = 10  # and the double's fusion (OpenSearch: a search pipeline per query) of a search
N_QUERIES = 20
TOP_K = 10
LUCENE_RTOL = 2.0**-7  # Lucene keeps 9 significant bits of a stored weight
HEAVY = ("torch", "transformers", "sparsebridge.encoders.encoder", "sparsebridge.encoders.modules")
ENGINES = {"elasticsearch": "9.1.0", "opensearch": "3.3.0"}
KEY = "engine-test-key-7f3a"  # serve's bearer API key: every engine call below must carry it
AUTHORIZED = f"Bearer {KEY}"


@pytest.fixture(scope="module")
def starting(tmp_path_factory):
    """``sparsebridge serve`` with an API key and otherwise no config (the packaged model, as the
    Python API loads it), started in the background: it loads while the client side ingests."""
    folder = tmp_path_factory.mktemp("serve")
    (folder / "serve.toml").write_text(f'[serve]\napi_key = "{KEY}"\n')
    srv = ServerProcess(folder, folder / "serve.toml")
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(srv.__enter__)
        try:
            yield future
        finally:
            with contextlib.suppress(Exception):
                future.result()
            if srv.proc is not None:
                srv.stop()


@pytest.fixture(scope="module")
def served(starting):
    return starting.result()


@pytest.fixture(scope="module", autouse=True)
def quick_deploy_polls():
    """The double's deploy tasks complete at the second look, whatever the time between looks:
    register polls them as it does in production, without waiting half a second each time."""
    import sparsebridge_opensearch.connector as opensearch_connector

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(opensearch_connector, "DEPLOY_POLL", 0.01)
        yield


@pytest.fixture(scope="module")
def docs(data_dir):
    return [{"_id": d["_id"], "text": d["text"]} for d in read_jsonl(data_dir / "cranfield" / "corpus.jsonl", N_DOCS)]


@pytest.fixture(scope="module")
def queries(data_dir):
    return [q["text"] for q in read_jsonl(data_dir / "cranfield" / "queries.jsonl", N_QUERIES)]


def config_for(
    engine: str, url: str, index: str, *, key: str | None = KEY, hybrid: bool = False, ingest=None, **search
):
    return config_from_dict(
        {
            "backend": {"connector": engine, "url": url, "index": index, "max_retries": 0},
            "ingest": {"id_field": "_id", "text_fields": ["text"], **(ingest or {})},
            "search": {"top_k": TOP_K, "hybrid": hybrid, **search},
            "serve": {"api_key": key} if key is not None else {},
        },
        f"{engine}.toml",
    )


def toml_for(folder: Path, name: str, engine: str, url: str, index: str, *, key: str | None = KEY, search=""):
    """A config file for the CLI: the engine, the index, serve's API key (what register hands the
    engine) unless ``key`` is None, and ``search`` as the [search] table's lines."""
    path = folder / f"{name}.toml"
    text = f'[backend]\nconnector = "{engine}"\nurl = "{url}"\nindex = "{index}"\nmax_retries = 0\n'
    if key is not None:
        text += f'[serve]\napi_key = "{key}"\n'
    if search:
        text += f"[search]\n{search}\n"
    path.write_text(text)
    return path


def register(served, config: Path, *more: str):
    return CliRunner().invoke(main, ["register", "--server-url", served.url, "--config", str(config), *more])


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


def meaningful(rankings: list[list[tuple[str, float]]], *, strict: bool = True) -> None:
    """The rankings compared are worth comparing: full, strictly ordered (no ties to reorder
    freely; RRF's rank sums tie by nature, so ``strict=False`` asks only for scores that differ),
    and not one list for every query."""
    assert all(len(r) == TOP_K for r in rankings)
    if strict:
        assert all(all(a[1] > b[1] for a, b in zip(r, r[1:])) for r in rankings)
    else:
        assert all(r[0][1] > r[-1][1] for r in rankings)
    assert len({tuple(i for i, _ in r) for r in rankings}) > len(rankings) // 2


def check_specs(engine: FakeEngine) -> set[str]:
    """Every request and answer of the session against the engine's specification; the APIs seen."""
    validator = elasticsearch_validator() if engine.is_es else opensearch_validator()
    seen = set()
    for req in engine.requests:
        seen.add(validator.validate_request(req.method, req.path, req.body))
        validator.validate_response(req.method, req.path, req.status, req.response)
    return seen


@pytest.fixture(scope="module")
def dense_encoder():
    """The packaged MiniLM, the dense side of hybrid search (encoded on the client in both modes)."""
    return build_dense_encoder(config_for("elasticsearch", "http://unused", "x", hybrid=True))


@pytest.fixture(scope="module")
def sessions(starting, encoder, dense_encoder, docs, queries, tmp_path_factory):
    """Per engine: the double, its server, the client-side rankings of the queries (sparse on
    "cran", hybrid on "cran-hybrid"), and the rankings with the engine encoding them after
    ``sparsebridge register`` (run through the CLI) of each index.

    The client side runs first, while serve starts; the documents are encoded once for both
    engines (the cache)."""
    out = {}
    folder = tmp_path_factory.mktemp("configs")
    cache = EncodeCache(folder / "cache.sqlite3")
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
        hybrid_config = config_for(name, srv.url, "cran-hybrid", hybrid=True)
        settings["search_settings"] = hybrid_config.search
        hybrid_pipe = Pipeline(encoder, connector, "cran-hybrid", cache=cache, dense_encoder=dense_encoder, **settings)
        report = hybrid_pipe.ingest(docs[:N_HYBRID_DOCS])
        assert report.written == N_HYBRID_DOCS and not report.failed
        hybrid_client = ranking(hybrid_pipe.search(queries[:N_HYBRID_QUERIES], explain=False))
        connector.close()  # not pipe.close(): the cache serves the next engine
        out[name] = {"engine": engine, "server": srv, "client": client, "hybrid_client": hybrid_client}
    cache.close()
    served = starting.result()
    for name, s in out.items():
        url = s["server"].url
        s["config"] = toml_for(folder, name, name, url, "cran")
        done = register(served, s["config"], "--json")
        assert done.exit_code == 0, done.output
        s["created"] = json.loads(done.output)
        engine_config = config_for(name, url, "cran", query_encoding="engine")
        with connector_from_config(engine_config) as conn:
            s["by_engine"] = ranking(engine_search(engine_config, conn, queries))
        done = register(served, toml_for(folder, f"{name}-hybrid", name, url, "cran-hybrid"))
        assert done.exit_code == 0, done.output
        hybrid_config = config_for(name, url, "cran-hybrid", hybrid=True, query_encoding="engine")
        with connector_from_config(hybrid_config) as conn:
            results = engine_search(hybrid_config, conn, queries[:N_HYBRID_QUERIES], dense_encoder=dense_encoder)
        s["hybrid_by_engine"], s["hybrid_notes"] = ranking(results), [r.notes for r in results]
    yield out
    for s in out.values():
        s["server"].__exit__(None, None, None)


@pytest.mark.parametrize("name", list(ENGINES))
def test_engine_encoded_queries_rank_as_client_side_encoding(sessions, served, name, queries):
    s = sessions[name]
    assert len(s["client"]) == len(queries)
    meaningful(s["client"])
    same_ranking(s["by_engine"], s["client"])
    calls = [c for c in s["engine"].model_calls if "/query/" in c["url"]]
    route = "elasticsearch/sparse_embedding" if name == "elasticsearch" else "opensearch/sparse_encoding"
    assert {c["url"] for c in calls} == {f"{served.url}/query/{route}"}
    asked = [t for c in calls for t in json.loads(c["body"])["input" if name == "elasticsearch" else "texts"]]
    assert set(queries) <= set(asked)  # each query text went to the server, encoded there


@pytest.mark.parametrize("name", list(ENGINES))
def test_hybrid_with_the_engine_encoding_the_sparse_side_ranks_as_client_side(sessions, name):
    """The sparse side encoded by the engine (through the server), the dense side on the client,
    fused by the engine: the ranking of client-side hybrid search, fused scores included."""
    s = sessions[name]
    assert len(s["hybrid_client"]) == N_HYBRID_QUERIES
    meaningful(s["hybrid_client"], strict=False)
    same_ranking(s["hybrid_by_engine"], s["hybrid_client"])
    assert s["hybrid_notes"] == [
        [] for _ in range(N_HYBRID_QUERIES)
    ]  # fused in the engine, models checked, nothing to say
    # One request carries both legs: the query text for the engine to encode, the client's dense vector.
    text_leg = '"inference_id"' if name == "elasticsearch" else '"query_text"'
    bodies = [r.body.decode() for r in s["engine"].requests if "cran-hybrid" in r.path + r.body.decode()]
    assert any(text_leg in b and '"knn"' in b for b in bodies)


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
    done = register(served, es["config"], "--semantic-index", "cran-semantic")
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
    config = toml_for(os_["config"].parent, "opensearch-text", "opensearch", os_["server"].url, "cran-text")
    done = register(served, config)
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
    search = f'top_k = {TOP_K}\nquery_encoding = "engine"'
    cfg = toml_for(tmp_path, "engine", "elasticsearch", s["server"].url, "cran", search=search)
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
    assert result["notes"] == []  # the served model was checked (GET /info) without torch either


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


# --------------------------------------------------------------------------- the API key


@pytest.mark.parametrize("name", list(ENGINES))
def test_the_api_key_reaches_the_server_as_a_bearer_token(sessions, served, name):
    """Every call the engine made (endpoint validation, queries, ingest) carried the key as the
    engine fills the header template from its secret store, and the server accepted each; the
    engine keeps the template, not the key, in the stored settings; the server never logs it."""
    engine = sessions[name]["engine"]
    calls = [c for c in engine.model_calls if c["url"].startswith(served.url)]
    assert len(calls) >= 4
    assert all(c["headers"].get("Authorization") == AUTHORIZED and c["status"] == 200 for c in calls)
    state = engine._state()
    if name == "elasticsearch":
        stored = state["endpoints"]["cran-sparsebridge-query"]["service_settings"]
        assert stored["headers"]["Authorization"] == "Bearer ${api_key}"
        assert stored["secret_parameters"] == {"api_key": KEY}
    else:
        stored = state["connectors"][state["models"][sessions[name]["created"]["query"]]["connector_id"]]
        assert stored["actions"][0]["headers"]["Authorization"] == "Bearer ${credential.api_key}"
        assert stored["credential"] == {"api_key": KEY}
    assert KEY not in served.output


def _copy_index(engine: FakeEngine, source: str, name: str) -> None:
    """An index like ``source`` (same mapping, metadata and documents, without the engine-side models)."""
    mappings = json.loads(json.dumps(engine.indices[source]["mappings"]))
    mappings["_meta"].pop("engine_encoding", None)
    engine.add_index(name, mappings)
    engine.indices[name]["docs"] = copy.deepcopy(engine.indices[source]["docs"])


def test_a_wrong_or_missing_key_gives_the_engine_s_error_in_one_line(sessions, served, tmp_path, queries):
    """serve answers 401; the engine answers its own error, as its inference code words it
    (Elasticsearch refuses to create the endpoint, whose validation call failed; OpenSearch's model
    fails at search), and the user gets it in one line. ``register`` itself refuses a wrong key
    before the engine is asked."""
    es = sessions["elasticsearch"]
    _copy_index(es["engine"], "cran", "cran-keys")
    config = config_for("elasticsearch", es["server"].url, "cran-keys")
    with connector_from_config(config) as conn, pytest.raises(ConnectorError) as err:
        conn.register_model_server(ModelServer(served.url, api_key="not-the-key"))
    message = str(err.value)
    assert "\n" not in message, message
    assert (
        "Received an authentication error status code for request from inference entity id "
        "[cran-keys-sparsebridge-query] status [401]. Error message: [" in message
    ), message
    assert "missing or wrong API key" in message  # serve's own reason, passed on by the engine
    assert message.endswith(
        "(the model server refused the engine's call: check [serve] api_key, then run `sparsebridge register` again)"
    )  # not the engine's credentials
    assert "not-the-key" not in message
    assert "cran-keys-sparsebridge-query" not in es["engine"]._state()["endpoints"]  # nothing made
    (refused,) = [c for c in es["engine"].model_calls if c["headers"].get("Authorization") == "Bearer not-the-key"]
    assert refused["status"] == 401

    os_ = sessions["opensearch"]
    _copy_index(os_["engine"], "cran", "cran-keys")
    with connector_from_config(config_for("opensearch", os_["server"].url, "cran-keys")) as conn:
        conn.register_model_server(ModelServer(served.url))  # no key: OpenSearch does not call the model yet
    cfg = toml_for(
        tmp_path, "os-keys", "opensearch", os_["server"].url, "cran-keys", search='query_encoding = "engine"'
    )
    done = CliRunner().invoke(main, ["search", queries[0], "--config", str(cfg)])
    assert done.exit_code == 1, done.output
    (line,) = done.output.strip().splitlines()
    assert line.startswith("Error: ") and "Error from remote service: " in line, line
    assert "missing or wrong API key" in line and line.endswith("then run `sparsebridge register` again)")
    assert (
        os_["engine"].model_calls[-1]["status"] == 401
        and "Authorization" not in os_["engine"].model_calls[-1]["headers"]
    )

    wrong = toml_for(tmp_path, "es-wrong", "elasticsearch", es["server"].url, "cran-keys", key="not-the-key")
    done = register(served, wrong)
    assert done.exit_code == 1
    assert done.output.strip().splitlines() == [
        f"Error: the model server at {served.url} refused the API key (401: missing or wrong API key: send the "
        "header 'Authorization: Bearer <key>'); set [serve] api_key to the server's key"
    ]


# --------------------------------------------------------------------------- the served model


def _info_requests(served) -> int:
    found = re.search(
        r'^sparsebridge_serve_requests_total\{route="/info",status="200"\} (\S+)$',
        httpx.get(f"{served.url}/metrics", headers={"Authorization": AUTHORIZED}).text,
        re.M,
    )
    return int(float(found.group(1))) if found else 0


def test_info_names_the_served_model_exactly(sessions, served):
    """``GET /info``: TEI's fields as TEI defines them, plus the producer fingerprints an ingest
    records (the index "cran" was ingested with the model the server serves: equal), and the key
    is needed (only /health is open)."""
    info = httpx.get(f"{served.url}/info", headers={"Authorization": AUTHORIZED}).json()
    assert info["model_id"] == "packaged:splade" and info["model_type"] == {"embedding": {"pooling": "splade"}}
    meta = sessions["elasticsearch"]["engine"].indices["cran"]["mappings"]["_meta"]
    assert info["producer"] == {k: meta["producer"][k] for k in ("document", "query")}
    assert info["vocab_fingerprint"] == meta["vocab_fingerprint"]
    assert httpx.get(f"{served.url}/info").status_code == 401


def test_a_server_whose_model_is_not_the_index_s_is_refused(sessions, served, encoder, docs, queries, tmp_path):
    """An index built with ``max_active_dims = 32`` (same weights, other vectors): ``register``
    refuses in one line naming both models and the difference, creating nothing; a search whose
    registered server serves another model than the index's is refused too (the server restarted
    with another model after register), or noted with ``allow_model_change``."""
    es = sessions["elasticsearch"]
    engine = es["engine"]
    config = config_for("elasticsearch", es["server"].url, "cran-pruned")
    settings = dict(ingest_settings=config.ingest, search_settings=config.search, show_progress=False)
    with connector_from_config(config) as conn:
        report = Pipeline(encoder, conn, "cran-pruned", max_active_dims=32, **settings).ingest(docs[:5])
    assert report.written == 5
    model = engine.indices["cran-pruned"]["mappings"]["_meta"]["model"]
    done = register(served, toml_for(tmp_path, "pruned", "elasticsearch", es["server"].url, "cran-pruned"))
    assert done.exit_code == 1
    (line,) = done.output.strip().splitlines()
    assert line.startswith(
        f"Error: the model server at {served.url} serves model 'packaged:splade', not the model index "
        f"'cran-pruned' was built with ({model!r}; query side: max_active_dims: index 32, in use None; "
        "document side: max_active_dims: index 32, in use None"
    ), line
    assert not engine.calls(r"^/_inference/.*cran-pruned")

    # Registered when the server still served the index's model (the engine side as register makes
    # it), then the server serves another: the search refuses, asking GET /info once per process.
    with connector_from_config(config) as conn:
        conn.register_model_server(ModelServer(served.url, api_key=KEY))
    search = config_for("elasticsearch", es["server"].url, "cran-pruned", query_encoding="engine")
    forget_server_info()
    before = _info_requests(served)
    with connector_from_config(search) as conn:
        for _ in range(2):
            with pytest.raises(ModelMismatchError, match="query side: max_active_dims: index 32, in use None"):
                engine_search(search, conn, queries[:2])
    assert _info_requests(served) == before + 1
    allowed = config_for(
        "elasticsearch", es["server"].url, "cran-pruned", ingest={"allow_model_change": True}, query_encoding="engine"
    )
    with connector_from_config(allowed) as conn:
        (result,) = engine_search(allowed, conn, queries[:1])
    assert any("accepted because allow_model_change is set" in n for n in result.notes)


def test_a_search_that_cannot_ask_the_server_says_so(sessions, queries):
    """Without the server's key this machine cannot read /info; only the engine needs to reach the
    server, so the search runs, with a note that the model was not checked."""
    es = sessions["elasticsearch"]
    config = config_for("elasticsearch", es["server"].url, "cran", key=None, query_encoding="engine")
    forget_server_info()
    with connector_from_config(config) as conn:
        results = engine_search(config, conn, queries[:2])
    same_ranking(ranking(results), es["client"][:2])
    for r in results:
        (note,) = r.notes
        assert note.startswith("the served model was not checked against index 'cran''s: the model server at ")
        assert "refused the API key (401" in note


def test_register_checks_the_server_where_this_machine_reaches_it(sessions, served, tmp_path):
    """The engine reaches the server by a name this machine cannot resolve (a compose network):
    ``--check-url`` says where to ask for its model, and is recorded for ``search``'s check;
    without it, register stops in one line before anything is made."""
    os_ = sessions["opensearch"]
    engine = os_["engine"]
    _copy_index(engine, "cran", "cran-compose")
    cfg = toml_for(tmp_path, "compose", "opensearch", os_["server"].url, "cran-compose")
    inner = "http://sparsebridge.invalid:8080"
    models = len(engine._state()["models"])
    done = CliRunner().invoke(main, ["register", "--server-url", inner, "--config", str(cfg)])
    assert done.exit_code == 1
    (line,) = done.output.strip().splitlines()
    assert line.startswith(f"Error: cannot reach the model server at {inner} (GET /info: "), line
    assert len(engine._state()["models"]) == models  # nothing made
    done = CliRunner().invoke(
        main, ["register", "--server-url", inner, "--check-url", served.url, "--config", str(cfg), "--json"]
    )
    assert done.exit_code == 0, done.output
    record = engine.indices["cran-compose"]["mappings"]["_meta"]["engine_encoding"]
    assert record["server"] == inner and record["info_url"] == served.url
    connector = engine._state()["connectors"][engine._state()["models"][record["query"]]["connector_id"]]
    assert connector["actions"][0]["url"] == f"{inner}/query/opensearch/sparse_encoding"
