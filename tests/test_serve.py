"""``sparsebridge serve`` as a real process on a loopback port, called by real clients: httpx, and
Haystack's TEI sparse embedders (huggingface-api-haystack), which nobody here wrote.

The reference for every vector is the Python API (``encode_query`` / ``encode_document`` on the
packaged model, converted here from the COO tensor), and equality is exact: a request that runs alone
goes through the very same ``encode`` call. A bounded load test checks no failures below the queue
limit, 429 above it, and that SIGTERM answers every admitted request before the process ends.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal

import httpx
import pytest
from conftest import read_jsonl
from serve_support import ServerProcess

pytestmark = pytest.mark.slow


def as_tei(embeddings) -> list[list[dict]]:
    """A ``[n, vocab]`` sparse tensor as TEI's ``[[{"index", "value"}]]``, non-zero entries by index."""
    emb = embeddings.coalesce()
    idx, vals = emb.indices(), emb.values()
    rows = []
    for r in range(emb.shape[0]):
        mask = (idx[0] == r) & (vals > 0)
        rows.append([{"index": i, "value": v} for i, v in zip(idx[1][mask].tolist(), vals[mask].tolist())])
    return rows


@pytest.fixture(scope="module")
def queries(data_dir) -> list[str]:
    return [q["text"] for q in read_jsonl(data_dir / "cranfield" / "queries.jsonl", 12)]


@pytest.fixture(scope="module")
def docs(data_dir) -> list[str]:
    return [f"{d['title']} {d['text']}".strip() for d in read_jsonl(data_dir / "cranfield" / "corpus.jsonl", 10)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """No config at all (an empty folder, $SPARSEBRIDGE_CONFIG unset): the packaged model."""
    with ServerProcess(tmp_path_factory.mktemp("serve-default")) as srv:
        yield srv


def encode(encoder, side: str, texts: list[str]) -> list[list[dict]]:
    method = encoder.encode_query if side == "query" else encoder.encode_document
    return as_tei(method(texts, batch_size=32, show_progress_bar=False))


# --------------------------------------------------------------------------- TEI API, httpx


def test_embed_sparse_equals_python_api(server, encoder, queries, docs):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        one = client.post("/embed_sparse", json={"inputs": docs[0]})
        assert one.status_code == 200, one.text
        assert one.json() == encode(encoder, "document", docs[:1])  # default side: document
        many = client.post("/embed_sparse", json={"inputs": queries, "prompt_name": "query"})
        assert many.json() == encode(encoder, "query", queries)
        fixed = client.post("/query/embed_sparse", json={"inputs": queries[:3]})
        assert fixed.json() == encode(encoder, "query", queries[:3])
        docs_side = client.post("/document/embed_sparse", json={"inputs": docs, "truncate": True})
        assert docs_side.json() == encode(encoder, "document", docs)


def test_truncation_direction(server, encoder):
    # Single-token words, so the texts kept by truncation can be written out: [CLS] + 510 + [SEP].
    words = ["apple", "river", "music"] * 100 + ["wing", "flow", "pressure", "shock", "wave"] * 120
    assert len(encoder.tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]) == len(words)
    text = " ".join(words)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        right = client.post("/embed_sparse", json={"inputs": text, "truncate": True}).json()
        left = client.post(
            "/embed_sparse", json={"inputs": text, "truncate": True, "truncation_direction": "Left"}
        ).json()
        right_again = client.post("/embed_sparse", json={"inputs": text}).json()  # auto_truncate, right
    assert right == right_again == encode(encoder, "document", [" ".join(words[:510])])
    assert left == encode(encoder, "document", [" ".join(words[-510:])])
    assert left != right


