"""The index side runs without torch, and every model load goes through the one builder.

* ``ingest vectors.parquet``, ``count``, ``export``, ``migrate``, ``connectors`` and ``cache
  info|clear`` run in a fresh interpreter each; afterwards neither torch nor transformers nor the
  encoders' modules are in ``sys.modules`` (a model cannot load without them), and the commands did
  their work (counts and the exported dataset are checked).
* ``encode``, ``info`` and the Ray encode workers honour ``[model] precision = "bf16"``: their
  vectors are the bf16 model's, which differ from fp32's.

The backend is the real Qdrant engine (Edge, in-process); the model is the packaged SPLADE model.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as pads
import pytest
from click.testing import CliRunner
from sparsebridge.cli import main
from sparsebridge.config import config_from_dict
from sparsebridge.config.builder import build_vocabulary
from sparsebridge.encoders.runtime import precision
from sparsebridge.vectors.vocabulary import Vocabulary

pytest.importorskip("qdrant_edge")

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "sparsebridge.encoders.encoder", "sparsebridge.encoders.modules")
N_DOCS = 20

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


def run_light(tmp_path: Path, *args: object) -> str:
    """Run one CLI command in a fresh interpreter; return its output (less the probe's line) after
    checking that nothing heavy was imported."""
    env_path = f"{ROOT / 'core'}:{ROOT / 'connectors'}"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, f"{args}: {done.stdout[-2000:]} {done.stderr[-2000:]}"
    *out, last = done.stdout.strip().splitlines()
    assert last.startswith("LOADED "), done.stdout
    assert json.loads(last.removeprefix("LOADED ")) == [], f"{args[0]} imported {last}"
    return "\n".join(out)


def edge_config(tmp_path: Path, index: str, extra: str = "") -> Path:
    path = tmp_path / f"{index}.toml"
    path.write_text(
        f'[backend]\nconnector = "qdrant"\nmode = "edge"\npath = "{tmp_path / "edge"}"\nindex = "{index}"\n{extra}',
        encoding="utf-8",
    )
    return path


@pytest.fixture
def cli(monkeypatch, tmp_path):
    monkeypatch.delenv("SPARSEBRIDGE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def run(*args):
        result = runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout

    return run


@pytest.fixture
def corpus(tmp_path, data_dir) -> Path:
    path = tmp_path / "docs.jsonl"
    with open(data_dir / "cranfield" / "corpus.jsonl", encoding="utf-8") as src:
        lines = [line for line in src if json.loads(line)["text"].strip()][:N_DOCS]
    path.write_text("".join(lines), encoding="utf-8")
    return path


def test_index_commands_import_no_torch_and_load_no_model(cli, tmp_path, corpus):
    config = edge_config(tmp_path, "a")
    vectors = tmp_path / "vectors.parquet"
    cli("encode", corpus, "--output", vectors, "--config", config, "-q")  # the model runs here only
    cli("ingest", corpus, "--config", config, "-q")  # fills the encode cache, for cache info
    cli("count", "--config", config)  # the index exists; the light commands reuse it

    report = json.loads(run_light(tmp_path, "ingest", vectors, "--config", config, "--index", "b", "-q", "--json"))
    assert report["written"] == N_DOCS and not report["failed"]
    assert json.loads(run_light(tmp_path, "count", "--config", config, "--index", "b", "--json"))["count"] == N_DOCS
    exported = tmp_path / "exported.parquet"
    run_light(tmp_path, "export", "--output", exported, "--config", config, "--index", "b", "-q", "--json")
    assert pads.dataset(str(exported), format="parquet").count_rows() == N_DOCS
    target = edge_config(tmp_path, "c")
    migrated = json.loads(run_light(tmp_path, "migrate", "--from", config, "--to", target, "-q", "--json"))
    assert migrated["target_count"] == migrated["source_count"] == N_DOCS
    assert "qdrant" in run_light(tmp_path, "connectors", "--config", config)
    info = json.loads(run_light(tmp_path, "cache", "info", "--json"))
    assert info["entries"] == N_DOCS
    assert "freed" in run_light(tmp_path, "cache", "clear")
    assert not (tmp_path / "sparsebridge-data" / "encode-cache.sqlite3").exists()


def test_vocabulary_without_the_model_is_the_models(encoder):
    """The tokenizer file read by ``tokenizers`` gives the ids, tokens and output dimension the
    loaded model gives."""
    config = config_from_dict({}, check_connector=False)  # packaged:splade
    light, loaded = build_vocabulary(config), Vocabulary.of(encoder, "packaged:splade")
    assert light.metadata == loaded.metadata and list(light.tokens) == list(loaded.tokens)
    assert light.dimension == loaded.dimension == 30522


# -- precision: the builder hands [model] precision to every model load


@pytest.fixture
def bf16_capable(monkeypatch):
    """Pretend this CPU has BF16, so bf16 runs on any machine (else it falls back to fp32, warned)."""
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_vnni"}))


TEXTS = ["the lift of a wing at high speed", "boundary layer separation behind a cylinder"]


def weights(encoder, texts=TEXTS, query=False):
    method = encoder.encode_query if query else encoder.encode_document
    dense = method(texts, convert_to_sparse_tensor=False)
    tokens = encoder.tokenizer.convert_ids_to_tokens(list(range(dense.shape[1])))
    return [{tokens[i]: float(row[i]) for i in row.nonzero().flatten().tolist()} for row in dense]


@pytest.fixture
def bf16_model(bf16_capable, splade_path):
    from sparsebridge import SparseEncoder

    model = SparseEncoder(str(splade_path), device="cpu", precision="bf16")
    assert model[0].precision == "bf16"
    return model


def test_encode_runs_the_configured_precision(cli, tmp_path, bf16_model, encoder):
    config = tmp_path / "bf16.toml"
    config.write_text('[model]\nprecision = "bf16"\n', encoding="utf-8")
    rows = [json.loads(line) for line in cli("encode", *TEXTS, "--config", config).splitlines()]
    want, fp32 = weights(bf16_model), weights(encoder)
    for row, bf16_row, fp32_row in zip(rows, want, fp32):
        assert row["tokens"] == {t: round(w, 6) for t, w in bf16_row.items()}
        assert row["tokens"] != {t: round(w, 6) for t, w in fp32_row.items()}


def test_info_runs_the_configured_precision(cli, tmp_path, bf16_model, encoder):
    config = tmp_path / "bf16.toml"
    config.write_text('[model]\nprecision = "bf16"\n', encoding="utf-8")
    data = json.loads(cli("info", "--text", TEXTS[0], "--config", config, "--json"))
    top = dict(data["example"]["top_tokens"])
    bf16, fp32 = weights(bf16_model)[0], weights(encoder)[0]
    assert all(bf16[t] == w for t, w in top.items()) and sorted(top.values()) == sorted(bf16.values())[-10:]
    assert any(fp32.get(t) != w for t, w in top.items())
    assert data["precision"] == "bf16"


def test_ray_encode_workers_run_the_configured_precision(bf16_model, encoder):
    """The callable each Ray actor runs, built with what ``ingest --engine ray`` passes it."""
    pytest.importorskip("ray")
    import numpy as np
    from sparsebridge.index.ray_engine import _Encode

    actor = _Encode("packaged:splade", device="cpu", precision="bf16", batch_size=8)
    assert actor.encoding.encoder[0].precision == "bf16"
    table = actor({"_id": np.array(["a", "b"]), "text": np.array(TEXTS)}).to_pylist()
    tokens = bf16_model.tokenizer.convert_ids_to_tokens(list(range(30522)))
    got = [{tokens[i]: v for i, v in zip(r["indices"], r["values"])} for r in table]
    assert got == [pytest.approx(w, rel=1e-6) for w in weights(bf16_model)]
    assert got != [pytest.approx(w, rel=1e-6) for w in weights(encoder)]


# -- search with an inference-free model: the query side is read without torch


@pytest.fixture(scope="module")
def free_model(tmp_path_factory, splade_path, data_dir) -> Path:
    """An inference-free model (the IDF of 200 cranfield documents for queries), saved."""
    from conftest import save_inference_free_model

    with open(data_dir / "cranfield" / "corpus.jsonl", encoding="utf-8") as src:
        docs = [json.loads(line)["text"] for line, _ in zip(src, range(200))]
    return save_inference_free_model(splade_path, docs, tmp_path_factory.mktemp("inference-free") / "model")


@pytest.fixture(scope="module")
def cranfield_queries(data_dir) -> list[str]:
    with open(data_dir / "cranfield" / "queries.jsonl", encoding="utf-8") as src:
        return [json.loads(line)["text"] for line in src if line.strip()]


def test_static_query_side_is_the_models(free_model, cranfield_queries):
    """Vectors of all 225 cranfield queries, the vocabulary and the query-side producer fingerprint
    of the torch-free reader equal the loaded model's."""
    from sparsebridge import SparseEncoder
    from sparsebridge.encoders.static_query import StaticQueryEncoder
    from sparsebridge.vectors.convert import to_sparse_vectors
    from sparsebridge.vectors.provenance import producer_fingerprint

    model = SparseEncoder(str(free_model), device="cpu")
    light = StaticQueryEncoder.from_folder(free_model)
    assert light is not None
    vocab, light_vocab = Vocabulary.of(model, "m"), Vocabulary.of(light, "m")
    assert light_vocab.metadata == vocab.metadata and light_vocab.dimension == vocab.dimension
    want = to_sparse_vectors(model.encode_query(cranfield_queries), vocab)
    got = to_sparse_vectors(light.encode_query(cranfield_queries), light_vocab)
    assert got == want and all(v.indices for v in got)
    assert producer_fingerprint(light, None, "query") == producer_fingerprint(model, None, "query")


def test_static_query_reader_declines_other_models(splade_path, tmp_path):
    from sparsebridge.encoders.static_query import StaticQueryEncoder

    assert StaticQueryEncoder.from_folder(splade_path) is None  # no router: the model is loaded
    assert StaticQueryEncoder.from_folder(tmp_path) is None  # not a model folder


def test_the_builder_reads_the_static_query_side_only_when_it_is_exact(free_model):
    """Queries-only encoders of an inference-free config skip the model; with max_active_dims (top-k
    ties are torch's) or a full query side they load it."""
    from sparsebridge.config.builder import static_query_encoder
    from sparsebridge.encoders.static_query import StaticQueryEncoder

    model = {"name_or_path": str(free_model), "query_side": "inference-free"}
    assert isinstance(
        static_query_encoder(config_from_dict({"model": model}, check_connector=False)), StaticQueryEncoder
    )
    for extra in ({"max_active_dims": 8}, {"precision": "bf16"}, {"query_side": "full"}):
        config = config_from_dict({"model": {**model, **extra}}, check_connector=False)
        assert static_query_encoder(config) is None, extra


def test_search_with_an_inference_free_model_imports_no_torch(cli, tmp_path, corpus, free_model, cranfield_queries):
    """``search --no-explain`` on an inference-free config runs in a fresh interpreter without torch,
    transformers or the encoders' modules, and ranks as the loaded model's pipeline does."""
    from sparsebridge.config import load_config
    from sparsebridge.index.pipeline import Pipeline

    config = edge_config(tmp_path, "free", f'[model]\nname_or_path = "{free_model}"\nquery_side = "inference-free"\n')
    cli("ingest", corpus, "--config", config, "-q")
    queries = cranfield_queries[:3]
    light = json.loads(run_light(tmp_path, "search", *queries, "--no-explain", "--json", "--config", config))
    with Pipeline.from_config(load_config(config), show_progress=False) as pipe:  # the model, loaded
        assert type(pipe.query_encoder).__name__ == "SparseEncoder"
        want = [r.to_dict() for r in pipe.search(queries, explain=False)]
    assert light == json.loads(json.dumps(want, default=str))
    assert all(r["hits"] for r in light)
