"""Export helpers with sentence-transformers' names and signatures, written on onnxruntime's own
tools (no optimum): graph optimization levels O1-O4, dynamic int8 quantization, and static int8
quantization of the OpenVINO model (with nncf). Files land where sentence-transformers puts them
(``onnx/model_O3.onnx``, ``onnx/model_qint8_avx512_vnni.onnx``,
``openvino/openvino_model_qint8_quantized.xml``), so either library loads them.

Only the ONNX export of the torch model runs in the calling process; the optimizer, the quantizers
and nncf run in a child process (``isolated.py``), so the process that exports keeps none of
their threads or memory and encodes as fast as one that loads the files (issue 24).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from ..errors import ModelLoadError, SparsebridgeError
from .backends.isolated import run_isolated

QUANTIZATION_TARGETS = ("arm64", "avx2", "avx512", "avx512_vnni")
OPTIMIZATION_LEVELS = ("O1", "O2", "O3", "O4")
# reduce_range (7-bit weights) avoids int16 saturation on CPUs without VNNI, as onnxruntime advises.
_REDUCE_RANGE = {"arm64": False, "avx2": True, "avx512": True, "avx512_vnni": False}


class ExportError(SparsebridgeError, ValueError):
    """An export was asked for with options we cannot honour; the message says which."""


def _local_only(push_to_hub: bool, create_pr: bool) -> None:
    if push_to_hub or create_pr:
        raise ExportError("push_to_hub/create_pr are not supported: export to a folder, then upload it yourself")


def _transformer(model: Any):
    from .base_encoder import first_module
    from .modules.transformer import Transformer

    module = first_module(model, Transformer) if hasattr(model, "modules") else None
    if module is None or module.transformer_task != "fill-mask":
        raise ExportError("export needs a sparsebridge SparseEncoder with a masked-LM Transformer module")
    return module


def _source_onnx(model: Any, folder: Path) -> Path:
    """The fp32 ONNX graph to start from: the one the model runs, else onnx/model.onnx (exported if missing)."""
    from .backends import onnx as onnx_backend

    module = _transformer(model)
    runner = getattr(module, "_runner", None)
    if isinstance(runner, onnx_backend.OnnxRunner) and "qint8" not in runner.path.name:
        return runner.path
    existing = folder / onnx_backend.SUBFOLDER / onnx_backend.DEFAULT_FILE
    if existing.is_file():
        return existing
    return onnx_backend.export_onnx(module.auto_model, module.tokenizer.model_input_names, existing)


def export_optimized_onnx_model(
    model: Any,
    optimization_config: Literal["O1", "O2", "O3", "O4"] | dict[str, Any],
    model_name_or_path: str,
    push_to_hub: bool = False,
    create_pr: bool = False,
    file_suffix: str | None = None,
) -> None:
    """Write ``onnx/model_<O-level>.onnx``: onnxruntime's transformer graph optimizations.

    O1: basic graph optimizations; O2: plus transformer fusions (attention, layer norm, GELU);
    O3: plus the GELU approximation; O4 adds fp16, which needs a GPU and is refused here. A dict is
    passed to ``onnxruntime.transformers.optimizer.optimize_model`` as keyword arguments.
    """
    from onnxruntime.transformers.fusion_options import FusionOptions

    _local_only(push_to_hub, create_pr)
    folder = Path(model_name_or_path)
    source = _source_onnx(model, folder)
    config = _transformer(model).auto_model.config
    if isinstance(optimization_config, dict):
        kwargs, suffix = dict(optimization_config), file_suffix or "optimized"
    elif optimization_config in ("O1", "O2", "O3"):
        options = FusionOptions("bert")
        options.enable_gelu_approximation = optimization_config == "O3"
        level = 1 if optimization_config == "O1" else 2
        kwargs = {"opt_level": level, "optimization_options": options, "only_onnxruntime": level == 1}
        suffix = file_suffix or optimization_config
    elif optimization_config == "O4":
        raise ExportError("optimization level O4 converts to fp16, which needs a GPU; use O1, O2 or O3 on CPU")
    else:
        raise ExportError(f"optimization_config must be one of {', '.join(OPTIMIZATION_LEVELS)} or a dict")
    kwargs.setdefault("model_type", "bert")
    kwargs.setdefault("num_heads", getattr(config, "num_attention_heads", 0))
    kwargs.setdefault("hidden_size", getattr(config, "hidden_size", 0))
    target = folder / "onnx" / f"model_{suffix}.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    run_isolated(_optimize, source, target, kwargs)


def _optimize(source: Path, target: Path, kwargs: dict[str, Any]) -> None:
    """onnxruntime's transformer optimizer, ``source`` to ``target`` (runs in the export's child process)."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimize_model(str(source), **kwargs).save_model_to_file(str(target))


