"""Hybrid search in Qdrant: packaged SPLADE (sparse) + all-MiniLM-L6-v2 (dense), fused by RRF.

The same queries run three ways side by side: hybrid (reciprocal rank fusion of both lists, inside
Qdrant), sparse only and dense only. Embedded Qdrant Edge by default (data in
``./sparsebridge-data/hybrid-example``, nothing to start); a Qdrant server when ``QDRANT_URL`` is set::

    python examples/hybrid_qdrant.py                          # embedded, 300 stdlib docstrings (offline)
    python examples/hybrid_qdrant.py path/to/beir/scifact "what causes fever?"

    docker compose -f docker/docker-compose.qdrant.yml up -d
    QDRANT_URL=http://127.0.0.1:6333 python examples/hybrid_qdrant.py

Both models ship with ``pip install 'sparsebridge[qdrant,models]'``; nothing is downloaded.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from sparsebridge.config import ConfigError, config_from_dict
from sparsebridge.connector import ConnectorError
from sparsebridge.index.pipeline import Pipeline

QUERIES = [
    "how do I compress data before writing it to disk",
    "run a function later in another thread",
    "check whether a string looks like an email address",
    "parse command line arguments",
]
MODES = ("hybrid", "sparse", "dense")


def backend() -> dict[str, Any]:
    options: dict[str, Any] = {"connector": "qdrant", "index": "hybrid-example"}
    if os.environ.get("QDRANT_URL"):
        options.update(mode="server", url=os.environ["QDRANT_URL"])
        if os.environ.get("QDRANT_API_KEY"):
            options["api_key"] = os.environ["QDRANT_API_KEY"]
    else:
        options.update(mode="edge", path=os.path.join(".", "sparsebridge-data", "hybrid-example"))
    return options


def run(corpus: str, queries: list[str], top_k: int = 5) -> dict[str, list[Any]]:
    """Ingest ``corpus`` with both vectors; return ``{mode: [QueryResult, ...]}`` for each mode."""
    config = config_from_dict(
        {
            "backend": backend(),
            "ingest": {"payload_fields": {"module": "keyword"}},
            "search": {"hybrid": True, "dense_model": "packaged:minilm", "fusion": "rrf", "rrf_k": 60},
        }
    )
    with Pipeline.from_config(config) as pipe:
        report = pipe.ingest(corpus)
        print(
            f"{report.written} records with sparse + dense vectors in {pipe.index!r} "
            f"({len(report.failed)} failed, {report.docs_per_second:.1f} docs/s)\n"
        )
        return {mode: pipe.search(queries, top_k=top_k, mode=mode) for mode in MODES}


def show(results: dict[str, list[Any]], width: int = 40) -> None:
    for n, query in enumerate(r.query for r in results["hybrid"]):
        print(f"query: {query}")
        print("      " + "".join(f"{name:<{width}}" for name in ("hybrid (RRF)", "sparse (SPLADE)", "dense (MiniLM)")))
        columns = [results[mode][n].hits for mode in MODES]
        for rank in range(max(len(c) for c in columns)):
            cells = []
            for hits in columns:
                if rank < len(hits):
                    name = hits[rank].id if len(hits[rank].id) <= width - 10 else hits[rank].id[: width - 13] + "..."
                    cells.append(f"{name} {hits[rank].score:.3f}".ljust(width))
                else:
                    cells.append(" " * width)
            print(f"  {rank + 1:>2}. " + "".join(cells))
        print()


if __name__ == "__main__":
    corpus = sys.argv[1] if len(sys.argv) > 1 else "stdlib:300"
    try:
        show(run(corpus, sys.argv[2:] or QUERIES))
    except (ConfigError, ConnectorError) as exc:
        sys.exit(f"error: {exc}")