@pytest.mark.parametrize(
    ("body", "status", "error_type", "names"),
    [
        ({"inputs": ["fine", 3]}, 422, "validation", "inputs.1"),
        ({"inputs": "x", "truncate": "yes"}, 422, "validation", "truncate"),
        ({"inputs": "x", "prompt": "query: "}, 422, "validation", "prompt"),
        ({"inputs": "x", "prompt_name": "title"}, 422, "validation", "'title'"),
        ({"inputs": "x", "truncation_direction": "middle"}, 422, "validation", "truncation_direction"),
        ({"inputs": []}, 400, "empty", "inputs"),
        ({"inputs": ["t"] * 33}, 413, "validation", "max_client_batch_size"),
        ({"inputs": " ".join(["word"] * 600), "truncate": False}, 413, "validation", "inputs[0]"),
    ],
)
def test_bad_requests_get_tei_error_bodies(server, body, status, error_type, names):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        r = client.post("/embed_sparse", json=body)
    assert r.status_code == status, r.text
    payload = r.json()
    assert set(payload) == {"error", "error_type"}
    assert payload["error_type"] == error_type
    assert names in payload["error"] and "\n" not in payload["error"] and "Traceback" not in r.text


def test_side_conflicts_and_not_json(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        conflict = client.post("/query/embed_sparse", json={"inputs": "x", "prompt_name": "document"})
        not_json = client.post("/embed_sparse", content=b"{inputs: 1", headers={"content-type": "application/json"})
        no_dense = client.post("/embed", json={"inputs": "x"})
    assert conflict.status_code == 422 and "/query route" in conflict.json()["error"]
    assert not_json.status_code == 422 and "not valid JSON" in not_json.json()["error"]
    assert no_dense.status_code == 404 and "no dense model" in no_dense.json()["error"]


def test_info_health_metrics(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        info = client.get("/info").json()
        health = client.get("/health")
        client.post("/embed_sparse", json={"inputs": ["metrics probe"]})
        metrics = client.get("/metrics")
    assert info["model_id"] == "packaged:splade" and info["max_input_length"] == 512
    assert info["model_type"] == {"embedding": {"pooling": "splade"}} and info["auto_truncate"] is True
    assert health.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    served = r'^sparsebridge_serve_requests_total\{route="/embed_sparse",status="200"\} [1-9]'
    assert re.search(served, metrics.text, re.M)
    assert re.search(r"^sparsebridge_serve_batch_texts_count [1-9]", metrics.text, re.M)


# --------------------------------------------------------------------------- engine endpoints


def test_elasticsearch_and_opensearch_bodies(server, encoder, queries, docs):
    vocab = encoder.tokenizer.convert_ids_to_tokens
    with httpx.Client(base_url=server.url, timeout=60) as client:
        es = client.post("/elasticsearch/sparse_embedding", json={"input": queries[:2], "input_type": "search"})
        os_docs = client.post("/opensearch/sparse_encoding", json={"texts": docs[:2]})
        os_query = client.post("/query/opensearch/sparse_encoding", json={"texts": queries[:1]})
    expected_q = encode(encoder, "query", queries[:2])
    # Elasticsearch's custom service reads an object at the root: token strings and weights.
    assert es.json() == {
        "sparse_embeddings": [
            {"embedding": [{"token": vocab(e["index"]), "weight": e["value"]} for e in row]} for row in expected_q
        ]
    }
    expected_d = encode(encoder, "document", docs[:2])
    assert os_docs.json() == {"response": [{vocab(e["index"]): e["value"] for e in row} for row in expected_d]}
    assert os_query.json()["response"][0] == {vocab(e["index"]): e["value"] for e in expected_q[0]}


# --------------------------------------------------------------------------- Haystack


def test_haystack_tei_sparse_embedders(server, encoder, queries, docs):
    from haystack import Document
    from haystack_integrations.components.embedders.huggingface_api import (
        HuggingFaceTEISparseDocumentEmbedder,
        HuggingFaceTEISparseTextEmbedder,
    )

    # The text embedder sends only {"inputs": text}: the /query base path gives it the query side.
    text_embedder = HuggingFaceTEISparseTextEmbedder(api_base_url=f"{server.url}/query", token=None)
    got = text_embedder.run(queries[0])["sparse_embedding"]
    (want,) = encode(encoder, "query", queries[:1])
    assert got.indices == [e["index"] for e in want] and got.values == [e["value"] for e in want]

    doc_embedder = HuggingFaceTEISparseDocumentEmbedder(
        api_base_url=server.url, token=None, batch_size=4, progress_bar=False
    )
    embedded = doc_embedder.run([Document(content=t) for t in docs[:8]])["documents"]
    want_docs = encode(encoder, "document", docs[:4]) + encode(encoder, "document", docs[4:8])
    for doc, row in zip(embedded, want_docs):
        assert doc.sparse_embedding.indices == [e["index"] for e in row]
        assert doc.sparse_embedding.values == [e["value"] for e in row]


# --------------------------------------------------------------------------- limits, load, SIGTERM

LIMITS_TOML = """
[model]
batch_size = 32

[search]
hybrid = true

[serve]
api_key = "${SB_TEST_KEY}"
max_queue = 8
max_batch_requests = 4
max_client_batch_size = 8
"""


@pytest.fixture(scope="module")
def limited(tmp_path_factory, monkeypatch_module):
    folder = tmp_path_factory.mktemp("serve-limits")
    (folder / "sparsebridge.toml").write_text(LIMITS_TOML)
    monkeypatch_module.setenv("SB_TEST_KEY", "s3cret-key")
    with ServerProcess(folder, folder / "sparsebridge.toml") as srv:
        yield srv


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


AUTH = {"Authorization": "Bearer s3cret-key"}


def test_api_key(limited):
    with httpx.Client(base_url=limited.url, timeout=60) as client:
        missing = client.post("/embed_sparse", json={"inputs": "x"})
        wrong = client.post("/embed_sparse", json={"inputs": "x"}, headers={"Authorization": "Bearer nope"})
        right = client.post("/embed_sparse", json={"inputs": "x"}, headers=AUTH)
        health = client.get("/health")
    assert missing.status_code == 401 and missing.json()["error_type"] == "unauthorized"
    assert wrong.status_code == 401
    assert right.status_code == 200
    assert health.status_code == 200  # the probe needs no key
    assert "s3cret-key" not in limited.output


def test_dense_embed_equals_dense_model(limited, minilm_path, queries):
    from sparsebridge import DenseEncoder

    dense = DenseEncoder(str(minilm_path), device="cpu")
    with httpx.Client(base_url=limited.url, timeout=60, headers=AUTH) as client:
        normalized = client.post("/query/embed", json={"inputs": queries[:3]}).json()
        raw = client.post("/embed", json={"inputs": queries[:3], "normalize": False, "dimensions": 64}).json()
    want = dense.encode_query(queries[:3], batch_size=32, normalize_embeddings=True)
    assert normalized == want.tolist()
    assert raw == dense.encode_document(queries[:3], batch_size=32, truncate_dim=64).tolist()


async def _fire(url: str, texts: list[str], path: str = "/embed_sparse") -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(texts))
    async with httpx.AsyncClient(base_url=url, timeout=120, headers=AUTH, limits=limits) as client:
        return await asyncio.gather(*(client.post(path, json={"inputs": t}) for t in texts))


def test_load_below_and_above_the_queue_limit(limited, docs):
    # Below the limit: 8 clients at a time (max_queue = 8), 3 rounds; every request answered, in
    # batches (fewer passes than requests shows that concurrent requests were joined).
    for _ in range(3):
        responses = asyncio.run(_fire(limited.url, docs[:8]))
        assert [r.status_code for r in responses] == [200] * 8
        assert all(len(r.json()) == 1 and r.json()[0] for r in responses)
    metrics = httpx.get(f"{limited.url}/metrics", headers=AUTH).text
    passes = float(re.search(r"^sparsebridge_serve_batch_texts_count (\S+)", metrics, re.M).group(1))
    texts = float(re.search(r"^sparsebridge_serve_batch_texts_sum (\S+)", metrics, re.M).group(1))
    assert passes < texts

    # Above it: 64 long documents at once; the queue holds 8 texts, so some are refused with 429
    # (TEI's overloaded body) and every other one is answered.
    responses = asyncio.run(_fire(limited.url, [d * 3 for d in docs] * 7))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 429}
    assert 429 in codes and 200 in codes
    for r in responses:
        if r.status_code == 429:
            assert r.json()["error_type"] == "overloaded"
        else:
            assert len(r.json()) == 1 and r.json()[0]


