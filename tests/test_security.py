"""Security defaults: no remote code, no pickles, no secrets in the open, TLS checked, config is data.

Every hostile artefact here is real: a model folder whose config asks for remote code that writes
a marker file, and weights files whose pickle writes a marker file when unpickled. Each test first
shows (where it is safe to) that the artefact does fire when loaded the unsafe way, so a passing
test means sparsebridge's loader refused it, not that the payload was inert.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import shutil
import socket
import sys
from pathlib import Path

import pytest
import torch
from sparsebridge import SparseEncoder
from sparsebridge.config import ConfigError, Secret, config_from_dict, load_config
from sparsebridge.connector import ConnectorError, IndexSpec
from sparsebridge.modules.base import LEGACY_WEIGHTS_FILE, WEIGHTS_FILE, load_module_weights
from sparsebridge.modules.dense import Dense

API_KEY = "qd-ApiKey-7f3a9c1e-DO-NOT-LEAK"
PASSWORD = "Pw-4e2b-correct-horse-DO-NOT-LEAK"
ENV_SECRET = "env-8c1d-battery-staple-DO-NOT-LEAK"
SPEC = IndexSpec("docs", metadata={"model": "m", "vocab_size": 10, "vocab_fingerprint": "f"})


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- remote code

REMOTE_CODE = """
from pathlib import Path
Path({marker!r}).write_text("remote code ran")
from transformers import BertConfig, BertForMaskedLM

class EvilConfig(BertConfig):
    model_type = "evil-bert"

class EvilForMaskedLM(BertForMaskedLM):
    config_class = EvilConfig
"""


def remote_code_folder(root: Path, splade_path: Path, marker: Path, known_type: bool) -> Path:
    """A copy of the packaged SPLADE model whose config points at ``evil.py`` through ``auto_map``.

    ``known_type=False`` also renames the model type, so only the remote code could build it.
    """
    folder = root / ("evil-known" if known_type else "evil-unknown")
    shutil.copytree(splade_path, folder)
    (folder / "evil.py").write_text(REMOTE_CODE.format(marker=str(marker)), encoding="utf-8")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForMaskedLM": "evil.EvilForMaskedLM"}
    if not known_type:
        config["model_type"] = "evil-bert"
        config["architectures"] = ["EvilForMaskedLM"]
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    tok = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    tok["auto_map"] = {"AutoTokenizer": ["evil.EvilTokenizer", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(tok), encoding="utf-8")
    return folder


@pytest.fixture
def modules_cache(tmp_path, monkeypatch):
    """Where transformers copies remote code it runs: kept inside tmp_path."""
    import transformers.dynamic_module_utils as dmu

    cache = tmp_path / "hf_modules"
    monkeypatch.setattr(dmu, "HF_MODULES_CACHE", str(cache))
    monkeypatch.setattr(sys, "path", list(sys.path))
    return cache


def test_remote_code_model_is_refused_without_running_it(tmp_path, splade_path, modules_cache):
    marker = tmp_path / "remote-code-ran"
    folder = remote_code_folder(tmp_path, splade_path, marker, known_type=False)
    with pytest.raises((ValueError, OSError)) as err:
        SparseEncoder(str(folder), device="cpu")
    assert "trust_remote_code" in str(err.value)
    assert not marker.exists()
    assert not modules_cache.exists()  # the code was not even copied for import


def test_remote_code_pointer_on_a_known_architecture_is_ignored(tmp_path, splade_path, modules_cache):
    marker = tmp_path / "remote-code-ran"
    folder = remote_code_folder(tmp_path, splade_path, marker, known_type=True)
    model = SparseEncoder(str(folder), device="cpu")  # the built-in BERT classes, not evil.py
    assert type(model.transformers_model).__module__.startswith("transformers.models.bert")
    assert model.encode_document(["remote code stays off"]).coalesce().values().numel() > 0
    assert not marker.exists()


def test_trust_remote_code_true_does_run_it(tmp_path, splade_path, modules_cache):
    # The control: the folder above really carries code that runs once the user opts in.
    marker = tmp_path / "remote-code-ran"
    folder = remote_code_folder(tmp_path, splade_path, marker, known_type=False)
    with contextlib.suppress(Exception):  # whether the evil model then builds does not matter here
        SparseEncoder(str(folder), device="cpu", trust_remote_code=True)
    assert marker.read_text() == "remote code ran"


# --------------------------------------------------------------------------- pickled weights


class _WritesMarker:
    """Unpickling this object opens (creates) a file: the stand-in for arbitrary code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def malicious_bin(path: Path, marker: Path, state: dict[str, torch.Tensor]) -> None:
    """A torch.save file holding ``state`` plus an entry whose unpickling writes ``marker``."""
    torch.save({**state, "evil": _WritesMarker(marker)}, path)


