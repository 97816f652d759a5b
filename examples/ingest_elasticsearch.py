"""Ingest a corpus into Elasticsearch with the packaged SPLADE model, then query it.

Start the server from docker/ and load its password, then run the example::

    docker compose -f docker/docker-compose.elasticsearch.yml --env-file docker/.env up -d
    set -a; . docker/.env; set +a
    python examples/ingest_elasticsearch.py                       # 300 Python stdlib docstrings (offline)
    python examples/ingest_elasticsearch.py path/to/beir/scifact "what causes fever?"   # any corpus, queries

Connection: ``ELASTICSEARCH_URL`` (default ``http://localhost:9200``), ``ELASTICSEARCH_USERNAME``
(default ``elastic``) and ``ELASTIC_PASSWORD`` (or ``ELASTICSEARCH_PASSWORD``), or
``ELASTICSEARCH_API_KEY``. The index is ``sparsebridge-example``; run the example again and it
updates the same records (ids are stable), it never duplicates them.
"""

from __future__ import annotations

import os
import sys

from sparsebridge.config import ConfigError, config_from_dict
from sparsebridge.connector import ConnectorError
from sparsebridge.index.pipeline import Pipeline

QUERIES = [
    "parse command line arguments",
    "read a gzip compressed file",
    "send an email over SMTP",
]


def backend() -> dict:
    options = {
        "connector": "elasticsearch",
        "index": "sparsebridge-example",
        "url": os.environ.get("ELASTICSEARCH_URL", "http://localhost:9200"),
    }
    if os.environ.get("ELASTICSEARCH_API_KEY"):
        options["api_key"] = os.environ["ELASTICSEARCH_API_KEY"]
    else:
        password = os.environ.get("ELASTIC_PASSWORD") or os.environ.get("ELASTICSEARCH_PASSWORD")
        if password:
            options["username"] = os.environ.get("ELASTICSEARCH_USERNAME", "elastic")
            options["password"] = password
    if os.environ.get("ELASTICSEARCH_CA_CERTS"):
        options["ca_certs"] = os.environ["ELASTICSEARCH_CA_CERTS"]
    if os.environ.get("ELASTICSEARCH_VERIFY_CERTS", "").lower() in ("0", "false", "no"):
        options["verify_certs"] = False
    return options


def main(corpus: str, queries: list[str]) -> int:
    # The same settings a sparsebridge.toml would hold; only [backend] names Elasticsearch.
    config = config_from_dict({"backend": backend(), "ingest": {"payload_fields": {"title": "text"}}})
    with Pipeline.from_config(config) as pipe:
        report = pipe.ingest(corpus)
        print(
            f"ingested {report.documents} documents into {pipe.index!r}: {report.written} written, "
            f"{len(report.failed)} failed, {report.retries} retries ({report.docs_per_second:.1f} docs/s)"
        )
        for doc_id, reason in list(report.failed.items())[:10]:
            print(f"  failed {doc_id}: {reason}")
        print(f"the index now holds {pipe.count()} records\n")

        for result in pipe.search(queries, top_k=3, explain=True):
            print(f"query: {result.query}")
            for note in result.notes:
                print(f"  note: {note}")
            for rank, hit in enumerate(result.hits, 1):
                tokens = ", ".join(f"{m.token} {m.product:.2f}" for m in hit.explanation.matches[:6])
                print(f"  {rank}. {hit.id}  score {hit.score:.3f}  matched: {tokens}")
            print()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "stdlib:300", sys.argv[2:] or QUERIES))
    except (ConfigError, ConnectorError) as exc:
        sys.exit(f"error: {exc}")