def test_sigterm_answers_requests_in_flight(tmp_path, docs):
    folder = tmp_path
    (folder / "sparsebridge.toml").write_text("[serve]\nbatching = false\nmax_queue = 64\n")
    with ServerProcess(folder, folder / "sparsebridge.toml") as srv:

        async def run() -> list[httpx.Response]:
            texts = [d * 3 for d in docs] * 2  # 20 long documents, one model pass each (batching off)
            async with httpx.AsyncClient(base_url=srv.url, timeout=120, limits=httpx.Limits(max_connections=20)) as c:
                tasks = [asyncio.create_task(c.post("/embed_sparse", json={"inputs": t})) for t in texts]
                while True:  # SIGTERM once the server holds admitted texts it has not answered
                    m = (await c.get("/metrics")).text
                    if float(re.search(r"^sparsebridge_serve_queue_texts (\S+)", m, re.M).group(1)) >= 10:
                        break
                    await asyncio.sleep(0.01)
                srv.terminate()
                return await asyncio.gather(*tasks)

        responses = asyncio.run(run())
        assert [r.status_code for r in responses] == [200] * 20
        assert all(len(r.json()) == 1 and r.json()[0] for r in responses)
        # uvicorn re-raises the signal once it has stopped: the exit status a service manager expects.
        assert srv.proc.wait(60) == -signal.SIGTERM
        with pytest.raises(httpx.ConnectError):
            httpx.post(f"{srv.url}/embed_sparse", json={"inputs": "after"}, timeout=5)
        assert "Traceback" not in srv.output