def test_the_malicious_pickle_fires_when_loaded_unsafely(tmp_path):
    marker = tmp_path / "pickle-ran"
    malicious_bin(tmp_path / "x.bin", marker, {"w": torch.zeros(1)})
    assert not marker.exists()
    torch.load(tmp_path / "x.bin", weights_only=False)
    assert marker.exists()


def test_module_weights_prefer_safetensors_and_unpickle_only_tensors(tmp_path):
    dense = Dense(4, 2)
    dense.save(tmp_path / "dense", safe_serialization=False)
    folder = tmp_path / "dense"
    assert (folder / LEGACY_WEIGHTS_FILE).is_file() and not (folder / WEIGHTS_FILE).exists()
    marker = tmp_path / "pickle-ran"
    malicious_bin(folder / LEGACY_WEIGHTS_FILE, marker, dict(dense.state_dict()))
    with pytest.raises(pickle.UnpicklingError, match="[Ww]eights only"):
        load_module_weights(Dense(4, 2), folder)
    with pytest.raises(pickle.UnpicklingError):
        Dense.load(folder)
    assert not marker.exists()
    # With a safetensors file next to it, the pickle is never opened at all.
    dense.save(tmp_path / "safe")
    shutil.copy(tmp_path / "safe" / WEIGHTS_FILE, folder / WEIGHTS_FILE)
    loaded = Dense.load(folder)
    assert torch.equal(loaded.linear.weight, dense.linear.weight)
    assert not marker.exists()


def test_transformer_pickle_weights_never_run_code(tmp_path, splade_path):
    from safetensors.torch import load_file

    folder = tmp_path / "pickled-model"
    shutil.copytree(splade_path, folder)
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "pickle-ran"
    malicious_bin(folder / "pytorch_model.bin", marker, state)
    with pytest.raises(Exception) as err:  # noqa: B017 - transformers' own error type; checked below
        SparseEncoder(str(folder), device="cpu")
    assert "weights" in str(err.value).lower() or "unpickl" in str(err.value).lower(), err.value
    assert not marker.exists()

    # The same weights without the payload load fine from the pickle: only the payload was refused.
    torch.save(state, folder / "pytorch_model.bin")
    model = SparseEncoder(str(folder), device="cpu")
    assert model.encode_document(["pickles carry only tensors"]).coalesce().values().numel() > 0


# --------------------------------------------------------------------------- secrets


def _assert_hidden(texts: list[str], *secrets: str) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text, f"secret leaked into: {text[:300]!r}"


def test_qdrant_server_api_key_stays_hidden(caplog):
    from sparsebridge_qdrant import QdrantConnector

    caplog.set_level(logging.DEBUG)
    url = f"http://127.0.0.1:{closed_port()}"
    conn = QdrantConnector(mode="server", url=url, api_key=API_KEY, timeout=2, max_retries=0, index="docs")
    assert conn._backend.client._client._rest_args["headers"]["api-key"] == API_KEY  # it is used
    errors = []
    for call in (lambda: conn.ensure_index(SPEC), conn.count, conn.index_metadata):
        with pytest.raises(ConnectorError) as err:
            call()
        errors.append(err.value)
    assert all(url in str(e) for e in errors)
    texts = [repr(conn), str(conn)] + [str(e) for e in errors] + [repr(e) for e in errors]
    texts += [caplog.text] + [r.getMessage() for r in caplog.records]
    assert "***" in repr(conn)
    _assert_hidden(texts, API_KEY)
    # With the key in the URL too (user:password@host), neither shows.
    conn2 = QdrantConnector(mode="server", url=f"http://user:{PASSWORD}@127.0.0.1:{closed_port()}", timeout=2)
    with pytest.raises(ConnectorError) as err2:
        conn2.ensure_index(SPEC)
    _assert_hidden([repr(conn2), str(err2.value), caplog.text], PASSWORD)


