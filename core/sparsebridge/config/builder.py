"""The one builder from a config to its parts: the sparse encoder, the query encoder (checked
against ``[model] query_side``), the dense encoder for hybrid search, the vocabulary, and the
connector.

Every model sparsebridge loads goes through here: :func:`build_encoders` for the pipeline, the
``encode`` / ``info`` commands and the server, and a :class:`ModelChoice` (what to load, read from
the config once, picklable) for the Ray workers, which load their own copy. So ``[model] device``
and ``precision`` (and the thread budget, which the encoders take from ``SPARSEBRIDGE_NUM_THREADS``
at encode time) apply to every model load alike. Importing this module imports no torch: the
encoders load on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..connector import Connector, ConnectorError
from ..defaults import resolve_model
from ..errors import ModelLoadError, SparsebridgeError
from ..vectors.vocabulary import Vocabulary
from . import Config, ConfigError, check_device, connector_class


@dataclass(frozen=True)
class ModelChoice:
    """One model to load and how: what a config says about it, read in one place.

    ``kind`` is ``"sparse"`` (a SparseEncoder, in ``precision``) or ``"dense"`` (the hybrid search
    model, which runs fp32). Plain data, so it can be shipped to a Ray actor that loads its own copy.
    """

    name_or_path: str
    device: str | None = None
    precision: str = "fp32"
    kind: str = "sparse"

    def load(self) -> Any:
        """The loaded encoder."""
        if self.kind == "dense":
            return load_dense_encoder(self.name_or_path, self.device)
        return load_sparse_encoder(self.name_or_path, self.device, self.precision)


def sparse_model(config: Config) -> ModelChoice:
    """The sparse model ``[model]`` names, on its device, in its precision."""
    m = config.model
    return ModelChoice(m.name_or_path, m.device, m.precision, "sparse")


def dense_model(config: Config) -> ModelChoice | None:
    """The dense model ``[search] dense_model`` names, on ``[model] device``; None unless
    ``[search] hybrid`` is on."""
    if not config.search.hybrid:
        return None
    return ModelChoice(config.search.dense_model, config.model.device, kind="dense")


@dataclass
class Encoders:
    """The loaded encoders of a config, with the ``[model]`` settings that go with them."""

    encoder: Any
    query_encoder: Any
    dense_encoder: Any | None
    model_name: str
    dense_model_name: str | None
    batch_size: int
    max_active_dims: int | None
    precision: str

    def encoding_options(self) -> dict[str, Any]:
        """The keywords of :class:`~sparsebridge.index.encoding.Encoding` (and of the Pipeline)."""
        return {
            "model_name": self.model_name,
            "query_encoder": self.query_encoder,
            "dense_encoder": self.dense_encoder,
            "dense_model_name": self.dense_model_name,
            "batch_size": self.batch_size,
            "max_active_dims": self.max_active_dims,
        }


def build_encoders(
    config: Config, *, encoder: Any | None = None, dense_encoder: Any | None = None, queries_only: bool = False
) -> Encoders:
    """Load what the config names: the sparse model (``encoder`` if given), its query side checked
    against ``[model] query_side``, and the dense model when ``[search] hybrid`` is on
    (``dense_encoder`` if given). ``[model] device`` is checked before anything loads.

    ``queries_only``: only queries will be encoded (a search without explanations), so an
    inference-free model's query side is read without torch (:func:`static_query_encoder`) where it
    can be, and the model itself is not loaded (nor is ``[model] device`` checked: nothing runs there).
    """
    if encoder is None and queries_only and dense_model(config) is None:
        encoder = static_query_encoder(config)
        light = encoder is not None
    else:
        light = False
    if not light:
        check_device(config)
    if encoder is None:
        encoder = sparse_model(config).load()
    query_encoder = load_query_encoder(config.model.query_side, encoder, config)
    dense = dense_model(config)
    if dense_encoder is None and dense is not None:
        dense_encoder = dense.load()
    return Encoders(
        encoder=encoder,
        query_encoder=query_encoder,
        dense_encoder=dense_encoder,
        model_name=config.model.name_or_path,
        dense_model_name=config.search.dense_model if dense_encoder is not None else None,
        batch_size=config.model.batch_size,
        max_active_dims=config.model.max_active_dims,
        precision=config.model.precision,
    )


def static_query_encoder(config: Config) -> Any | None:
    """The query side of the configured inference-free model, read from its folder without torch
    (:class:`~sparsebridge.encoders.static_query.StaticQueryEncoder`); None unless ``[model]
    query_side = "inference-free"``, the precision is fp32, no ``max_active_dims`` is set and the model
    is a folder of that layout."""
    from pathlib import Path

    from ..encoders.static_query import StaticQueryEncoder

    m = config.model
    if m.query_side != "inference-free" or m.precision != "fp32" or m.max_active_dims is not None:
        return None
    path = Path(resolve_model(config.model.name_or_path))
    return StaticQueryEncoder.from_folder(path) if path.is_dir() else None


def load_sparse_encoder(name_or_path: str, device: str | None = None, precision: str = "fp32") -> Any:
    """The SPLADE encoder named in the config (``packaged:splade`` by default)."""
    from ..encoders.encoder import SparseEncoder

    return _load(SparseEncoder, name_or_path, device=device, precision=precision)


def build_sparse_encoder(config: Config) -> Any:
    """The sparse encoder ``[model]`` names, on its device (checked first), in its precision."""
    check_device(config)
    return sparse_model(config).load()


def build_vocabulary(config: Config) -> Vocabulary:
    """The configured model's vocabulary, read from its ``tokenizer.json`` with the ``tokenizers``
    library when the model is a SPLADE model in a folder (no torch, no transformers, no weights read:
    what the index side needs to check vectors); from the loaded model otherwise (a Hub id, a
    router, a CSR model). Both give the same ids, tokens and fingerprint, and the same output
    dimension (the masked LM's ``vocab_size``)."""
    from pathlib import Path

    path = Path(resolve_model(config.model.name_or_path))
    dimension = _splade_dimension(path)
    if dimension is not None and (path / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        tokens = [tokenizer.id_to_token(i) for i in range(tokenizer.get_vocab_size(with_added_tokens=True))]
        return Vocabulary.from_tokens(tokens, config.model.name_or_path, dimension)
    return Vocabulary.of(build_sparse_encoder(config), config.model.name_or_path)


_SPLADE_MODULES = ("Transformer", "MLMTransformer", "SpladePooling")


def _splade_dimension(path: Any) -> int | None:
    """The output dimension of a SPLADE model folder (its masked LM's ``vocab_size``): a bare
    ``*ForMaskedLM`` checkpoint, or a sentence-transformers folder of a transformer at its root and
    SPLADE pooling; None for anything else (it is then loaded to be asked)."""
    import json

    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        modules_file = path / "modules.json"
        modules = json.loads(modules_file.read_text(encoding="utf-8")) if modules_file.is_file() else None
    except (OSError, ValueError):
        return None  # unreadable: the model loader says what is wrong with it
    if not any(str(a).endswith("ForMaskedLM") for a in config.get("architectures") or ()):
        return None
    if modules is not None:
        types = [str(m.get("type", "")).rpartition(".")[2] for m in modules]
        if not modules or modules[0].get("path", "") not in ("", ".") or not set(types) <= set(_SPLADE_MODULES):
            return None
    size = config.get("vocab_size")
    return size if isinstance(size, int) and size > 0 else None


def _load(encoder_cls: Any, name_or_path: str, **options: Any) -> Any:
    """Build an encoder; a model that cannot be read (missing, uncached while offline, not a model
    folder) is a ModelLoadError naming it, in one line, whichever library noticed first."""
    try:
        return encoder_cls(resolve_model(name_or_path), **options)
    except SparsebridgeError:
        raise
    except (OSError, ValueError) as exc:
        cause = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise ModelLoadError(f"cannot load model {name_or_path!r}: {cause}") from exc


def load_dense_encoder(name_or_path: str, device: str | None = None) -> Any:
    """The dense encoder for hybrid search (``packaged:minilm`` by default)."""
    from ..encoders.dense_encoder import DenseEncoder

    return _load(DenseEncoder, name_or_path, device=device)


def has_inference_free_queries(encoder: Any) -> bool:
    """Whether ``encoder.encode_query`` skips the transformer: a Router whose query route holds a
    ``SparseStaticEmbedding`` (one weight per vocabulary token, looked up, no forward pass)."""
    from ..encoders.static_query import StaticQueryEncoder

    if isinstance(encoder, StaticQueryEncoder):
        return True  # it is the query route of such a model
    from ..encoders.modules import Router, SparseStaticEmbedding

    modules = encoder.modules() if hasattr(encoder, "modules") else ()
    for module in modules:
        if isinstance(module, Router):
            try:
                route = module.sub_modules[module.route("query")]
            except (ValueError, KeyError):
                return False
            return any(isinstance(m, SparseStaticEmbedding) for m in route.modules())
    return False


def load_query_encoder(side: str, encoder: Any, config: Config) -> Any:
    """The object that encodes queries, checked against ``[model] query_side``.

    ``"inference-free"`` needs a model that encodes queries without a transformer pass (see
    :func:`has_inference_free_queries`); ``"full"`` needs one that runs it. Either way queries go
    through ``encode_query``: the setting states, and checks, what the model does.
    """
    free = has_inference_free_queries(encoder)
    where = f"{config.source}: [model] query_side = {side!r}"
    if side == "inference-free" and not free:
        raise ConfigError(
            f"{where}: the model {config.model.name_or_path!r} has no inference-free query route (a Router "
            f"whose query route is a SparseStaticEmbedding); use query_side = 'full', or an inference-free model"
        )
    if side == "full" and free:
        raise ConfigError(
            f"{where}: the model {config.model.name_or_path!r} encodes queries inference-free (a "
            f"SparseStaticEmbedding query route); set query_side = 'inference-free'"
        )
    return encoder


def dense_dimension(dense_encoder: Any) -> int:
    """The dense model's output size (asked of the model, else measured on one probe text)."""
    for name in ("get_embedding_dimension", "get_sentence_embedding_dimension"):
        method = getattr(dense_encoder, name, None)
        if method is not None:
            dim = method()
            if dim:
                return int(dim)
    return int(np.asarray(dense_encoder.encode_document(["dimension probe"])).shape[-1])


def connector_from_config(config: Config) -> Connector:
    """The connector named in ``[backend]``, given its options and the index name (as ``index``,
    so it can count, search and read metadata before or without ``ensure_index``)."""
    connector_cls = connector_class(config.backend, config.source)
    options = config.backend.connector_options()
    options.setdefault("index", config.backend.index)
    try:
        return connector_cls(**options)
    except (TypeError, ValueError, ConnectorError) as exc:
        raise ConfigError(
            f"{config.source}: [backend] options for connector {config.backend.connector!r}: {exc}"
        ) from exc