def test_port_in_use_is_one_error_line(tmp_path):
    import socket
    import subprocess
    import sys

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "sparsebridge.cli", "serve", "--port", str(port)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"Error: cannot listen on 127.0.0.1:{port}")
    json.dumps(result.stderr)


# --------------------------------------------------------------------------- inference-free model


@pytest.fixture(scope="module")
def free_model(tmp_path_factory, splade_path, docs):
    """A Router whose query route is a SparseStaticEmbedding (no transformer pass for queries), saved."""
    from conftest import save_inference_free_model

    return save_inference_free_model(splade_path, docs, tmp_path_factory.mktemp("inference-free") / "model")


def test_inference_free_router_model(tmp_path, free_model, queries, docs):
    """The inference-free model served by path: each route gives what the Python API gives on the
    loaded model (the query side through the inline path, the document side on the model thread)."""
    from sparsebridge import SparseEncoder

    config = tmp_path / "sparsebridge.toml"
    config.write_text(f'[model]\nname_or_path = "{free_model}"\nquery_side = "inference-free"\n')
    loaded = SparseEncoder(str(free_model), device="cpu")
    with ServerProcess(tmp_path, config) as srv, httpx.Client(base_url=srv.url, timeout=60) as client:
        query_side = client.post("/query/embed_sparse", json={"inputs": queries}).json()
        document_side = client.post("/embed_sparse", json={"inputs": docs[:4]}).json()
    assert query_side == encode(loaded, "query", queries)
    assert document_side == encode(loaded, "document", docs[:4])
    assert query_side != encode(loaded, "document", queries)  # the two routes differ


def _service(encoder, name: str):
    from sparsebridge.serve.service import Limits, ModelService

    return ModelService(encoder, model_name=name, limits=Limits(32, 16384, True))