@pytest.mark.parametrize("kind", ["elasticsearch", "opensearch"])
def test_lucene_connector_secrets_stay_hidden_through_the_pipeline_config(kind, encoder, monkeypatch, caplog, tmp_path):
    # test_bulk_faults.py covers the connectors directly; this goes through a config with ${ENV}.
    from sparsebridge.components import connector_from_config
    from sparsebridge.pipeline import Pipeline

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("SB_TEST_SECRET", ENV_SECRET)
    url = f"https://127.0.0.1:{closed_port()}"
    creds = (
        'api_key = "${SB_TEST_SECRET}"' if kind == "elasticsearch" else 'username = "u"\npassword = "${SB_TEST_SECRET}"'
    )
    path = tmp_path / "sb.toml"
    path.write_text(f'[backend]\nconnector = "{kind}"\nurl = "{url}"\nindex = "docs"\n{creds}\n', encoding="utf-8")
    config = load_config(path)
    secret_key = "api_key" if kind == "elasticsearch" else "password"
    assert isinstance(config.backend.options[secret_key], Secret)
    # The backend is checked first (a closed port fails at once), through the same secret-holding client.
    with pytest.raises(ConnectorError) as err:
        Pipeline.from_config(config, encoder=encoder, show_progress=False)
    conn = connector_from_config(config)
    assert (conn.api_key if kind == "elasticsearch" else conn.basic_auth[1]) == ENV_SECRET  # the real value arrives
    texts = [repr(config), str(config.to_dict()), repr(config.backend), repr(conn), str(err.value), caplog.text]
    texts += [r.getMessage() for r in caplog.records]
    _assert_hidden(texts, ENV_SECRET)


