"""A process that exports the model on first load is left as a plain load leaves it (issue 24).

OpenVINO's conversion API sends usage telemetry from forked copies of the calling process and a
pool of six threads that stays; nncf does the same. Right after an in-process export those copies
were running when the OpenVINO thread count was measured, so it was fixed at one thread for the
life of the process (60% of the speed of a process that loaded the files). Each case runs the
first load (export, then load) and a plain load of the exported files in fresh interpreters, as a
user's processes would, and compares their state: the child processes alive when the backend's
thread count is decided (the budget's view), the Python threads, torch's thread settings and the
backend's. State, not speed: no timing here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import DATA_DIR, read_jsonl

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
pytest.importorskip("openvino", reason="the openvino extra is not installed")
pytest.importorskip("nncf", reason="the openvino extra is not installed")

ONNX_QINT8 = "onnx/model_qint8_avx512_vnni.onnx"
OV_INT8 = "openvino/openvino_model_qint8_quantized.xml"

# Loads one variant as a user's first run does (exports included) and prints the process's state.
PROBE = r"""
import json, os, sys, threading
from pathlib import Path
import torch
import sparsebridge.backends as backends
from sparsebridge import SparseEncoder

folder, variant, calibration = sys.argv[1:4]
me, seen = os.getpid(), {}


def children():
    found = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            found += int(stat.read_text().rpartition(")")[2].split()[1]) == me
        except (OSError, IndexError, ValueError):
            pass
    return found


measure = backends._threads


def spy():
    seen["children_at_thread_count"] = children()
    return measure()


backends._threads = spy
if variant == "openvino-int8":
    if not Path(folder, OV_INT8).is_file():
        from sparsebridge.backends import export_static_quantized_openvino_model

        source = SparseEncoder(folder, backend="openvino")
        export_static_quantized_openvino_model(source, {"subset_size": 20}, folder, dataset_name=calibration)
        del source
    model = SparseEncoder(folder, backend="openvino", model_kwargs={"file_name": OV_INT8})
elif variant == "onnx-qint8":
    if not Path(folder, ONNX_QINT8).is_file():
        from sparsebridge.backends import export_dynamic_quantized_onnx_model

        source = SparseEncoder(folder, backend="onnx")
        export_dynamic_quantized_onnx_model(source, "avx512_vnni", folder)
        del source
    model = SparseEncoder(folder, backend="onnx", model_kwargs={"file_name": ONNX_QINT8})
else:
    backend, _, precision = variant.partition("-")
    model = SparseEncoder(folder, backend=backend, precision=precision or None)
runner = model[0]._runner
if hasattr(runner, "compiled"):
    runner_threads = int(runner.compiled.get_property("INFERENCE_NUM_THREADS"))
else:
    runner_threads = runner._options.intra_op_num_threads
seen.update(
    children_after_load=children(),
    python_threads=sorted(t.name for t in threading.enumerate()),
    torch_threads=torch.get_num_threads(),
    torch_interop_threads=torch.get_num_interop_threads(),
    runner_threads=runner_threads,
)
print(json.dumps(seen))
""".replace("OV_INT8", repr(OV_INT8)).replace("ONNX_QINT8", repr(ONNX_QINT8))


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    path = tmp_path_factory.mktemp("calibration") / "train.jsonl"
    rows = read_jsonl(DATA_DIR / "cranfield" / "corpus.jsonl", 20)
    path.write_text("\n".join(json.dumps({"text": d["text"]}) for d in rows), encoding="utf-8")
    return path


def probe(folder, variant: str, calibration) -> dict:
    # The thread count fixed, so that the machine's load (other processes) cannot make the two differ.
    env = {**os.environ, "SPARSEBRIDGE_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(folder), variant, str(calibration)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("variant", ["openvino", "openvino-bf16", "openvino-int8", "onnx", "onnx-qint8"])
def test_first_load_leaves_the_state_a_plain_load_leaves(variant, splade_path, calibration, tmp_path):
    folder = tmp_path / "splade"
    shutil.copytree(splade_path, folder, ignore=shutil.ignore_patterns("onnx", "openvino"))
    first = probe(folder, variant, calibration)  # exports into the folder
    assert any((folder / sub).is_dir() for sub in ("onnx", "openvino"))
    plain = probe(folder, variant, calibration)  # loads what the first run exported
    assert plain["children_at_thread_count"] == 0
    assert first == plain
