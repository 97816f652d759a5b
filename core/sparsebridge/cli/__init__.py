"""The ``sparsebridge`` command line.

::

    sparsebridge ingest stdlib:                      # Python's own docstrings, offline
    sparsebridge search "parse command line arguments"
    sparsebridge ingest data/scifact --config es.toml
    sparsebridge eval data/cranfield                 # nDCG@10, MRR@10, Recall@100
    sparsebridge encode "some text" --top-k 10       # JSONL of token weights
    sparsebridge connectors                          # installed backends
    sparsebridge info                                # model summary and sparsity
    sparsebridge register                            # the engine encodes text through `serve`

Every command takes ``--config`` (default: ``$SPARSEBRIDGE_CONFIG``, else ``./sparsebridge.toml``
when present, else the built-in defaults) and ``--json``. Progress goes to stderr. A user error
(any :class:`~sparsebridge.errors.SparsebridgeError`: bad config, unknown connector, unreachable
backend, missing file or model) ends with one ``Error:`` line and exit status 1, never a traceback;
Ctrl-C ends with exit status 130 (an interrupted ingest first prints the report of what it wrote).
All of this is handled in one place, :class:`_Commands`, so every command gets it.

The frame (``main``, options, error handling) is in ``app.py``; each command group has a module of
its own, imported here so that it registers with ``main``.
"""

from . import cache, encode, evaluate, info, ingest, register, search, serve, transfer  # noqa: F401  (register the commands)
from .app import main, printable
from .ingest import _print_ingest_report, interrupt_line  # noqa: F401  (the ingest report's lines)

__all__ = ["interrupt_line", "main", "printable"]