def test_inline_query_side_skips_the_model_thread(free_model, encoder, queries, docs, monkeypatch):
    """Queries of an inference-free model run on the event loop, concurrent ones in one pass, and
    measure no free cores; its documents, and every side of a transformer model, go to the model
    thread. The spy wraps the real pass and only records where it ran."""
    import threading

    from sparsebridge import SparseEncoder, threads
    from sparsebridge.serve.batching import Batcher

    monkeypatch.delenv(threads.ENV_VAR, raising=False)
    reads = []
    real = threads._busy_seconds
    monkeypatch.setattr(threads, "_busy_seconds", lambda: reads.append(1) or real())

    service = _service(SparseEncoder(str(free_model), device="cpu"), "free")
    assert service.inline(service.job("sparse", "q", fixed_side="query").key)
    assert not service.inline(service.job("sparse", "d").key)
    packaged = _service(encoder, "packaged")
    assert not packaged.inline(packaged.job("sparse", "q", fixed_side="query").key)

    passes: list[tuple[str, int]] = []

    def spy(key, texts):
        passes.append((threading.current_thread().name, len(texts)))
        return service.run(key, texts)

    async def scenario():
        batcher = Batcher(spy, max_batch_tokens=16384, max_batch_requests=128, max_queue=64, inline=service.inline)
        await batcher.start()
        jobs = [service.job("sparse", q, fixed_side="query") for q in queries[:3]] + [service.job("sparse", docs[0])]
        try:
            return await asyncio.gather(*(batcher.submit(j) for j in jobs))
        finally:
            await batcher.stop()

    results = asyncio.run(scenario())
    loop_thread = threading.current_thread().name
    assert sorted(passes) == sorted([(loop_thread, 3), ("sparsebridge-model_0", 1)])
    assert len(reads) <= 1  # the document pass's measurement (none off Linux); the inline one takes none
    want = encode(service.sparse.encoder, "query", queries[:3]) + encode(service.sparse.encoder, "document", docs[:1])
    got = [[{"index": i, "value": v} for i, v in zip(r[0].indices, r[0].values)] for r in results]
    assert got == want


