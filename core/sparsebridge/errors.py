"""One family of errors: everything sparsebridge raises on purpose derives from ``SparsebridgeError``.

The CLI catches this base and prints its message as one line; a library user can do the same. Each
class also derives from the builtin a caller would have caught before (``ValueError``, ``OSError``,
``KeyError``, ``RuntimeError``), so existing ``except`` clauses keep working.
"""

from __future__ import annotations

__all__ = [
    "AdapterError",
    "CacheError",
    "ClusterError",
    "ConfigError",
    "ConnectorError",
    "CorpusError",
    "DeviceError",
    "DatasetError",
    "EncodeArgumentError",
    "EncodeInputTypeError",
    "EmbeddingShapeError",
    "EvaluationError",
    "FilterError",
    "HubError",
    "IngestInterrupted",
    "IncompleteIndexError",
    "IndexMismatchError",
    "MergeError",
    "MissingDependencyError",
    "ModelLoadError",
    "ModelMismatchError",
    "ModelNotFoundError",
    "ModuleImportError",
    "SparsebridgeError",
    "SparsebridgeWarning",
    "UnknownConnectorError",
    "UntrustedModuleError",
    "WorkerError",
]


class SparsebridgeError(Exception):
    """The base of every error sparsebridge raises on purpose; its message is one readable line."""


class SparsebridgeWarning(UserWarning):
    """A warning of ours; the CLI prints it as one ``Warning:`` line, without a source line."""


class ConfigError(SparsebridgeError, ValueError):
    """The config is wrong; the message names the file, the key, the bad value and what is allowed."""


class ModelLoadError(SparsebridgeError, OSError):
    """A model could not be found or read; the message names the model and the cause."""


class ModelNotFoundError(ModelLoadError, FileNotFoundError):
    """A packaged model was asked for but its package is not installed."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else super().__str__()


class UntrustedModuleError(ModelLoadError, ValueError):
    """A saved model names a module class outside sentence-transformers and sparsebridge (custom
    code), and ``trust_remote_code`` was not given; sentence-transformers' wording, on one line."""


class ModuleImportError(SparsebridgeError, ImportError):
    """A saved model names a module class sparsebridge cannot provide; the message starts with
    sentence-transformers' wording for a class it cannot import and lists the classes we have."""


class CorpusError(SparsebridgeError, ValueError):
    """The corpus cannot be read at all (missing file, unknown format)."""


class FilterError(SparsebridgeError, ValueError):
    """A search filter is malformed or names a field the index does not hold; raised the same way on
    every backend (see ``sparsebridge.filters``)."""


class ConnectorError(SparsebridgeError, RuntimeError):
    """A backend request failed as a whole (unreachable, refused, wrong mapping...)."""


class IndexMismatchError(ConnectorError):
    """An existing index does not match the spec (field type, dense size, vocabulary)."""


class IncompleteIndexError(ConnectorError):
    """An index holds only part of the corpus it is evaluated on (and ingesting the rest was not allowed)."""


class ModelMismatchError(IndexMismatchError):
    """An index was built by another model (weights, pooling, max_active_dims or query side) than the
    one in use; the message names each difference and ``--allow-model-change``."""


class UnknownConnectorError(SparsebridgeError, KeyError):
    """No installed connector plugin has the asked-for name; the message lists the installed ones."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name, self.known = name, known
        listed = ", ".join(known) if known else "none (install an extra such as sparsebridge[qdrant])"
        super().__init__(f"unknown connector {name!r}; installed connectors: {listed}")

    def __str__(self) -> str:
        return self.args[0]


class WorkerError(SparsebridgeError, RuntimeError):
    """A pool worker failed or died; the message carries the worker's own error where it sent one."""


class DatasetError(SparsebridgeError, ValueError):
    """A vector dataset (Parquet) cannot be read or extended: missing, not ours, or made by another
    model than the one it is used with; the message names the file and the fix."""


class CacheError(SparsebridgeError, OSError):
    """The encode cache cannot be used (a corrupt file, one written by another program); the message
    names the file and how to clear it."""


class EncodeArgumentError(SparsebridgeError, ValueError):
    """An encoder method got an argument it cannot use (unknown keyword, bad ``top_k``, mixed inputs...)."""


class DeviceError(SparsebridgeError, RuntimeError, AssertionError):
    """A device this torch build cannot use (``cuda:7`` on a CPU build, an unknown device string).
    Also a RuntimeError and an AssertionError: what torch raised for these before."""


class EmbeddingShapeError(SparsebridgeError, ValueError, RuntimeError):
    """Embeddings whose shapes cannot be compared (another dimension, or pairs of unequal counts);
    also a RuntimeError, what torch raised for them before."""


class EncodeInputTypeError(SparsebridgeError, TypeError):
    """An encoder method got inputs of the wrong type; the message names the item."""


class EvaluationError(SparsebridgeError, ValueError):
    """An evaluator was given unusable data (no query with a relevant document, bad cut-offs...)."""


class HubError(SparsebridgeError, OSError):
    """An upload to the Hugging Face Hub failed; the message names the repository and the cause."""


class AdapterError(SparsebridgeError, ValueError):
    """A PEFT adapter cannot be added, loaded, set or saved; the message names the adapter and the cause."""


class MergeError(SparsebridgeError, ValueError):
    """Models cannot be merged (``SparseEncoder.merge``): too few, incompatible modules, configs,
    vocabularies or state keys, or merge settings mergekit refuses; the message names the model and module."""


class ClusterError(SparsebridgeError, ConnectionError):
    """A Ray cluster address is malformed, unknown or does not answer; the message names the address."""


class MissingDependencyError(SparsebridgeError, ImportError):
    """An optional package a feature needs is not installed (or too old); the message names the extra."""


class IngestInterrupted(KeyboardInterrupt):
    """Ctrl-C during an ingest, carrying the ``report`` of what was written before it.

    Not an error of ours: it derives from ``KeyboardInterrupt`` so that an interrupt still stops
    every caller that does not look for it; the CLI prints the report and exits with status 130.
    """

    def __init__(self, report: object) -> None:
        super().__init__("interrupted")
        self.report = report
