"""The TOML config: defaults, validation messages, ${VAR} secrets, and swapping backends."""

from __future__ import annotations

import pickle
import textwrap

import pytest
from pipeline_support import beir, caching_encoder, doc_text
from sparsebridge.config import Config, ConfigError, Secret, config_from_dict, load_config
from sparsebridge.defaults import DEFAULT_MODEL, packaged_model_path, resolve_model
from sparsebridge.pipeline import Pipeline


def write(tmp_path, text, name="sb.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch, tmp_path):
    monkeypatch.delenv("SPARSEBRIDGE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


def test_defaults_without_any_config():
    config = load_config()
    assert config.source == "<defaults>"
    assert config.model.name_or_path == DEFAULT_MODEL == "packaged:splade"
    assert resolve_model(config.model.name_or_path) == str(packaged_model_path("packaged:splade"))
    assert (packaged_model_path("packaged:splade") / "model.safetensors").is_file()
    assert (packaged_model_path("packaged:minilm") / "model.safetensors").is_file()
    assert config.backend.connector == "qdrant"
    assert config.backend.options == {"mode": "edge", "path": "./sparsebridge-data/qdrant-edge"}
    assert config.backend.index == "sparsebridge"
    assert config.search.top_k == 10 and config.search.fusion == "rrf" and not config.search.hybrid
    assert config.ingest.split_passages is False


def test_config_discovery(tmp_path, monkeypatch):
    write(tmp_path, "[search]\ntop_k = 3\n", "sparsebridge.toml")
    assert load_config().search.top_k == 3  # ./sparsebridge.toml
    other = write(tmp_path, "[search]\ntop_k = 4\n", "other.toml")
    monkeypatch.setenv("SPARSEBRIDGE_CONFIG", str(other))
    assert load_config().search.top_k == 4  # $SPARSEBRIDGE_CONFIG wins
    assert load_config(write(tmp_path, "[search]\ntop_k = 5\n", "x.toml")).search.top_k == 5
    with pytest.raises(ConfigError, match="config file not found: .*missing.toml"):
        load_config(tmp_path / "missing.toml")


def test_full_config(tmp_path, monkeypatch):
    monkeypatch.setenv("SB_TEST_PASSWORD", "hunter2-secret")
    path = write(
        tmp_path,
        """
        [model]
        name_or_path = "packaged:splade"
        device = "cpu"
        batch_size = 8
        max_active_dims = 128
        query_side = "full"

        [backend]
        connector = "elasticsearch"
        index = "docs"
        url = "http://localhost:9200"
        username = "elastic"
        password = "${SB_TEST_PASSWORD}"
        index_options = { number_of_shards = 1 }

        [ingest]
        id_field = "doc_id"
        text_fields = ["title", "body"]
        payload_fields = { title = "text", lang = "keyword" }
        split_passages = true
        passage_tokens = 256
        passage_overlap = 32

        [search]
        top_k = 20
        hybrid = false
        fusion = "dbsf"
        rrf_k = 30
        """,
    )
    config = load_config(path)
    assert config.model.batch_size == 8 and config.model.max_active_dims == 128 and config.model.device == "cpu"
    assert config.backend.connector == "elasticsearch" and config.backend.index == "docs"
    assert config.backend.index_options == {"number_of_shards": 1}
    assert isinstance(config.backend.options["password"], Secret)
    assert config.backend.connector_options() == {
        "url": "http://localhost:9200",
        "username": "elastic",
        "password": "hunter2-secret",
    }
    assert config.ingest.text_fields == ("title", "body")
    assert config.ingest.payload_fields == {"title": "text", "lang": "keyword"}
    assert config.ingest.passage_tokens == 256 and config.ingest.passage_overlap == 32
    assert config.search.fusion == "dbsf" and config.search.rrf_k == 30
    # The secret never shows: repr, str, the printable dict.
    for shown in (repr(config), str(config), repr(config.backend), str(config.to_dict())):
        assert "hunter2" not in shown
    assert config.to_dict()["backend"]["password"] == "***"


def test_secret_type():
    s = Secret("pw")
    assert repr(s) == "Secret('***')" and str(s) == "***" and f"{s}" == "***" and s.reveal() == "pw"
    assert s == Secret("pw") and s != Secret("other")
    with pytest.raises(TypeError):
        pickle.dumps(s)


def test_secret_keys_hidden_even_without_env(tmp_path):
    path = write(tmp_path, '[backend]\nconnector = "qdrant"\nmode = "server"\nurl = "http://q:6333"\napi_key = "k3y"\n')
    config = load_config(path)
    assert isinstance(config.backend.options["api_key"], Secret)
    assert "k3y" not in repr(config)


def test_env_interpolation_and_escape(tmp_path, monkeypatch):
    monkeypatch.setenv("SB_TEST_MODEL_DIR", "/models")
    path = write(tmp_path, '[model]\nname_or_path = "${SB_TEST_MODEL_DIR}/splade"\n[search]\ndense_model = "a$${b}"\n')
    config = load_config(path)
    assert config.model.name_or_path == "/models/splade"
    assert config.search.dense_model == "a${b}"


# --------------------------------------------------------------------------- errors


def error_of(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value), str(path)


def test_missing_key(tmp_path):
    msg, path = error_of(tmp_path, '[backend]\nindex = "docs"\n')
    assert msg == f"{path}: [backend] missing key 'connector'"


def test_bad_type(tmp_path):
    msg, path = error_of(tmp_path, '[model]\nbatch_size = "many"\n')
    assert msg == f"{path}: [model] batch_size = 'many': expected an integer >= 1"
    msg, _ = error_of(tmp_path, "[search]\nhybrid = 1\n")
    assert msg.endswith("[search] hybrid = 1: expected true or false")
    msg, _ = error_of(tmp_path, "[ingest]\ntext_fields = [1, 2]\n")
    assert "[ingest] text_fields = [1, 2]: expected a non-empty list of field names" in msg
    msg, _ = error_of(tmp_path, "[model]\nbatch_size = 0\n")
    assert "batch_size = 0: expected an integer >= 1" in msg


def test_bad_choice_lists_allowed_values(tmp_path):
    msg, path = error_of(tmp_path, '[model]\nquery_side = "half"\n')
    assert msg == f"{path}: [model] query_side = 'half': allowed: 'full', 'inference-free'"
    msg, _ = error_of(tmp_path, '[search]\nfusion = "sum"\n')
    assert "fusion = 'sum': allowed: 'rrf', 'dbsf'" in msg
    msg, _ = error_of(tmp_path, '[ingest]\npayload_fields = { lang = "string" }\n')
    assert "[ingest] payload_fields.lang = 'string': allowed payload types: keyword, text, integer" in msg


def test_unknown_key_and_section(tmp_path):
    msg, path = error_of(tmp_path, "[model]\nbatchsize = 3\n")
    assert msg.startswith(f"{path}: [model] unknown key 'batchsize'; allowed: batch_size, device")
    msg, _ = error_of(tmp_path, "[modle]\nx = 1\n")
    assert "unknown section [modle]; allowed: [model], [backend], [ingest], [search]" in msg


def test_unknown_connector_lists_installed(tmp_path):
    msg, path = error_of(tmp_path, '[backend]\nconnector = "solr"\n')
    assert msg.startswith(f"{path}: [backend] connector = 'solr': unknown connector 'solr'; installed connectors: ")
    for name in ("elasticsearch", "opensearch", "qdrant"):
        assert name in msg


def test_unset_env_var(tmp_path, monkeypatch):
    monkeypatch.delenv("SB_TEST_UNSET", raising=False)
    msg, path = error_of(tmp_path, '[backend]\nconnector = "elasticsearch"\npassword = "${SB_TEST_UNSET}"\n')
    assert msg == f"{path}: [backend] password: environment variable SB_TEST_UNSET is not set"


def test_secret_not_shown_in_validation_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("SB_TEST_INDEX", "s3cr3t value")
    msg, _ = error_of(tmp_path, '[backend]\nconnector = "qdrant"\nindex = "${SB_TEST_INDEX}"\nsparse_field = 3\n')
    assert "s3cr3t" not in msg and "sparse_field = 3" in msg


def test_invalid_toml_and_overlap(tmp_path):
    msg, path = error_of(tmp_path, "[model\n")
    assert msg.startswith(f"{path}: not valid TOML")
    msg, _ = error_of(tmp_path, "[ingest]\npassage_tokens = 64\npassage_overlap = 64\n")
    assert "passage_overlap = 64: must be smaller than passage_tokens (64)" in msg


def test_no_code_evaluation(tmp_path):
    # Values are data: command substitutions and expressions stay literal strings.
    config = load_config(write(tmp_path, "[model]\nname_or_path = \"$(rm -rf /) `id` __import__('os')\"\n"))
    assert config.model.name_or_path == "$(rm -rf /) `id` __import__('os')"


def test_bad_connector_option_names_backend_section(tmp_path, encoder):
    path = write(tmp_path, f'[backend]\nconnector = "qdrant"\nmode = "edge"\npath = "{tmp_path}/e"\nurl = "x"\n')
    config = load_config(path)
    with pytest.raises(ConfigError, match=r"\[backend\] options for connector 'qdrant': option 'url' is not known"):
        Pipeline.from_config(config, encoder=encoder)


def test_query_side_is_checked_against_the_model(encoder, splade_path, tmp_path):
    from sparsebridge import SparseEncoder
    from sparsebridge.modules import MLMTransformer, Router, SparseStaticEmbedding, SpladePooling
    from sparsebridge.plugins import create_connector

    free_side = config_from_dict({"model": {"query_side": "inference-free"}}, source="sb.toml")
    with pytest.raises(ConfigError, match=r"sb.toml: \[model\] query_side = 'inference-free': the model "):
        Pipeline.from_config(free_side, encoder=encoder)  # the packaged model runs its transformer on queries

    # An inference-free model: BM25-IDF token weights for queries, the SPLADE model for documents.
    texts = ["the lift of a wing in a slipstream", "heat transfer in hypersonic flow", "boundary layer control"]
    transformer = MLMTransformer(str(splade_path))
    static = SparseStaticEmbedding.from_corpus(transformer.tokenizer, texts, frozen=True)
    model = SparseEncoder(
        modules=[Router.for_query_document([static], [transformer, SpladePooling("max", "relu")])], device="cpu"
    )
    with pytest.raises(ConfigError, match="encodes queries inference-free.*set query_side = 'inference-free'"):
        Pipeline.from_config(config_from_dict({}), encoder=model)
    conn = create_connector("qdrant", mode="edge", path=str(tmp_path / "edge"), index="free")
    with Pipeline.from_config(free_side, encoder=model, connector=conn, show_progress=False) as pipe:
        assert pipe.ingest([{"id": str(i), "text": t} for i, t in enumerate(texts)]).written == 3
        (query,) = pipe.encode_queries(["hypersonic heat"])
        assert set(query.tokens) <= set(transformer.tokenizer.tokenize("hypersonic heat"))  # no expansion
        assert pipe.search(["hypersonic heat"], top_k=1)[0].hits[0].id == "1"


# --------------------------------------------------------------------------- swapping backends


@pytest.mark.slow
def test_configs_differing_only_in_backend_rank_alike(tmp_path, encoder, data_dir):
    """Qdrant Edge vs qdrant-client local mode: same [model]/[ingest]/[search], same rankings."""
    pytest.importorskip("qdrant_edge")
    common = """
        [model]
        batch_size = 16

        [ingest]
        payload_fields = ["title"]

        [search]
        top_k = 10
    """
    edge = write(
        tmp_path, common + f'\n[backend]\nconnector = "qdrant"\nmode = "edge"\npath = "{tmp_path}/edge"\n', "e.toml"
    )
    local = write(
        tmp_path, common + f'\n[backend]\nconnector = "qdrant"\nmode = "local"\npath = "{tmp_path}/local"\n', "l.toml"
    )
    docs, queries, _ = beir(str(data_dir / "cranfield"))
    sample = [d for d in docs[:200] if doc_text(d)]
    qs = [queries[q] for q in list(queries)[:12]]
    enc = caching_encoder(encoder)
    rankings = []
    for path in (edge, local):
        config = Config.load(path)
        with Pipeline.from_config(config, encoder=enc, show_progress=False) as pipe:
            assert pipe.ingest(sample).written == len(sample)
            rankings.append([[(h.id, h.score) for h in r.hits] for r in pipe.search(qs)])
    a, b = rankings
    assert [[i for i, _ in r] for r in a] == [[i for i, _ in r] for r in b]
    for ra, rb in zip(a, b):
        assert [s for _, s in ra] == pytest.approx([s for _, s in rb], rel=1e-5)


def test_env_values_in_tables_reach_the_index_spec_revealed(monkeypatch, tmp_path, encoder):
    monkeypatch.setenv("SB_TEST_OPTION", "from-env")
    data = {
        "backend": {
            "connector": "qdrant",
            "mode": "edge",
            "path": str(tmp_path / "edge"),
            "index_options": {"note": "${SB_TEST_OPTION}", "plain": 1},
        }
    }
    config = config_from_dict(data, source="sb.toml")
    assert "from-env" not in repr(config.backend)
    with Pipeline.from_config(config, encoder=encoder, show_progress=False) as pipe:
        assert pipe.index_spec().options == {"note": "from-env", "plain": 1}


def test_credentials_inside_urls_are_redacted_wherever_a_config_is_shown(tmp_path):
    from sparsebridge.config import redact_url

    path = write(
        tmp_path,
        '[backend]\nconnector = "elasticsearch"\nurl = "http://elastic:S3cret@es.example:9200/x?y=1"\n'
        'hosts = ["https://u:p4ss@a:9200", "https://b:9200"]\n',
    )
    config = load_config(path)
    assert config.backend.connector_options()["url"] == "http://elastic:S3cret@es.example:9200/x?y=1"  # used as is
    shown = config.to_dict()["backend"]
    assert shown["url"] == "http://***@es.example:9200/x?y=1"
    assert shown["hosts"] == ["https://***@a:9200", "https://b:9200"]
    for text in (repr(config), repr(config.backend), str(config.to_dict())):
        assert "S3cret" not in text and "p4ss" not in text
    assert redact_url("no url here: a@b") == "no url here: a@b"


def test_device_is_checked_before_any_model_loads(tmp_path):
    import torch
    from sparsebridge.config import check_device

    check_device(config_from_dict({"model": {"device": "cpu"}}))
    check_device(config_from_dict({}))
    with pytest.raises(ConfigError, match=r"sb.toml: \[model\] device = 'gpu7': not a torch device"):
        check_device(config_from_dict({"model": {"device": "gpu7"}}, source="sb.toml"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"sb.toml: \[model\] device = 'cuda:0': this torch build .* cannot use"):
            check_device(config_from_dict({"model": {"device": "cuda:0"}}, source="sb.toml"))
