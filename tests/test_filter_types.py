"""A filter value a typed payload field can never hold is refused, naming the type (issue 23, papercut).

``--filter year=abc`` on an integer payload field silently matched nothing. The real CLI in a
fresh folder (one ``Error:`` line), the packaged model and the embedded Qdrant Edge engine; the
declared type comes from the index metadata an ingest records, and from the config in use.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sparsebridge.cli import main
from sparsebridge.errors import FilterError
from sparsebridge.filters import check_filter_fields

pytest.importorskip("qdrant_edge")


def test_a_value_an_integer_field_cannot_hold_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SPARSEBRIDGE_CONFIG", raising=False)
    rows = [{"_id": f"d{i}", "text": f"wind tunnel report {i}", "year": 1990 + i} for i in range(4)]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "sb.toml").write_text('[ingest]\npayload_fields = { year = "integer" }\n')
    runner = CliRunner()
    done = runner.invoke(main, ["ingest", "c.jsonl", "--config", "sb.toml", "-q"])
    assert done.exit_code == 0, done.output
    hit = runner.invoke(main, ["search", "wind tunnel", "--config", "sb.toml", "--filter", "year=1991", "-q", "--json"])
    assert [h["id"] for h in json.loads(hit.stdout)[0]["hits"]] == ["d1"]
    # Without the config the index's own record of the type refuses it as well.
    for argv in (["--config", "sb.toml"], []):
        bad = runner.invoke(main, ["search", "wind tunnel", *argv, "--filter", "year=abc", "-q"])
        assert bad.exit_code == 1 and isinstance(bad.exception, SystemExit), bad.output
        lines = bad.output.strip().splitlines()
        assert lines == [
            "Error: filter value 'abc' for 'year' cannot match: the field is of type 'integer' in index "
            "'sparsebridge', which holds an integer"
        ]


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [("integer", 3, 3.5), ("integer", 3, True), ("float", 2.5, "x"), ("boolean", False, 0), ("keyword", "a", 7)],
)
def test_each_declared_type_refuses_what_it_cannot_hold(kind, good, bad):
    stored = {"payload_fields": ["f"], "payload_types": {"f": kind}}
    check_filter_fields({"f": good}, stored, "i")
    check_filter_fields({"f": [good, good]}, stored, "i")
    with pytest.raises(FilterError, match=f"of type '{kind}'"):
        check_filter_fields({"f": [good, bad]}, stored, "i")
    check_filter_fields({"f": bad}, {"payload_fields": ["f"]}, "i")  # no declared type: not refused
