"""Every command a new user broke (issue 9), run as a real ``sparsebridge`` process from a fresh
directory: one ``Error:`` line on stderr and a non-zero exit, or the right result; never a traceback.

Each case runs ``python -m sparsebridge.cli`` with this interpreter and the test's PYTHONPATH, the
packaged SPLADE model and embedded Qdrant Edge (no test double). No network: the Hub is offline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from lucene_testkit import closed_port

pytest.importorskip("qdrant_edge")

TIMEOUT = 300  # a guard against a hang only; the machine may be busy


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SPARSEBRIDGE_CONFIG"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env["HF_HUB_OFFLINE"] = "1"
    env["HF_HOME"] = str(tmp_path / "hf-home")  # an empty Hub cache
    env.update(extra)
    return env


def run(tmp_path: Path, *args: object, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sparsebridge.cli", *map(str, args)],
        cwd=tmp_path,
        env=cli_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def stderr_lines(done: subprocess.CompletedProcess[str] | str) -> list[str]:
    text = done if isinstance(done, str) else done.stderr
    # Progress bars redraw with \r; only what is left on each line counts.
    return [line.rsplit("\r", 1)[-1] for line in text.splitlines() if line.rsplit("\r", 1)[-1].strip()]


def one_error(done: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert done.returncode == code, (done.returncode, done.stderr)
    lines = stderr_lines(done)
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    return lines[0]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(tmp_path: Path, name: str, rows: list[dict]) -> Path:
    return write(tmp_path, name, "".join(json.dumps(r) + "\n" for r in rows))


# --------------------------------------------------------------------------- models and devices


def test_missing_model_folder(tmp_path):
    config = write(tmp_path, "m.toml", '[model]\nname_or_path = "/nonexistent"\n')
    jsonl(tmp_path, "two.jsonl", [{"_id": "a", "text": "one"}, {"_id": "b", "text": "two"}])
    for command in (["info"], ["ingest", "two.jsonl"], ["encode", "x"]):
        line = one_error(run(tmp_path, *command, "--config", config, "-q" if command[0] != "info" else "--json"))
        assert line == "Error: model folder '/nonexistent' does not exist"


def test_uncached_hub_model_offline(tmp_path):
    config = write(tmp_path, "m.toml", '[model]\nname_or_path = "nobody-here/no-such-model"\n')
    line = one_error(run(tmp_path, "info", "--config", config))
    assert "'nobody-here/no-such-model' is not in the cache" in line


def test_a_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "empty-model").mkdir()
    config = write(tmp_path, "m.toml", f'[model]\nname_or_path = "{tmp_path / "empty-model"}"\n')
    line = one_error(run(tmp_path, "info", "--config", config))
    assert "empty-model" in line and "modules.json" in line


def test_device_this_build_lacks(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this torch has CUDA: device = 'cuda' is valid here")
    config = write(tmp_path, "d.toml", '[model]\ndevice = "cuda"\n')
    line = one_error(run(tmp_path, "info", "--config", config))
    assert line.startswith(f"Error: {config}: [model] device = 'cuda': this torch build")
    line = one_error(run(tmp_path, "search", "x", "--config", write(tmp_path, "e.toml", '[model]\ndevice = "gpu7"\n')))
    assert "[model] device = 'gpu7': not a torch device" in line


# --------------------------------------------------------------------------- corpora and queries


def test_stdlib_zero_and_an_empty_corpus(tmp_path):
    line = one_error(run(tmp_path, "ingest", "stdlib:0", "-q"))
    assert "'stdlib:0' asks for no documents" in line
    write(tmp_path, "empty.jsonl", "\n  \n")
    line = one_error(run(tmp_path, "ingest", "empty.jsonl", "-q"))
    assert line == "Error: corpus empty.jsonl is empty: no documents to ingest"
    # Nothing was created: the index does not exist.
    line = one_error(run(tmp_path, "count"))
    assert "'sparsebridge' does not exist" in line


def test_queries_line_without_id_names_file_and_line(tmp_path):
    beir = tmp_path / "mini"
    (beir / "qrels").mkdir(parents=True)
    jsonl(beir, "corpus.jsonl", [{"_id": "d1", "text": "wings and lift"}, {"_id": "d2", "text": "heat transfer"}])
    jsonl(beir, "queries.jsonl", [{"_id": "q1", "text": "lift"}, {"text": "no id here"}])
    write(beir, "qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    line = one_error(run(tmp_path, "eval", beir, "-q"))
    assert f"{beir / 'queries.jsonl'}:2: no '_id'" in line


def test_bom_on_line_one_is_not_an_error(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"_id": "a", "text": "the lift of a wing"}\n{"_id": "b", "text": "heat"}\n')
    done = run(tmp_path, "ingest", path, "-q", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["written"] == 2 and report["failed"] == {}


def test_single_document_that_fails_to_encode_is_reported(tmp_path):
    # A lone surrogate (valid JSON escape, not valid Unicode) fails the encoder; alone in its batch
    # it used to abort the whole ingest with a traceback.
    write(tmp_path, "one.jsonl", '{"_id": "a", "text": "\\ud800"}\n')
    done = run(tmp_path, "ingest", "one.jsonl", "-q")
    assert one_error(done) == "Error: 1 documents failed; fix them and run the same command again"
    line = next(line for line in done.stdout.splitlines() if line.startswith("  failed a: "))
    assert line.startswith("  failed a: encoding failed: ") and "lone surrogate '\\ud800'" in line


def test_lone_surrogate_id_is_refused_by_line_and_the_report_prints(tmp_path):
    # The echo of this document's own failure used to die with a UnicodeEncodeError.
    write(tmp_path, "ids.jsonl", '{"_id": "\\udc80x", "text": 5}\n{"_id": "fine", "text": "fine"}\n')
    done = run(tmp_path, "ingest", "ids.jsonl", "-q")
    assert one_error(done) == "Error: 1 documents failed; fix them and run the same command again"
    assert "failed ids.jsonl:1: id field '_id' holds a lone surrogate at position 0" in done.stdout
    as_json = run(tmp_path, "ingest", "ids.jsonl", "-q", "--json")
    one_error(as_json)
    assert list(json.loads(as_json.stdout)["failed"]) == ["ids.jsonl:1"]


def test_printable_escapes_lone_surrogates():
    from sparsebridge.cli import printable

    assert printable("id \udc80x caf\u00e9") == "id \\udc80x caf\u00e9"
    assert json.loads(printable(json.dumps({"\udc80": "\ud800"}, ensure_ascii=False))) == {"\udc80": "\ud800"}


def test_query_that_is_not_utf8_is_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable.encode(), b"-m", b"sparsebridge.cli", b"search", b"caf\xff", b"-q"],
        cwd=tmp_path,
        env=cli_env(tmp_path),
        capture_output=True,
        timeout=TIMEOUT,
    )
    done = subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())
    assert one_error(done) == "Error: query 1 ('caf\\udcff') is not valid UTF-8 text"


def test_ids_other_than_strings_and_integers_are_refused_by_line(tmp_path):
    rows = [
        {"_id": "s", "text": "a string id"},
        {"_id": 7, "text": "an integer id"},
        {"_id": True, "text": "a boolean id"},
        {"_id": 1.5, "text": "a float id"},
        {"_id": {"a": 1}, "text": "an object id"},
        {"_id": [1], "text": "a list id"},
    ]
    jsonl(tmp_path, "ids.jsonl", rows)
    done = run(tmp_path, "ingest", "ids.jsonl", "-q", "--json")
    one_error(done)
    report = json.loads(done.stdout)
    assert report["written"] == 2
    expected = {
        f"ids.jsonl:{n}": kind for n, kind in ((3, "a boolean"), (4, "a float"), (5, "an object"), (6, "a list"))
    }
    assert set(report["failed"]) == set(expected)
    for ref, kind in expected.items():
        assert report["failed"][ref].startswith(f"id field '_id' is {kind} (")
        assert report["failed"][ref].endswith("ids must be strings or integers")
    found = json.loads(run(tmp_path, "search", "an integer id", "-q", "--json", "-k", "5").stdout)
    assert {h["id"] for h in found[0]["hits"]} == {"s", "7"}


def test_truncated_documents_are_counted_and_mentioned(tmp_path):
    long_text = " ".join(["boundary layer separation on a swept wing"] * 120)  # far past 512 tokens
    jsonl(tmp_path, "long.jsonl", [{"_id": "long", "text": long_text}, {"_id": "short", "text": "short text"}])
    done = run(tmp_path, "ingest", "long.jsonl", "-q")
    assert done.returncode == 0, done.stderr
    assert "1 documents are longer than the model's max_seq_length (512 tokens)" in done.stdout
    assert "--split-passages" in done.stdout
    split = json.loads(run(tmp_path, "ingest", "long.jsonl", "-q", "--json", "--split-passages").stdout)
    assert split["truncated"] == 0 and split["records"] > 2


# --------------------------------------------------------------------------- search, count


def test_filter_on_a_field_that_is_not_a_payload_field_is_refused(tmp_path):
    jsonl(tmp_path, "docs.jsonl", [{"_id": "w", "text": "wing", "lang": "en"}, {"_id": "f", "text": "aile"}])
    config = write(tmp_path, "sb.toml", '[ingest]\npayload_fields = { lang = "keyword" }\n')
    assert run(tmp_path, "ingest", "docs.jsonl", "-q", "--config", config).returncode == 0
    line = one_error(run(tmp_path, "search", "wing", "--filter", "nosuch=1", "-q", "--config", config))
    assert line.startswith("Error: filter field 'nosuch' is not a payload field of index 'sparsebridge'")
    assert "payload fields: lang" in line
    hits = json.loads(run(tmp_path, "search", "wing", "--filter", "lang=en", "-q", "--json", "--config", config).stdout)
    assert [h["id"] for h in hits[0]["hits"]] == ["w"]


def test_count_command(tmp_path):
    jsonl(tmp_path, "docs.jsonl", [{"_id": str(i), "text": f"document {i}"} for i in range(5)])
    assert run(tmp_path, "ingest", "docs.jsonl", "-q").returncode == 0
    done = run(tmp_path, "count")
    assert done.returncode == 0 and done.stdout.strip() == "5 records in index 'sparsebridge' (qdrant)"
    assert json.loads(run(tmp_path, "count", "--json").stdout) == {
        "index": "sparsebridge",
        "backend": "qdrant",
        "count": 5,
    }


# --------------------------------------------------------------------------- secrets and backends


def test_credentials_in_urls_are_redacted_in_info(tmp_path):
    config = write(
        tmp_path,
        "es.toml",
        '[backend]\nconnector = "elasticsearch"\nurl = "http://elastic:S3cretPASS@127.0.0.1:9200"\n',
    )
    text = run(tmp_path, "info", "--config", config)
    as_json = run(tmp_path, "info", "--json", "--config", config)
    assert text.returncode == as_json.returncode == 0, text.stderr + as_json.stderr
    for out in (text.stdout, text.stderr, as_json.stdout, as_json.stderr):
        assert "S3cretPASS" not in out and "elastic:" not in out
    assert json.loads(as_json.stdout)["config"]["backend"]["url"] == "http://***@127.0.0.1:9200"
    assert "url='http://***@127.0.0.1:9200'" in text.stdout


def _loads_no_model(tmp_path: Path, config: Path, *argv: str) -> tuple[str, list[str]]:
    """Run the CLI in a fresh interpreter; (the error, the heavy modules it had imported by then)."""
    probe = (
        "import sys\n"
        "from sparsebridge.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:], standalone_mode=False)\n"
        "except Exception as exc:\n"
        "    print('error:', exc)\n"
        "print('LOADED', sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, *argv, "--config", str(config)],
        cwd=tmp_path,
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    lines = done.stdout.strip().splitlines()
    return "\n".join(lines[:-1]), json.loads(lines[-1].split(" ", 1)[1].replace("'", '"'))


@pytest.mark.parametrize("backend", ["elasticsearch", "opensearch", "qdrant"])
def test_unreachable_backend_fails_before_the_model_loads(tmp_path, backend):
    port = closed_port()
    option = 'mode = "server"\nurl' if backend == "qdrant" else "url"
    config = write(tmp_path, "b.toml", f'[backend]\nconnector = "{backend}"\n{option} = "http://127.0.0.1:{port}"\n')
    jsonl(tmp_path, "two.jsonl", [{"_id": "a", "text": "one"}, {"_id": "b", "text": "two"}])
    for command in (["ingest", "two.jsonl", "-q"], ["search", "x", "-q"], ["count"]):
        error, loaded = _loads_no_model(tmp_path, config, *command)
        assert f"127.0.0.1:{port}" in error and loaded == [], (command, error, loaded)
    line = one_error(run(tmp_path, "ingest", "two.jsonl", "-q", "--config", config))
    assert f"127.0.0.1:{port}" in line


def test_prefer_grpc_reports_the_grpc_address_and_api_key_over_http_warns_in_one_line(tmp_path):
    http, grpc = closed_port(), closed_port()
    config = write(
        tmp_path,
        "q.toml",
        f'[backend]\nconnector = "qdrant"\nmode = "server"\nurl = "http://127.0.0.1:{http}"\n'
        f'prefer_grpc = true\ngrpc_port = {grpc}\napi_key = "k3y-secret"\n',
    )
    done = run(tmp_path, "count", "--config", config)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    warning, error = stderr_lines(done)
    assert warning == (
        f"Warning: the Qdrant api_key is sent unencrypted to http://127.0.0.1:{grpc} (gRPC); use an https:// url"
    )
    assert error.startswith("Error: ") and f"127.0.0.1:{grpc} (gRPC)" in error and f":{http}" not in error
    assert "k3y-secret" not in done.stderr


# --------------------------------------------------------------------------- Ctrl-C


def _interrupted_ingest(tmp_path: Path, *extra: str) -> tuple[int, str, str]:
    """Start an ingest, send SIGINT once it has written a few batches, return (status, stdout, stderr)."""
    rows = [{"_id": f"d{i}", "text": f"document {i} on wings, heat and boundary layers"} for i in range(3000)]
    jsonl(tmp_path, "many.jsonl", rows)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sparsebridge.cli", "ingest", "many.jsonl", "--batch-size", "4", *extra],
        cwd=tmp_path,
        env=cli_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A child of a background job inherits an ignored SIGINT; give it the default, as in a terminal.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(iter(lambda: proc.stderr.read(1), "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + TIMEOUT
    # The progress bar shows documents done; wait for a few batches (16 documents each) to be written.
    # The poll interval only paces the reading; the deadline guards a hang and fails as one.
    reached = False
    while not reached and time.monotonic() < deadline and proc.poll() is None:
        shown = "".join(err).replace("\r", "\n").splitlines()
        done = [int(s.split("|")[-1].split("/")[0].strip()) for s in shown if s.startswith("ingest:") and "/" in s]
        reached = bool(done) and done[-1] >= 48
        if not reached:
            time.sleep(0.05)
    if not reached and proc.poll() is None:
        proc.kill()
        proc.wait()
        pytest.fail(f"the ingest wrote fewer than 48 documents in {TIMEOUT} s: hung")
    assert proc.poll() is None, "the ingest ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out = proc.stdout.read()
    proc.wait(TIMEOUT)
    reader.join(10)
    return proc.returncode, out, "".join(err)


@pytest.mark.slow
def test_ctrl_c_exits_130_with_the_report_of_what_was_written(tmp_path):
    code, out, err = _interrupted_ingest(tmp_path, "--json")
    assert code == 130 and "Traceback" not in err and "Aborted!" not in err, err
    report = json.loads(out)
    assert report["interrupted"] is True and 0 < report["written"] < 3000
    lines = [line for line in stderr_lines(err) if not line.startswith("ingest:")]
    assert lines == [
        f"Error: interrupted with {report['written']} records written to index 'sparsebridge' of the "
        f"{report['documents']} documents read; run the same command again to write the rest (nothing is duplicated)"
    ]
    # Everything acknowledged is stored; the same command again completes the index.
    stored = json.loads(run(tmp_path, "count", "--json").stdout)["count"]
    assert stored >= report["written"]
    again = run(tmp_path, "ingest", "many.jsonl", "-q", "--json")
    assert again.returncode == 0 and json.loads(run(tmp_path, "count", "--json").stdout)["count"] == 3000


@pytest.mark.slow
def test_ctrl_c_text_report(tmp_path):
    code, out, err = _interrupted_ingest(tmp_path)
    assert code == 130 and "Traceback" not in err and "Aborted!" not in err, err
    assert out.startswith("interrupted: ") and "documents read" in out and "records encoded, of which" in out
    lines = [line for line in stderr_lines(err) if not line.startswith("ingest:")]
    assert len(lines) == 1 and lines[0].startswith("Error: interrupted with "), err