def test_served_connections_send_without_nagle():
    """The connections of the listening socket reach the event loop with TCP_NODELAY, as uvicorn
    gets them: with Nagle's algorithm on, each answer's body waited for the client's delayed ACK."""
    import socket

    from sparsebridge.serve.server import _listen

    async def accepted_nodelay() -> int:
        sock = _listen("127.0.0.1", 0)
        got = asyncio.get_running_loop().create_future()

        async def handle(reader, writer):
            got.set_result(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(handle, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            result = await asyncio.wait_for(got, 60)
            writer.close()
        return result

    assert asyncio.run(accepted_nodelay()) != 0


def test_token_counts_are_the_tokenizers(encoder, docs):
    """The request check counts tokens as the model's tokenizer does (special tokens, no
    truncation), caps them at max_seq_length when truncating, and refuses a long text otherwise."""
    from sparsebridge.serve.errors import TooLarge

    service = _service(encoder, "packaged")
    long = " ".join(docs) * 2
    want = [len(x) for x in encoder.tokenizer([docs[0], long, ""], truncation=False, verbose=False)["input_ids"]]
    assert want[1] > encoder.max_seq_length
    assert service.job("sparse", [docs[0], long, ""]).tokens == [min(n, encoder.max_seq_length) for n in want]
    with pytest.raises(TooLarge, match=r"inputs\[0\] has \d+ tokens"):
        service.job("sparse", long, truncate=False)


def test_thread_budget_measured_once_per_window(encoder, queries, monkeypatch):
    """The model thread's passes share one measurement of the free cores per window, instead of
    each reading /proc as a lone encode call does. The window is made endless, so exactly one
    measurement must serve all passes; the encoder is left without a num_threads of its own."""
    from sparsebridge import threads

    monkeypatch.delenv(threads.ENV_VAR, raising=False)
    monkeypatch.setattr(threads, "WINDOW_S", 1e9)
    reads = []
    real = threads._busy_seconds
    monkeypatch.setattr(threads, "_busy_seconds", lambda: reads.append(1) or real())
    service = _service(encoder, "packaged")
    key = service.job("sparse", "q", fixed_side="query").key
    for q in queries[:4]:
        assert len(service.run(key, [q])) == 1
    assert len(reads) <= 1  # one start (none off Linux), not one per pass
    assert "num_threads" not in vars(encoder)


# --------------------------------------------------------------------------- the engines' connectors


def json_path(document, path: str) -> list[list]:
    """``$.a[*].b[*].c`` as Elasticsearch's custom service reads it for sparse embeddings: one list
    of values per element of the first ``[*]`` (one per input text). Only this form is needed here."""
    steps = path.removeprefix("$.").split(".")
    outer = document
    i = 0
    while not steps[i].endswith("[*]"):
        outer = outer[steps[i]]
        i += 1
    outer = outer[steps[i][:-3]]
    inner_key, leaf = steps[i + 1][:-3], steps[i + 2]
    return [[entry[leaf] for entry in item[inner_key]] for item in outer]


def test_engine_connector_bodies_valid_and_served(limited, encoder, specs_dir, queries, docs):
    from sparsebridge.connector import ModelServer
    from sparsebridge_elasticsearch.inference import inference_endpoint
    from sparsebridge_opensearch.ml import ml_connector
    from spec_validation import elasticsearch_validator, opensearch_validator

    server = ModelServer(limited.url, api_key="s3cret-key")

    es_spec, os_spec = elasticsearch_validator(specs_dir), opensearch_validator(specs_dir)
    put_custom = json.loads((specs_dir / "elasticsearch" / "elasticsearch-serverless-openapi.json").read_text())[
        "paths"
    ]["/_inference/{task_type}/{custom_inference_id}"]["put"]["requestBody"]["content"]["application/json"]["schema"]
    for side, texts in (("query", queries[:3]), ("document", docs[:3])):
        want = [dict(pairs) for pairs in encoder.decode(getattr(encoder, f"encode_{side}")(texts, batch_size=32))]

        es_body = inference_endpoint(server, side)
        assert set(es_body) <= set(put_custom["properties"]) and set(put_custom.get("required", ())) <= set(es_body)
        settings = es_body["service_settings"]
        es_spec.validate(settings, "inference._types.CustomServiceSettings")
        # What Elasticsearch's custom service does with these settings: fill the request template,
        # resolve ${...} headers from secret_parameters, POST, read tokens and weights by the paths.
        content = settings["request"]["content"].replace("${input}", json.dumps(texts))
        secret = settings["secret_parameters"]["api_key"]
        headers = {k: v.replace("${api_key}", secret) for k, v in settings["headers"].items()}
        answer = httpx.post(settings["url"], content=content, headers=headers, timeout=60).json()
        assert isinstance(answer, dict)  # an object at the root: what the custom service can parse
        parser = settings["response"]["json_parser"]
        tokens, weights = json_path(answer, parser["token_path"]), json_path(answer, parser["weight_path"])
        assert [dict(zip(t, w)) for t, w in zip(tokens, weights)] == want

        os_body = ml_connector(server, side)
        os_spec.validate(os_body, "request:ml/ml.create_connector")
        (action,) = os_body["actions"]
        # What ML Commons does for a remote model: text_docs -> parameters.texts (the pre-process
        # function), the request_body filled, ${credential.*} headers resolved, the answer's map read.
        body = action["request_body"].replace("${parameters.texts}", json.dumps(texts))
        secret = os_body["credential"]["api_key"]
        headers = {k: v.replace("${credential.api_key}", secret) for k, v in action["headers"].items()}
        answer = httpx.request(action["method"], action["url"], content=body, headers=headers, timeout=60).json()
        assert answer["response"] == want


# --------------------------------------------------------------------------- [serve] config


def test_serve_config_section(monkeypatch):
    from sparsebridge.config import config_from_dict, reveal
    from sparsebridge.errors import ConfigError

    monkeypatch.setenv("SB_SERVE_KEY", "hidden-serve-key")
    serve = {"api_key": "${SB_SERVE_KEY}", "port": 0, "max_queue": 4, "max_client_batch_size": 4}
    config = config_from_dict({"serve": serve}, "t.toml")
    assert (config.serve.port, config.serve.max_queue, config.serve.host) == (0, 4, "127.0.0.1")
    assert reveal(config.serve.api_key) == "hidden-serve-key"
    assert "hidden-serve-key" not in repr(config) + json.dumps(config.to_dict(), default=str)
    with pytest.raises(ConfigError, match=r"t.toml: \[serve\] unknown key 'max_batch'"):
        config_from_dict({"serve": {"max_batch": 3}}, "t.toml")
    with pytest.raises(ConfigError, match=r"\[serve\] max_queue"):
        config_from_dict({"serve": {"max_queue": 0}}, "t.toml")
    with pytest.raises(ConfigError, match=r"\[serve\] max_client_batch_size = 40: must not exceed max_queue \(16\)"):
        config_from_dict({"serve": {"max_queue": 16, "max_client_batch_size": 40}}, "t.toml")
