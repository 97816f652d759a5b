"""Property-based tests of the corpus reader, the pipeline's accounting, and the config loader.

* Corpus: random JSONL files (objects, other JSON values, broken lines, blank lines) give one
  item per non-blank line; every broken line is an InvalidDocument naming ``file:line``.
* Pipeline (real encoder, embedded Qdrant Edge): whatever the documents look like (odd ids of any
  JSON type, missing or non-string text, broken lines), every input document is either written
  (and readable by its id) or listed in the report with a reason. Nothing is silently dropped.
* Config: random tables, keys and values (wrong types, unknown keys, ``${VAR}`` edge cases) give a
  Config or a ConfigError naming the file; ``${VAR}`` expands exactly as documented.

``CASES`` counts the examples run per property (benchmarks/faults.py reports it).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sparsebridge.config import Config, ConfigError, config_from_dict, load_config
from sparsebridge.corpus import InvalidDocument, read_jsonl

CASES: Counter[str] = Counter()
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FUZZ_SLOW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

text_chars = st.characters(exclude_categories=("Cs",), exclude_characters="\r\n")
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(text_chars, max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)  # noqa: E501

# --------------------------------------------------------------------------- JSONL lines

good_line = st.dictionaries(st.text(text_chars, max_size=8), json_values, max_size=4).map(
    lambda d: ("object", json.dumps(d, ensure_ascii=False))
)
other_json = json_values.filter(lambda v: not isinstance(v, dict)).map(lambda v: ("not-object", json.dumps(v)))
broken_line = st.text(text_chars, min_size=1, max_size=30).filter(lambda s: s.strip()).map(lambda s: ("maybe", s))
blank_line = st.sampled_from(["", " ", "\t", "   \t "]).map(lambda s: ("blank", s))
any_line = st.one_of(good_line, other_json, broken_line, blank_line)


def _expected(kind: str, line: str) -> str:
    if kind != "maybe":
        return kind
    try:
        value = json.loads(line)
    except ValueError:
        return "broken"
    return "object" if isinstance(value, dict) else "not-object"


@FUZZ
@given(lines=st.lists(any_line, max_size=15))
def test_jsonl_reader_reports_every_bad_line_by_number(lines):
    CASES["jsonl reader"] += 1
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "docs.jsonl"
        path.write_text("".join(line + "\n" for _, line in lines), encoding="utf-8")
        items = list(read_jsonl(path))
    wanted = [(n, _expected(kind, line)) for n, (kind, line) in enumerate(lines, 1) if kind != "blank"]
    assert len(items) == len(wanted)
    for item, (lineno, kind) in zip(items, wanted):
        if kind == "object":
            assert isinstance(item, dict)
        else:
            assert isinstance(item, InvalidDocument)
            assert item.ref == f"docs.jsonl:{lineno}" and item.reason


def test_invalid_utf8_is_reported_by_line(tmp_path):
    # A line that is not UTF-8 is one InvalidDocument like any other broken line, not the end of the
    # file (read_jsonl used to raise a UnicodeDecodeError with a byte offset and no line number).
    path = tmp_path / "docs.jsonl"
    path.write_bytes(b'{"_id": "1", "text": "a"}\n{"_id": "2", "text": "caf\xe9"}\n{"_id": "3", "text": "c"}\n')
    items = list(read_jsonl(path))
    assert [type(i).__name__ for i in items] == ["dict", "InvalidDocument", "dict"]
    assert items[1].ref == "docs.jsonl:2" and "UTF-8" in items[1].reason


# --------------------------------------------------------------------------- pipeline accounting

odd_text = st.one_of(
    st.text(text_chars, max_size=60),
    st.sampled_from(["", "   ", "\u200b", "مرحبا بالعالم", "👩🏽‍💻 emoji", "\x00\x1b[0m", "[CLS] [SEP]"]),
)
doc_ids = st.one_of(
    st.text(text_chars, min_size=1, max_size=12),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
fields = st.fixed_dictionaries(
    {},
    optional={
        "title": st.one_of(odd_text, st.none(), st.integers()),
        "text": st.one_of(odd_text, odd_text, st.none(), st.integers(), st.lists(st.text(max_size=3), max_size=2)),
        "year": st.integers(1900, 2030),
    },
)


@st.composite
def corpora(draw):
    """JSONL lines: documents with ids of any JSON type (distinct as strings), and broken lines."""
    n = draw(st.integers(1, 10))
    ids = draw(st.lists(doc_ids, min_size=n, max_size=n, unique_by=lambda x: str(x)))
    lines = []
    for doc_id in ids:
        kind = draw(st.sampled_from(["doc", "doc", "doc", "no-id", "broken"]))
        body = draw(fields)
        if kind == "broken":
            lines.append(draw(st.sampled_from(['{"_id": "x", "text": ', "not json", "[1, 2]", '"a string"'])))
        elif kind == "no-id":
            # Without an id the text's hash is the id; keep those texts distinct from each other.
            lines.append(json.dumps({**body, "text": f"unique text {len(lines)} " + str(body.get("text"))}))
        else:
            lines.append(json.dumps({"_id": doc_id, **body}, ensure_ascii=False))
    return lines


@pytest.fixture(scope="module")
def edge_root(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz-edge")


_runs = itertools.count()


@FUZZ_SLOW
@given(lines=corpora())
def test_every_document_is_written_or_reported(encoder, edge_root, lines):
    from sparsebridge.pipeline import Pipeline
    from sparsebridge_qdrant import QdrantConnector

    CASES["pipeline accounting"] += 1
    run = next(_runs)
    path = edge_root / f"corpus-{run}.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    conn = QdrantConnector(mode="edge", path=str(edge_root / "edge"), index=f"fuzz{run}")
    written_ids, failed_refs = _expected_outcome(lines, path.name)
    with Pipeline(encoder, conn, f"fuzz{run}", batch_size=4, show_progress=False) as pipe:
        report = pipe.ingest(str(path))
        found = pipe.connector.get(sorted(written_ids)) if written_ids else {}
        count = pipe.count()
        pipe.connector.drop()
    # Every line is accounted for exactly once, as the input alone says: readable by its id, or
    # failed under its id (or its file:line when it has none) with a reason.
    assert report.documents == len(lines)
    assert set(found) == written_ids
    assert count == len(written_ids) == report.written
    assert set(report.failed) == failed_refs, (written_ids, report.failed)
    assert all(isinstance(r, str) and r for r in report.failed.values())


def _expected_outcome(lines: list[str], name: str) -> tuple[set[str], set[str]]:
    """(record ids that must be written, failure keys that must be reported), from the lines alone:
    a line that is not a JSON object fails at its ``file:line``; an id that is not a string or an
    integer fails there too; a title or text that is present but not a string, or no text at all,
    fails under the id (``file:line`` without one); the rest is written under its id, or the hash
    of its text when it has none."""
    from sparsebridge.pipeline import text_id

    written, failed = set(), set()
    for n, line in enumerate(lines, 1):
        ref = f"{name}:{n}"
        try:
            doc = json.loads(line)
        except ValueError:
            failed.add(ref)
            continue
        if not isinstance(doc, dict):
            failed.add(ref)
            continue
        raw = doc.get("_id")
        if raw is not None and (isinstance(raw, bool) or not isinstance(raw, (str, int))):
            failed.add(ref)
            continue
        doc_id = str(raw) if raw is not None and str(raw) != "" else None
        wrong_type = any(doc.get(f) is not None and not isinstance(doc.get(f), str) for f in ("title", "text"))
        parts = [doc[f].strip() for f in ("title", "text") if isinstance(doc.get(f), str) and doc[f].strip()]
        if wrong_type or not parts:
            failed.add(doc_id or ref)
            continue
        written.add(doc_id or text_id(" ".join(parts)))
    return written, failed


def test_duplicate_ids_are_reported_not_silently_replaced(encoder, tmp_path):
    # Duplicate ids (and the collision of 1, a JSON number, with "1") are reported, not silently
    # replaced: the pipeline used to report documents 4, written 2, failed 0.
    from sparsebridge.pipeline import Pipeline
    from sparsebridge_qdrant import QdrantConnector

    docs = [
        {"_id": "a", "text": "first version"},
        {"_id": "a", "text": "second version"},
        {"_id": 1, "text": "number one"},
        {"_id": "1", "text": "string one"},
    ]
    conn = QdrantConnector(mode="edge", path=str(tmp_path / "edge"), index="dupes")
    with Pipeline(encoder, conn, "dupes", show_progress=False) as pipe:
        report = pipe.ingest(docs)
        count = pipe.count()
    assert count == 2
    assert report.written + len(report.failed) == report.documents == 4, report.to_dict()
    assert all("duplicate id" in reason for reason in report.failed.values())


# --------------------------------------------------------------------------- config

ENV = {"SB_FZ_A": "alpha", "SB_FZ_NUM": "42", "SB_FZ_BOOL": "true", "SB_FZ_REF": "${SB_FZ_A}", "SB_FZ_EMPTY": ""}
SECTION_KEYS = {
    "model": ["name_or_path", "device", "batch_size", "max_active_dims", "query_side"],
    "backend": ["connector", "index", "sparse_field", "dense_field", "index_options", "mode", "path", "api_key"],
    "ingest": ["id_field", "text_fields", "payload_fields", "split_passages", "passage_tokens", "passage_overlap"],
    "search": ["top_k", "hybrid", "fusion", "rrf_k", "prefetch_limit", "dense_model"],
}
ENV_REFS = [
    "${SB_FZ_A}", "${SB_FZ_NUM}", "${SB_FZ_BOOL}", "${SB_FZ_REF}", "${SB_FZ_EMPTY}", "${SB_FZ_UNSET}", "${}",
    "${1BAD}", "${A B}", "$${SB_FZ_A}", "$$", "$", "${SB_FZ_A", "}${", "${SB_FZ_A}${SB_FZ_NUM}", "${${SB_FZ_A}}",
]  # fmt: skip
config_values = st.recursive(
    st.one_of(
        st.none().map(lambda _: "qdrant"),
        st.booleans(),
        st.integers(-(2**64), 2**64),
        st.floats(),
        st.text(max_size=10),
        st.sampled_from(ENV_REFS),
        st.lists(st.sampled_from(ENV_REFS), max_size=3).map("".join),
        st.sampled_from(["qdrant", "elasticsearch", "rrf", "dbsf", "full", "inference-free", "keyword", "cpu"]),
        st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 1, 1)),
        st.dates(),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["title", "x", "token"]), inner),
    max_leaves=6,
)


@st.composite
def config_dicts(draw):
    sections = draw(st.lists(st.sampled_from([*SECTION_KEYS, "extra", "Model"]), unique=True, max_size=5))
    data = {}
    for name in sections:
        if draw(st.integers(0, 9)) == 0:
            data[name] = draw(config_values)  # a section that is not a table
            continue
        keys = draw(st.lists(st.sampled_from(SECTION_KEYS.get(name, []) + ["unknown_key", "Index"]), unique=True))
        data[name] = {k: draw(config_values) for k in keys}
    return data


@pytest.fixture
def fuzz_env(monkeypatch):
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SB_FZ_UNSET", raising=False)


@FUZZ
@given(data=config_dicts(), check=st.booleans())
def test_config_loader_gives_a_config_or_a_config_error(fuzz_env, data, check):
    CASES["config loader (dicts)"] += 1
    try:
        config = config_from_dict(data, source="fuzz.toml", check_connector=check)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("fuzz.toml: ") or message.startswith("default connector"), message
        assert "\n" not in message
        return
    assert isinstance(config, Config)
    for section in ("model", "backend", "ingest", "search"):
        assert f"'{section}'" in str(config.to_dict().keys())


# The documented ${VAR} rules, piece by piece: (raw text, what it becomes) or an error.
PIECES = [
    ("${SB_FZ_A}", "alpha"),
    ("${SB_FZ_NUM}", "42"),
    ("${SB_FZ_REF}", "${SB_FZ_A}"),  # a value from the environment is not expanded again
    ("$${", "${"),
    ("$${SB_FZ_A}", "${SB_FZ_A}"),
    ("${SB_FZ_UNSET}", ConfigError),
    ("${}", ConfigError),
    ("${1BAD}", ConfigError),
    ("${A-B}", ConfigError),
]
literal = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="${}"), max_size=6)


@FUZZ
@given(parts=st.lists(st.one_of(st.sampled_from(PIECES), literal.map(lambda s: (s, s))), min_size=1, max_size=6))
def test_env_interpolation_follows_the_documented_rules(fuzz_env, parts):
    raw = "".join(p for p, _ in parts)
    failing = any(e is ConfigError for _, e in parts)
    expected = None if failing else "".join(e for _, e in parts)
    assume(failing or expected.strip())  # an empty id_field is a different (type) error
    CASES["config ${VAR} rules"] += 1  # counted once it runs: examples assume() discards are not cases
    try:
        config = config_from_dict({"ingest": {"id_field": raw}}, source="fuzz.toml")
    except ConfigError as exc:
        assert failing, f"{raw!r} should give {expected!r}, got error {exc}"
        assert str(exc).startswith("fuzz.toml: [ingest] id_field")
        return
    assert not failing, f"{raw!r} should have failed, got {config.ingest.id_field!r}"
    assert config.ingest.id_field == expected


@FUZZ
@given(text=st.text(st.characters(exclude_categories=("Cs",)), max_size=200))
def test_any_toml_text_gives_a_config_or_a_config_error(fuzz_env, text):
    CASES["config loader (TOML text)"] += 1
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sb.toml"
        path.write_text(text, encoding="utf-8")
        try:
            config = load_config(path)
        except ConfigError as exc:
            assert str(exc).startswith(str(path)) and "\n" not in str(exc)
            return
    assert isinstance(config, Config)


def test_os_environ_is_left_alone(fuzz_env):
    before = dict(os.environ)
    config_from_dict({"ingest": {"id_field": "${SB_FZ_A}"}, "backend": {"connector": "qdrant", "x": "${SB_FZ_NUM}"}})
    assert dict(os.environ) == before
