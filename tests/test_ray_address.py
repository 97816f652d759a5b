"""``ingest --engine ray``: a bad cluster address is one line and quick, and a small run prints no
Ray warning (issue 23, item 10 and a papercut).

``--address not-a-host:abc`` was a ValueError traceback from ``ray.init`` and ``ray://127.0.0.1:1``
a ConnectionError traceback after about 30 s of retries; both are now one ``Error:`` line before
Ray starts. A fixed pool of more encode actors than the corpus has read blocks made Ray Data warn
next to our report; the pool now grows from one actor up to --workers. Real Ray (a local
cluster), the packaged model, real Qdrant Edge, a closed loopback port for the silent cluster.
"""

from __future__ import annotations

import json
import re
import warnings

import pytest
from click.testing import CliRunner
from lucene_testkit import closed_port

ray = pytest.importorskip("ray")
pytest.importorskip("qdrant_edge")
from sparsebridge.cli import main  # noqa: E402
from sparsebridge.errors import ClusterError  # noqa: E402
from sparsebridge.ray import check_address  # noqa: E402


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SPARSEBRIDGE_CONFIG", raising=False)
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"_id": f"d{i}", "text": f"doc {i} on flow"}) + "\n" for i in range(20)))
    return path


@pytest.mark.parametrize(
    ("address", "said"),
    [
        ("not-a-host:abc", "is not a Ray address (Port could not be cast to integer"),
        ("ray://", "is not a Ray address; use HOST:PORT"),
        ("nosuchhost.invalid:6379", "host 'nosuchhost.invalid' is not known"),  # .invalid never resolves
        (f"ray://127.0.0.1:{closed_port()}", "no Ray cluster answers at"),
    ],
)
def test_a_bad_cluster_address_is_one_line_before_ray_starts(corpus, address, said):
    with pytest.raises(ClusterError, match=re.escape(said)):
        check_address(address)
    done = CliRunner().invoke(main, ["ingest", str(corpus), "--engine", "ray", "--address", address, "-q"])
    assert done.exit_code == 1 and isinstance(done.exception, SystemExit), done.output
    lines = [line for line in done.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and said in lines[0], done.output
    assert not ray.is_initialized()


def test_a_small_ray_ingest_prints_no_ray_warning(corpus, tmp_path):
    from sparsebridge.config import load_config
    from sparsebridge.ray import ingest_with_ray

    config_file = tmp_path / "sb.toml"
    config_file.write_text(f'[model]\ndevice = "cpu"\n[backend]\nconnector = "qdrant"\npath = "{tmp_path / "edge"}"\n')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = ingest_with_ray(load_config(config_file), str(corpus), workers=2, show_progress=False)
    assert (report.documents, report.written, report.failed) == (20, 20, {})
    # What Python's default filters show a user: everything but the deprecation family.
    hidden = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)
    shown = [w for w in caught if not issubclass(w.category, hidden)]
    from_ray = [f"{w.category.__name__}: {w.message}" for w in shown if "/ray/" in w.filename.replace("\\", "/")]
    assert from_ray == []
