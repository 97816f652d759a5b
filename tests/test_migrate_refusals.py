"""``migrate`` refuses what cannot end well before it writes anything (issue 23, item 8 and a papercut).

Real Qdrant (qdrant-client local mode and the embedded Edge engine), the packaged SPLADE model and the
real CLI through click's runner: migrating an index into itself is one ``Error:`` line before either
side is opened (it was a RuntimeError traceback about local mode's folder lock), and a target index
that holds another index's records is refused before the first write (it was written into, then
"counts 40 -> 80" and exit 1).
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sparsebridge.cli import main
from sparsebridge.errors import ConnectorError
from sparsebridge.pipeline import Pipeline
from sparsebridge.transfer import migrate

pytest.importorskip("qdrant_edge")
from sparsebridge_qdrant import QdrantConnector  # noqa: E402


def docs(prefix: str, n: int) -> list[dict]:
    return [{"_id": f"{prefix}{i}", "text": f"{prefix} document {i} on heat transfer in nozzles"} for i in range(n)]


def pipeline(encoder, connector, index):
    return Pipeline(encoder, connector, index, model_name="packaged:splade", batch_size=8, show_progress=False)


def test_migrating_an_index_into_itself_is_one_line_before_anything_opens(encoder, tmp_path):
    folder = tmp_path / "local"
    with pipeline(encoder, QdrantConnector(mode="local", path=str(folder), index="docs"), "docs") as pipe:
        pipe.ingest(docs("a", 4))
    config = tmp_path / "local.toml"
    config.write_text(f'[backend]\nconnector = "qdrant"\nmode = "local"\npath = "{folder}"\nindex = "docs"\n')
    # The same index spelt another way: a relative path, and an option that does not move it.
    other = tmp_path / "again.toml"
    other.write_text(f'[backend]\nconnector = "qdrant"\nmode = "local"\npath = "{folder}/."\nindex = "docs"\n')
    for target in (config, other):
        done = CliRunner().invoke(main, ["migrate", "--from", str(config), "--to", str(target), "-q"])
        assert done.exit_code == 1 and isinstance(done.exception, SystemExit), done.output
        lines = done.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and "cannot be migrated into itself" in lines[0]
    with QdrantConnector(mode="local", path=str(folder), index="docs") as conn:
        assert conn.count() == 4


def test_a_target_holding_another_indexs_records_is_refused_before_writing(encoder, tmp_path):
    source = QdrantConnector(mode="edge", path=str(tmp_path / "edge"), index="a")
    target = QdrantConnector(mode="edge", path=str(tmp_path / "edge"), index="b")
    with pipeline(encoder, source, "a") as a, pipeline(encoder, target, "b") as b:
        a.ingest(docs("a", 6))
        b.ingest(docs("b", 5))
        with pytest.raises(ConnectorError, match=r"index 'b' already holds 5 records.*another index's records"):
            migrate(source, b, source_name="a", batch_size=4)
        assert target.count() == 5 and not target.get(["a0", "a5"])


def test_a_rerun_into_a_partly_migrated_target_resumes(encoder, tmp_path):
    source = QdrantConnector(mode="edge", path=str(tmp_path / "edge"), index="a")
    target = QdrantConnector(mode="edge", path=str(tmp_path / "edge"), index="b")
    with pipeline(encoder, source, "a") as a, pipeline(encoder, target, "b") as b:
        a.ingest(docs("a", 6))
        first = next(iter(source.export(list(b.vocab.tokens), batch_size=4)))
        b.ingest([{"_id": r.id, "text": r.text} for r in first])  # what an interrupted run had written
        report = migrate(source, b, source_name="a", batch_size=4)
        assert (report.target_before, report.target_count, report.counts_equal) == (len(first), 6, True)