def test_config_secrets_from_env_never_show(monkeypatch, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("SB_TEST_SECRET", ENV_SECRET)
    monkeypatch.setenv("SB_TEST_HOST", "db.internal")
    data = {
        "backend": {
            "connector": "qdrant",
            "mode": "server",
            "url": "https://${SB_TEST_HOST}:6333",
            "api_key": "${SB_TEST_SECRET}",
            "headers": {"x-token": "${SB_TEST_SECRET}"},
        }
    }
    config = config_from_dict(data, source="sb.toml")
    texts = [repr(config), str(config), str(config.to_dict()), json.dumps(config.to_dict(), default=str)]
    texts += [repr(config.backend), f"{config.backend.options['api_key']}", str(config.backend.options)]
    _assert_hidden(texts, ENV_SECRET)
    assert config.backend.connector_options()["api_key"] == ENV_SECRET
    assert config.backend.connector_options()["headers"] == {"x-token": ENV_SECRET}
    # Values read from the environment are secret even under an innocent key name.
    assert "db.internal" not in repr(config.backend)
    with pytest.raises(TypeError):
        pickle.dumps(config.backend.options["api_key"])
    # A wrong value under a secret key: the error names the key, never the value.
    bad = {"backend": {"connector": "qdrant", "index_options": "${SB_TEST_SECRET}"}}
    with pytest.raises(ConfigError) as err:
        config_from_dict(bad, source="sb.toml")
    assert "index_options" in str(err.value) and "***" in str(err.value)
    _assert_hidden([str(err.value), caplog.text], ENV_SECRET)


def test_index_options_table_may_read_the_environment(monkeypatch):
    # Library bug (reported): _Section._get wraps the whole interpolated table in a Secret, and
    # _Section.table then rejects it: "[backend] index_options = ***: expected a table".
    monkeypatch.setenv("SB_TEST_SECRET", ENV_SECRET)
    data = {"backend": {"connector": "qdrant", "index_options": {"token": "${SB_TEST_SECRET}"}}}
    config = config_from_dict(data, source="sb.toml")
    assert "token" in config.backend.index_options
    assert ENV_SECRET not in repr(config.backend) and ENV_SECRET not in str(config.to_dict())


# --------------------------------------------------------------------------- TLS


def _es_node(conn):
    return conn._new_client().transport.node_pool.all()[0]


def _os_connection(conn):
    return conn._new_client().transport.connection_pool.connections[0]


def _qdrant_ssl(conn):
    client = conn._backend.client._client
    return client._rest_args["verify"], client.openapi_client.client._client._transport._pool._ssl_context


def test_tls_is_verified_by_default_with_an_optional_ca_bundle(tmp_path):
    import ssl

    import certifi
    from sparsebridge_elasticsearch import ElasticsearchConnector
    from sparsebridge_opensearch import OpenSearchConnector
    from sparsebridge_qdrant import QdrantConnector

    bundle = tmp_path / "ca.pem"  # a real CA bundle: the clients parse it when they are built
    shutil.copy(certifi.where(), bundle)
    url = "https://search.example:9200"

    node = _es_node(ElasticsearchConnector(url=url, api_key=API_KEY))
    assert node.config.verify_certs is True and node.pool.cert_reqs == "CERT_REQUIRED"
    node = _es_node(ElasticsearchConnector(url=url, api_key=API_KEY, ca_certs=str(bundle)))
    assert node.config.verify_certs is True and node.config.ca_certs == str(bundle)
    assert _es_node(ElasticsearchConnector(url=url, verify_certs=False)).pool.cert_reqs == "CERT_NONE"  # opt-out only

    conn = _os_connection(OpenSearchConnector(url=url, username="u", password=PASSWORD))
    assert conn.use_ssl and conn.pool.cert_reqs == "CERT_REQUIRED"
    conn = _os_connection(OpenSearchConnector(url=url, username="u", password=PASSWORD, ca_certs=str(bundle)))
    assert conn.pool.cert_reqs == "CERT_REQUIRED" and conn.pool.ca_certs == str(bundle)

    verify, ctx = _qdrant_ssl(QdrantConnector(mode="server", url="https://q.example:6333", api_key=API_KEY))
    assert verify is True and ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    verify, ctx = _qdrant_ssl(QdrantConnector(mode="server", url="https://q.example:6333", verify=str(bundle)))
    # The bundle reaches httpx as an SSL context that holds its certificates and checks them.
    assert isinstance(verify, ssl.SSLContext) and verify.cert_store_stats()["x509_ca"] > 100
    assert ctx is verify and ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    with pytest.raises(ConnectorError, match="cannot read the CA bundle"):
        QdrantConnector(mode="server", url="https://q.example:6333", verify=str(tmp_path / "missing.pem"))


def test_tls_defaults_hold_through_a_config_file(tmp_path):
    from sparsebridge import plugins

    for kind in ("elasticsearch", "opensearch"):
        path = tmp_path / f"{kind}.toml"
        path.write_text(f'[backend]\nconnector = "{kind}"\nurl = "https://h:9200"\n', encoding="utf-8")
        options = load_config(path).backend.connector_options()
        conn = plugins.get_connector_class(kind)(**options)
        assert conn.verify_certs is True


# --------------------------------------------------------------------------- config values are data

HOSTILE_VALUES = [
    "$(touch {marker})",
    "`touch {marker}`",
    "; touch {marker}",
    "__import__('os').system('touch {marker}')",
    "{{__import__('pathlib').Path('{marker}').touch()}}",
    "%(touch {marker})s",
    "$${{touch}} {marker}",
]


@pytest.mark.parametrize("template", HOSTILE_VALUES)
def test_config_values_stay_literal_strings(template, tmp_path, monkeypatch):
    marker = tmp_path / "config-ran-code"
    value = template.format(marker=marker)
    expected = value.replace("$${", "${")  # the one documented escape
    monkeypatch.setenv("SB_HOSTILE", value)
    toml = tmp_path / "sb.toml"
    toml.write_text(
        "[model]\n"
        f"name_or_path = {json.dumps(value)}\n"
        "[backend]\n"
        'connector = "qdrant"\n'
        'mode = "edge"\n'
        f"path = {json.dumps(value)}\n"
        f"index = {json.dumps('idx')}\n"
        'collection_hint = "${SB_HOSTILE}"\n'
        "[ingest]\n"
        f"id_field = {json.dumps(value)}\n"
        f"text_fields = [{json.dumps(value)}]\n",
        encoding="utf-8",
    )
    config = load_config(toml)
    assert config.model.name_or_path == expected
    assert config.backend.options["path"] == expected
    assert config.ingest.id_field == expected and config.ingest.text_fields == (expected,)
    # A value read from the environment is taken as is: no second round of interpolation or shell.
    assert config.backend.connector_options()["collection_hint"] == value
    assert not marker.exists()
    assert not (Path.cwd() / marker.name).exists()
    assert os.environ["SB_HOSTILE"] == value
