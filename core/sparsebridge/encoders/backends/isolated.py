"""Export steps run in a child process, so the process that exports keeps none of their state.

OpenVINO's conversion API (``ov.convert_model``) and nncf send usage telemetry: each event forks a
copy of the calling process (``multiprocessing``) that tries the network for up to 3 s, from a
pool of six threads that stays. Run in-process on a first ``SparseEncoder(path,
backend="openvino")``, those copies were still running when the OpenVINO thread count was
measured, counted as foreign load; the count is fixed when the model compiles, so the process
that exported encoded on fewer threads for the rest of its life (issue 24). None of these steps
needs the torch model, so each runs in a fresh interpreter that takes its forks, threads and
memory with it when it exits; onnxruntime's quantizer and optimizer run there too, so that no
export step leaves anything behind. Only ``torch.onnx.export`` stays in-process, as it needs the
loaded model.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ...errors import SparsebridgeError

T = TypeVar("T")
# The child's program (not ``-m``: this module is already imported with its package).
_CHILD = "import sys; from sparsebridge.encoders.backends.isolated import serve; serve(sys.argv[1], sys.argv[2])"


class ExportProcessError(SparsebridgeError, RuntimeError):
    """The child process of an export step died without an answer (killed, out of memory, crashed)."""


def run_isolated(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``function(*args, **kwargs)`` run in a fresh Python process; its result, or its exception re-raised.

    ``function`` must be importable by module and name, and the arguments and result picklable.
    The child is this interpreter with this ``sparsebridge`` first on its path; it inherits the
    environment, stdout and stderr (progress and warnings show as they would in-process).
    """
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory(prefix="sparsebridge-export-") as tmp:
        call, answer = Path(tmp) / "call.pickle", Path(tmp) / "answer.pickle"
        with open(call, "wb") as fh:
            pickle.dump((function, args, kwargs), fh)
        command = [sys.executable, "-c", _CHILD, str(call), str(answer)]
        done = subprocess.run(command, env=env, check=False)
        if not answer.is_file():
            name = getattr(function, "__qualname__", repr(function))
            raise ExportProcessError(f"{name}: the export's child process exited with status {done.returncode}")
        with open(answer, "rb") as fh:
            ok, value = pickle.load(fh)
    if not ok:
        raise value
    return value


def serve(call: str, answer: str) -> None:
    """The child's side: run the pickled call and pickle back its result or exception."""
    with open(call, "rb") as fh:
        function, args, kwargs = pickle.load(fh)
    try:
        reply = (True, function(*args, **kwargs))
    except Exception as exc:  # handed back whole: the parent raises what an in-process call raised
        reply = (False, exc)
    try:
        data = pickle.dumps(reply)
    except Exception as exc:  # what does not pickle comes back as a type and a message
        value = reply[1]
        failure = f"{type(value).__name__}: {value}" if not reply[0] else f"its result does not pickle: {exc}"
        data = pickle.dumps((False, RuntimeError(failure)))
    Path(answer).write_bytes(data)