def export_dynamic_quantized_onnx_model(
    model: Any,
    quantization_config: Literal["arm64", "avx2", "avx512", "avx512_vnni"] | dict[str, Any],
    model_name_or_path: str,
    push_to_hub: bool = False,
    create_pr: bool = False,
    file_suffix: str | None = None,
) -> None:
    """Write ``onnx/model_qint8_<target>.onnx``: int8 weights (per channel), activations quantized at run time.

    A dict is passed to ``onnxruntime.quantization.quantize_dynamic`` as keyword arguments.
    """
    from onnxruntime.quantization import QuantType

    _local_only(push_to_hub, create_pr)
    folder = Path(model_name_or_path)
    if isinstance(quantization_config, dict):
        kwargs, suffix = dict(quantization_config), file_suffix or "qint8_quantized"
    elif quantization_config in QUANTIZATION_TARGETS:
        kwargs = {"per_channel": True, "reduce_range": _REDUCE_RANGE[quantization_config]}
        suffix = file_suffix or f"qint8_{quantization_config}"
    else:
        raise ExportError(f"quantization_config must be one of {', '.join(QUANTIZATION_TARGETS)} or a dict")
    kwargs.setdefault("weight_type", QuantType.QInt8)
    kwargs.setdefault("op_types_to_quantize", ["MatMul", "Attention"])
    source = _source_onnx(model, folder)
    target = folder / "onnx" / f"model_{suffix}.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    run_isolated(_quantize_dynamic, source, target, kwargs)


def _quantize_dynamic(source: Path, target: Path, kwargs: dict[str, Any]) -> None:
    """onnxruntime's dynamic int8 quantization, ``source`` to ``target`` (runs in the export's child process)."""
    from onnxruntime.quantization import quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        # quantize_dynamic writes next to its output; keep the source folder clean.
        out = Path(tmp) / target.name
        quantize_dynamic(str(source), str(out), **kwargs)
        shutil.move(str(out), target)


def export_static_quantized_openvino_model(
    model: Any,
    quantization_config: dict[str, Any] | None,
    model_name_or_path: str,
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    dataset_split: str | None = None,
    column_name: str | None = None,
    push_to_hub: bool = False,
    create_pr: bool = False,
    file_suffix: str = "qint8_quantized",
) -> None:
    """Write ``openvino/openvino_model_<suffix>.xml``: int8 weights and activations, calibrated with nncf.

    Calibration texts: ``dataset_name`` is a local JSONL file (``column_name``, default ``text``)
    or, with the ``datasets`` package, a dataset id with ``dataset_config_name`` / ``dataset_split``
    (sentence-transformers' default, glue/sst2, needs the Hub). ``quantization_config`` is passed to
    ``nncf.quantize`` as keyword arguments (e.g. ``{"subset_size": 300}``).
    """
    _local_only(push_to_hub, create_pr)
    if importlib.util.find_spec("nncf") is None:
        raise ExportError("static OpenVINO quantization needs nncf: pip install 'sparsebridge[openvino]'")
    from .backends import onnx as onnx_backend
    from .backends import openvino as ov_backend

    texts = _calibration_texts(dataset_name, dataset_config_name, dataset_split, column_name)
    module = _transformer(model)
    folder = Path(model_name_or_path)
    target = folder / ov_backend.SUBFOLDER / f"openvino_model_{file_suffix}.xml"
    source = onnx_backend.find_model_file(folder, None, ov_backend.SUBFOLDER, ov_backend.DEFAULT_FILE)
    feed = _TokenFeed(module.tokenizer, module.max_seq_length)
    with tempfile.TemporaryDirectory() as tmp:
        if source is None:
            source = _source_onnx(model, Path(tmp))
        run_isolated(_quantize_static, source, feed, texts, dict(quantization_config or {}), target)


class _TokenFeed:
    """Calibration texts as the graph's inputs, one text per sample (a class, not a closure, so that
    it travels to the export's child process)."""

    def __init__(self, tokenizer: Any, max_length: int | None) -> None:
        self.tokenizer, self.max_length = tokenizer, max_length
        self.names: list[str] = []  # the graph's inputs, set once the graph is read

    def __call__(self, text: str) -> dict[str, Any]:
        encoded = self.tokenizer([text], truncation=True, max_length=self.max_length, return_tensors="np")
        return {name: encoded[name] for name in self.names if name in encoded}


def _quantize_static(source: Path, feed: _TokenFeed, texts: list[str], options: dict[str, Any], target: Path) -> None:
    """nncf's static int8 quantization of the IR or ONNX file ``source`` to ``target`` (runs in the
    export's child process)."""
    import nncf
    import openvino as ov

    ov_model = ov.Core().read_model(str(source)) if source.suffix == ".xml" else ov.convert_model(str(source))
    feed.names = [p.get_any_name() for p in ov_model.inputs]
    options.setdefault("subset_size", min(300, len(texts)))
    # Transformer-aware placement (no quantizers where they hurt: LayerNorm inputs, softmax, ...).
    options.setdefault("model_type", nncf.ModelType.TRANSFORMER)
    quantized = nncf.quantize(ov_model, nncf.Dataset(texts, feed), **options)
    target.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(target), compress_to_fp16=False)


def _calibration_texts(name: str | None, config: str | None, split: str | None, column: str | None) -> list[str]:
    column = column or "text"
    if name is None:
        raise ExportError(
            "export_static_quantized_openvino_model needs calibration texts: pass dataset_name= a local JSONL "
            "file (with column_name=) or a datasets id (sentence-transformers' default glue/sst2 needs the Hub)"
        )
    path = Path(name)
    if path.is_file():
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        texts = [str(r[column]) for r in rows if isinstance(r, dict) and r.get(column)]
    else:
        try:
            import datasets
        except ImportError:
            raise ModelLoadError(f"{name!r} is not a local file, and loading a dataset id needs `datasets`") from None
        texts = [str(t) for t in datasets.load_dataset(name, config, split=split or "train")[column]]
    if not texts:
        raise ExportError(f"{name}: no calibration texts in column {column!r}")
    return texts
