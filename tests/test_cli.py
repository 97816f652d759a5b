"""The ``sparsebridge`` command line, end to end on the embedded Qdrant Edge backend."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sparsebridge.pipeline
from click.testing import CliRunner
from pipeline_support import beir, brute_force_ranking, caching_encoder, doc_text, reference_metrics
from sparsebridge.cli import main

pytest.importorskip("qdrant_edge")


@pytest.fixture
def cli(monkeypatch, encoder, tmp_path):
    """Run the CLI in-process in tmp_path; the model loader hands out the session's (caching) encoder."""
    monkeypatch.delenv("SPARSEBRIDGE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    cached = caching_encoder(encoder)
    monkeypatch.setattr(sparsebridge.pipeline, "load_sparse_encoder", lambda name, *_: cached)
    runner = CliRunner()

    def run(*args, ok=True):
        result = runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return run


def edge_config(tmp_path, index="docs", extra=""):
    path = tmp_path / f"{index}.toml"
    path.write_text(
        f'[backend]\nconnector = "qdrant"\nmode = "edge"\npath = "{tmp_path / "edge"}"\nindex = "{index}"\n{extra}',
        encoding="utf-8",
    )
    return path


def one_error_line(result):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


@pytest.mark.slow
def test_eval_ingest_and_search_cranfield(cli, tmp_path, data_dir, encoder):
    config = edge_config(tmp_path, "cranfield")
    dataset = data_dir / "cranfield"
    result = cli("eval", dataset, "--config", config, "--json", "--quiet")
    figures = json.loads(result.stdout)
    # The index was missing: eval ingested the corpus first (two Cranfield documents are empty).
    assert figures["ingest"]["written"] == 1398 and set(figures["ingest"]["failed"]) == {"471", "995"}

    docs, queries, qrels = beir(str(dataset))
    kept = [d for d in docs if doc_text(d)]
    qids = [q for q in queries if q in qrels]
    enc = caching_encoder(encoder)
    ranked = brute_force_ranking(
        enc.encode_query([queries[q] for q in qids]),
        enc.encode_document([doc_text(d) for d in kept]),
        [d["_id"] for d in kept],
        100,
    )
    expected = reference_metrics({q: [d for d, _ in r] for q, r in zip(qids, ranked)}, qrels)
    assert figures["queries"] == expected["queries"] == 225
    for metric in ("ndcg@10", "mrr@10", "recall@100"):
        assert figures[metric] == pytest.approx(expected[metric], abs=1e-3), metric

    # Human-readable, and no second ingest now that the index is full.
    text = cli("eval", dataset, "--config", config, "--quiet").stdout
    assert "ingested" not in text
    assert f"nDCG@10 {figures['ndcg@10']:.4f}" in text and "Recall@100" in text

    out = cli("search", queries["1"], "heat transfer", "--config", config, "-k", "3", "--json", "--quiet")
    hits = json.loads(out.stdout)
    assert [len(r["hits"]) for r in hits] == [3, 3]
    assert [h["id"] for h in hits[0]["hits"]] == [d for d, _ in ranked[0][:3]]
    first = hits[0]["hits"][0]
    assert first["explanation"]["score"] == pytest.approx(first["score"], rel=1e-3)
    assert all(m["product"] > 0 for m in first["explanation"]["matches"])

    human = cli("search", "heat transfer", "--config", config, "-k", "2", "--quiet").stdout
    assert human.startswith("query: heat transfer") and " 1. " in human and "matched: " in human


def test_ingest_search_small_corpus(cli, tmp_path):
    corpus = tmp_path / "docs.jsonl"
    rows = [
        {"id": "wing", "text": "the lift of a wing in a slipstream", "lang": "en"},
        {"id": "heat", "text": "heat transfer in hypersonic flow", "lang": "en"},
        {"id": "fr", "text": "la portance d'une aile", "lang": "fr"},
    ]
    corpus.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    config = edge_config(tmp_path, extra='[ingest]\npayload_fields = { lang = "keyword" }\n')
    out = cli("ingest", corpus, "--config", config, "--quiet").stdout
    assert "3 records written, 0 failed" in out
    again = json.loads(cli("ingest", corpus, "--config", config, "--quiet", "--json").stdout)
    assert again["written"] == 3 and again["failed"] == {}
    res = json.loads(cli("search", "wing lift", "--config", config, "--json", "-q").stdout)
    assert res[0]["hits"][0]["id"] == "wing"
    only_fr = json.loads(cli("search", "wing lift", "--filter", "lang=fr", "--config", config, "--json", "-q").stdout)
    assert [h["id"] for h in only_fr[0]["hits"]] in ([], ["fr"])
    plain = cli("search", "hypersonic heat", "--no-explain", "--config", config, "-q").stdout
    assert "heat" in plain and "matched" not in plain


def test_ingest_failures_exit_nonzero_and_are_listed(cli, tmp_path):
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text('{"id": "a", "text": "fine"}\n{"id": "b", "text": 7}\nnot json\n')
    result = cli("ingest", corpus, "--config", edge_config(tmp_path), "--quiet", ok=False)
    assert result.exit_code == 1
    assert "1 records written, 2 failed" in result.stdout
    assert "failed b: text field 'text' is not a string (got int)" in result.stdout
    assert "failed docs.jsonl:3: not valid JSON" in result.stdout
    assert result.stderr.strip().startswith("Error: 2 documents failed")


def test_user_errors_are_one_line(cli, tmp_path):
    line = one_error_line(cli("search", "x", "--config", tmp_path / "nope.toml", ok=False))
    assert "config file not found" in line and "nope.toml" in line

    bad = tmp_path / "bad.toml"
    bad.write_text('[backend]\nconnector = "solr"\n')
    line = one_error_line(cli("ingest", "stdlib:3", "--config", bad, ok=False))
    assert "unknown connector 'solr'; installed connectors:" in line and "qdrant" in line

    line = one_error_line(cli("ingest", tmp_path / "missing.jsonl", "--config", edge_config(tmp_path), ok=False))
    assert "corpus not found" in line

    line = one_error_line(cli("search", "x", "--config", edge_config(tmp_path, "never-made"), ok=False))
    assert "'never-made' does not exist" in line

    typo = tmp_path / "typo.toml"
    typo.write_text("[model]\nbatch_size = -1\n")
    line = one_error_line(cli("info", "--config", typo, ok=False))
    assert f"{typo}: [model] batch_size = -1: expected an integer >= 1" in line


def test_unreachable_backend_is_one_line(cli, tmp_path):
    config = tmp_path / "es.toml"
    config.write_text(
        '[backend]\nconnector = "elasticsearch"\nurl = "http://127.0.0.1:9"\nrequest_timeout = 2\nmax_retries = 0\n'
    )
    line = one_error_line(cli("ingest", "stdlib:2", "--config", config, "--quiet", ok=False))
    assert "127.0.0.1:9" in line or "connect" in line.lower()


def test_connectors_command(cli, tmp_path):
    text = cli("connectors").stdout
    assert "* qdrant" in text and "elasticsearch" in text and "opensearch" in text
    rows = json.loads(cli("connectors", "--json").stdout)
    assert {r["name"] for r in rows} >= {"qdrant", "elasticsearch", "opensearch"}
    assert all(r["version"] for r in rows)


def test_commands_that_need_no_model_do_not_import_torch(tmp_path):
    """`--help`, `connectors` and config errors answer at once: torch loads only when a model does."""
    probe = (
        "import sys\n"
        "from sparsebridge.cli import main\n"
        "for argv in (['--help'], ['connectors'], ['search', '--config', sys.argv[1], 'q']):\n"
        "    try:\n"
        "        main(argv, standalone_mode=False)\n"
        "    except Exception as exc:\n"
        "        print('error:', type(exc).__name__, exc)\n"
        "print('LOADED', sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    bad = tmp_path / "bad.toml"
    bad.write_text('[backend]\nconnector = "no-such-backend"\n')
    done = subprocess.run([sys.executable, "-c", probe, str(bad)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "no-such-backend" in done.stdout and "qdrant" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "LOADED []"


def test_encode_command(cli, tmp_path):
    lines = cli("encode", "the lift of a wing", "boundary layer", "--top-k", "5").stdout.splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == 2 and all(len(r["tokens"]) == 5 for r in rows)
    weights = list(rows[0]["tokens"].values())
    assert weights == sorted(weights, reverse=True) and "wing" in rows[0]["tokens"]
    docs = tmp_path / "in.jsonl"
    docs.write_text('{"_id": "d1", "title": "Wings", "text": "lift"}\n{"text": "no id"}\n')
    out = tmp_path / "out.jsonl"
    cli("encode", "--input", docs, "--output", out, "--query")
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert written[0]["id"] == "d1" and len(written) == 2 and len(written[1]["id"]) == 32


def test_info_command(cli):
    data = json.loads(cli("info", "--json").stdout)
    assert data["vocab_size"] == 30522 and data["dimensions"] == 30522 and len(data["vocab_fingerprint"]) == 64
    assert 0 < data["sparsity"]["document"]["active_dims"] < 1000
    assert data["config"]["backend"]["connector"] == "qdrant"
    text = cli("info").stdout
    assert "active dimensions" in text and "fingerprint" in text


@pytest.mark.slow
def test_console_script_offline_stdlib_demo(tmp_path):
    """The README's main job on a small scale: the installed `sparsebridge` script, real model, Edge."""
    exe = shutil.which("sparsebridge", path=str(Path(sys.executable).parent)) or shutil.which("sparsebridge")
    if exe is None:
        pytest.skip("the sparsebridge console script is not installed")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("SPARSEBRIDGE_CONFIG", None)
    run = lambda *a: subprocess.run([exe, *a], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)  # noqa: E731
    ingest = run("ingest", "stdlib:40")
    assert ingest.returncode == 0, ingest.stderr
    assert "40 records written, 0 failed" in ingest.stdout
    assert (tmp_path / "sparsebridge-data" / "qdrant-edge").is_dir()
    search = run("search", "encode an object as a JSON string", "-k", "3")
    assert search.returncode == 0, search.stderr
    assert " 1. " in search.stdout and "matched: " in search.stdout
    assert "Traceback" not in search.stderr
    err = run("search", "x", "--config", "missing.toml")
    assert err.returncode == 1 and err.stderr.strip() == "Error: config file not found: missing.toml"


# --------------------------------------------------------------------------- examples/

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def swap_config(name):
    from sparsebridge.config import load_config

    return load_config(EXAMPLES / "swap_backends" / f"{name}.toml", check_connector=False)


def test_swap_backends_configs_differ_only_in_backend(monkeypatch):
    import tomllib

    monkeypatch.setenv("ELASTIC_PASSWORD", "pw-es")
    monkeypatch.setenv("OPENSEARCH_INITIAL_ADMIN_PASSWORD", "pw-os")
    parsed = {}
    for name in ("elasticsearch", "opensearch", "qdrant"):
        with open(EXAMPLES / "swap_backends" / f"{name}.toml", "rb") as fh:
            parsed[name] = tomllib.load(fh)
        config = swap_config(name)
        assert config.backend.connector == name and config.backend.index == "sparsebridge-swap"
        assert "pw-" not in repr(config)
    rest = [{k: v for k, v in p.items() if k != "backend"} for p in parsed.values()]
    assert rest[0] == rest[1] == rest[2]
    readme = (EXAMPLES / "swap_backends" / "README.md").read_text()
    assert "--config examples/swap_backends/$B.toml" in readme


def test_swap_backends_same_results_on_stand_in_servers(cli, tmp_path, monkeypatch):
    """elasticsearch.toml and opensearch.toml as written (URL pointed at the test stand-in server),
    and qdrant.toml's [backend] swapped for embedded Edge: the same command gives the same hits."""
    from lucene_testkit import FakeEngine, FakeServer

    monkeypatch.setenv("ELASTIC_PASSWORD", "pw-es")
    monkeypatch.setenv("OPENSEARCH_INITIAL_ADMIN_PASSWORD", "pw-os")
    outputs = {}
    for name, flavor, version in (("elasticsearch", "elasticsearch", "9.1.2"), ("opensearch", "opensearch", "3.3.0")):
        with FakeServer(FakeEngine(flavor=flavor, version=version)) as srv:
            text = (EXAMPLES / "swap_backends" / f"{name}.toml").read_text()
            text = text.replace("https://127.0.0.1:9201", srv.url).replace("http://127.0.0.1:9200", srv.url)
            config = tmp_path / f"{name}.toml"
            config.write_text(text)
            cli("ingest", "stdlib:30", "--config", config, "-q")
            outputs[name] = json.loads(
                cli("search", "read a gzip compressed file", "--config", config, "--json", "-q").stdout
            )
    text = (EXAMPLES / "swap_backends" / "qdrant.toml").read_text()
    text = text.replace(
        'mode = "server"\nurl = "http://127.0.0.1:6333"', f'mode = "edge"\npath = "{tmp_path / "edge"}"'
    )
    config = tmp_path / "qdrant.toml"
    config.write_text(text)
    cli("ingest", "stdlib:30", "--config", config, "-q")
    outputs["qdrant"] = json.loads(
        cli("search", "read a gzip compressed file", "--config", config, "--json", "-q").stdout
    )
    ranked = {name: [(h["id"], h["score"]) for h in out[0]["hits"]] for name, out in outputs.items()}
    assert len(ranked["qdrant"]) == 5
    for name in ("elasticsearch", "opensearch"):
        # Lucene keeps 9 significant bits of a document weight (truncated, relative error < 2**-8);
        # Qdrant keeps float32: the engines' scores sit up to that much below Qdrant's.
        assert [s for _, s in ranked[name]] == pytest.approx([s for _, s in ranked["qdrant"]], rel=2**-8)
        assert [i for i, _ in ranked[name]] == [i for i, _ in ranked["qdrant"]]


def test_example_ingest_elasticsearch(cli, monkeypatch, capsys):
    from lucene_testkit import FakeEngine, FakeServer

    example = load_example("ingest_elasticsearch")
    with FakeServer(FakeEngine(flavor="elasticsearch", version="9.1.2")) as srv:
        monkeypatch.setenv("ELASTICSEARCH_URL", srv.url)
        for var in ("ELASTIC_PASSWORD", "ELASTICSEARCH_PASSWORD", "ELASTICSEARCH_API_KEY"):
            monkeypatch.delenv(var, raising=False)
        assert example.main("stdlib:20", example.QUERIES[:2]) == 0
        assert "sparsebridge-example" in srv.engine.indices
    out = capsys.readouterr().out
    assert "ingested 20 documents into 'sparsebridge-example': 20 written, 0 failed" in out
    assert "the index now holds 20 records" in out
    assert "query: parse command line arguments" in out and "  1. " in out and "matched: " in out


@pytest.mark.slow
def test_example_hybrid_qdrant_embedded(cli, monkeypatch, tmp_path, capsys):
    """hybrid_qdrant.py on its default embedded Edge backend: RRF of the sparse and dense lists."""
    import sparsebridge

    if not hasattr(sparsebridge, "DenseEncoder"):
        pytest.skip("sparsebridge.DenseEncoder is not available")
    monkeypatch.delenv("QDRANT_URL", raising=False)
    example = load_example("hybrid_qdrant")
    queries = example.QUERIES[:2]
    results = example.run("stdlib:40", queries, top_k=40)
    assert (tmp_path / "sparsebridge-data" / "hybrid-example").is_dir()
    example.show(results)
    assert "hybrid (RRF)" in capsys.readouterr().out
    for n in range(len(queries)):
        lists = {mode: [h.id for h in results[mode][n].hits] for mode in ("sparse", "dense")}
        assert len(lists["dense"]) == 40  # every document has a dense score
        expected: dict[str, float] = {}
        for ids in lists.values():
            for rank, doc_id in enumerate(ids, 1):
                expected[doc_id] = expected.get(doc_id, 0.0) + 1 / (60 + rank)
        hybrid = results["hybrid"][n].hits
        assert [h.score for h in hybrid] == pytest.approx(sorted(expected.values(), reverse=True)[: len(hybrid)])
        for hit in hybrid:
            assert hit.score == pytest.approx(expected[hit.id])
