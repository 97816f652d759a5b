"""Inference backends besides torch: ONNX Runtime (``backend="onnx"``) and OpenVINO (``"openvino"``).

Both read sentence-transformers' file layout and run the transformer up to the vocabulary
projection; our ``SpladePooling`` does the projection and pooling (see ``graph_cut``). The export
helpers carry sentence-transformers' names and signatures (``sparsebridge.encoders.export``, also
imported as ``sparsebridge.backends``).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from ...errors import ModelLoadError
from ..runtime.threads import settled_threads

logger = logging.getLogger(__name__)

__all__ = ["load_runner"]


def _threads() -> int:
    """Intra-op threads for a backend session: fixed if asked, else the cores free while it loads."""
    return settled_threads()


def _package_dirs() -> list[str]:
    import site
    import sysconfig

    dirs = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    dirs.update(getattr(site, "getsitepackages", list)())
    return sorted(dirs)


def _export_folder(folder: Path, subfolder: str) -> Path:
    """Where a first-load export goes: the model folder if we may write there, else a temporary one.

    Folders of installed packages (the packaged models) are never written to.
    """
    target = folder / subfolder
    try:
        resolved = folder.resolve()
        if any(resolved.is_relative_to(Path(p).resolve()) for p in _package_dirs()):
            raise PermissionError(f"{folder} belongs to an installed package")
        target.mkdir(parents=True, exist_ok=True)
        probe = target / ".sparsebridge-write-test"
        probe.touch()
        probe.unlink()
        return target
    except OSError:
        temp = Path(tempfile.mkdtemp(prefix="sparsebridge-export-")) / subfolder
        logger.warning("%s is not writable; exporting to %s (save the model to keep it)", folder, temp)
        temp.mkdir(parents=True)
        return temp


def load_runner(
    backend: str,
    folder: Path,
    options: dict[str, Any],
    torch_model: nn.Module,
    input_names: list[str],
    precision: str,
):
    """The ONNX / OpenVINO runner for the model in ``folder``, exporting it on first load."""
    from . import onnx as onnx_backend

    file_name = options.get("file_name")
    if options.get("subfolder"):
        file_name = str(Path(options["subfolder"], file_name or ""))
    if backend == "onnx":
        path = onnx_backend.find_model_file(folder, file_name, onnx_backend.SUBFOLDER, onnx_backend.DEFAULT_FILE)
        if path is None or options.get("export"):
            path = _missing_or_export(folder, file_name, "onnx", onnx_backend.DEFAULT_FILE, options)
            path = onnx_backend.export_onnx(torch_model, input_names, path)
        return onnx_backend.OnnxRunner(path, threads=_threads())
    from . import openvino as ov_backend

    path = onnx_backend.find_model_file(folder, file_name, ov_backend.SUBFOLDER, ov_backend.DEFAULT_FILE)
    if path is None or options.get("export"):
        path = _missing_or_export(folder, file_name, "openvino", ov_backend.DEFAULT_FILE, options)
        from .isolated import run_isolated

        with tempfile.TemporaryDirectory() as tmp:
            onnx_file = onnx_backend.export_onnx(torch_model, input_names, Path(tmp) / "model.onnx")
            # In a child process: the conversion's telemetry forks, still running when it returned,
            # counted as foreign load in the thread count below (fixed for the process's life).
            path = run_isolated(ov_backend.convert_from_onnx, onnx_file, path)
    ov_config = options.get("ov_config") or {}
    return ov_backend.OpenVinoRunner(path, precision=precision, threads=_threads(), config=ov_config)


def _missing_or_export(folder: Path, file_name: str | None, backend: str, default: str, options: dict) -> Path:
    """The path a first-load export writes; a named file that does not exist is an error instead."""
    if file_name and Path(file_name).name != default and not options.get("export"):
        found = sorted(str(p.relative_to(folder)) for p in folder.glob(f"**/*{Path(default).suffix}"))
        raise ModelLoadError(
            f"{folder}: no {backend} file {file_name!r}; found: {', '.join(found) or 'none'} "
            f"(omit file_name to export {backend}/{default})"
        )
    logger.warning("no %s model in %s: exporting %s/%s", backend, folder, backend, default)
    return _export_folder(folder, backend) / default
