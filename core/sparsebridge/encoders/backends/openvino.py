"""The OpenVINO backend: runs sentence-transformers' OpenVINO files of a masked LM
(``openvino/openvino_model.xml`` + ``.bin``), cut before the vocabulary projection.

The inference precision is explicit (``INFERENCE_PRECISION_HINT``): OpenVINO would pick bf16 by
itself on CPUs with AMX / AVX-512 BF16, so fp32 asks for ``f32`` and bf16 for ``bf16``; int8 (a
quantized file) asks for ``bf16`` where the CPU has it, else ``f32``. A folder
without an OpenVINO model gets one converted from the ONNX export on first load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import ModelLoadError
from ..runtime.precision import cpu_capabilities
from .graph_cut import projection_input
from .graph_inputs import graph_feed

SUBFOLDER = "openvino"
DEFAULT_FILE = "openvino_model.xml"
LOGITS = "logits"
# The name nncf gives the scaling node SmoothQuant inserts before a quantized MatMul.
SMOOTH_QUANT = "nncf_smooth_quant"
HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


def inference_hint(precision: str) -> str:
    """OpenVINO's precision for what a file leaves unquantized: int8 files (FakeQuantize around the
    matmuls) run the rest in bf16 where the CPU has it, as the projection then does (a third of the
    time of a pass in f32 on an AVX-512 BF16 CPU, within the quality bounds of benchmarks/encode.py)."""
    if precision == "int8" and cpu_capabilities()["bf16"]:
        return "bf16"
    return HINTS[precision]


def convert_from_onnx(onnx_path: Path, target: Path) -> Path:
    """Convert an ONNX model to OpenVINO IR at ``target`` (weights kept fp32, names kept)."""
    import openvino as ov

    target.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.convert_model(str(onnx_path)), str(target), compress_to_fp16=False)
    return target


def _is_constant(node: Any, memo: dict[str, bool]) -> bool:
    """Whether the node's value is fixed (no Parameter upstream); iterative, as graphs run deep."""
    stack = [node]
    while stack:
        current = stack[-1]
        key = current.get_name()  # wrapper objects are recreated: id() is not stable
        if key in memo:
            stack.pop()
            continue
        kind = current.get_type_name()
        if kind in ("Parameter", "Constant"):
            memo[key] = kind == "Constant"
            stack.pop()
            continue
        sources = [i.get_source_output().get_node() for i in current.inputs()]
        pending = [n for n in sources if n.get_name() not in memo]
        if pending:
            stack.extend(pending)
            continue
        memo[key] = all(memo[n.get_name()] for n in sources)
        stack.pop()
    return memo[node.get_name()]


def _projection_input_value(model: Any) -> Any | None:
    """The output value that feeds the vocabulary projection producing ``logits``; None if not found."""
    results = [r for r in model.outputs if LOGITS in r.get_names()]
    if len(results) != 1:
        return None
    memo: dict[str, bool] = {}

    def op_type(value: Any) -> str | None:
        kind = value.get_node().get_type_name()
        return None if kind == "Parameter" else kind

    def variable_inputs(value: Any) -> list[Any]:
        sources = [i.get_source_output() for i in value.get_node().inputs()]
        return [s for s in sources if not _is_constant(s.get_node(), memo)]

    # A model output is a Result node's output; the logits are what feeds that node.
    hidden = projection_input(results[0].get_node().input_value(0), op_type, variable_inputs)
    node = None if hidden is None else hidden.get_node()
    if node is not None and node.get_type_name() == "Multiply" and SMOOTH_QUANT in node.get_friendly_name():
        # nncf's SmoothQuant divides the projection's input by per-channel scales and folds them into
        # the file's weights; we project with the original weights, so take the input before it.
        sources = variable_inputs(hidden)
        hidden = sources[0] if len(sources) == 1 else None
    return hidden


def cut_before_projection(model: Any) -> Any | None:
    """A model whose only output is the vocabulary projection's input; None if not found."""
    import openvino as ov

    hidden = _projection_input_value(model)
    if hidden is None:
        return None
    return ov.Model([hidden], model.get_parameters(), "projection_input")


class OpenVinoRunner:
    """A compiled OpenVINO model, cut before the vocabulary projection when that works.

    ``__call__`` returns ``(tensor, is_hidden)``: the projection's input, or full logits.
    """

    def __init__(self, path: Path, precision: str = "fp32", threads: int | None = None, config: dict | None = None):
        import openvino as ov

        self.path = path
        self.core = ov.Core()
        try:
            self._full = self.core.read_model(str(path))
        except RuntimeError as exc:
            raise ModelLoadError(f"{path}: not a readable OpenVINO model: {exc}") from exc
        self.config = {"INFERENCE_PRECISION_HINT": inference_hint(precision), "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = threads
        self.config.update(config or {})
        self.input_names = [p.get_any_name() for p in self._full.inputs]
        cut = cut_before_projection(self._full)
        self.cut = cut is not None
        self.compiled = self.core.compile_model(cut if cut is not None else self._full, "CPU", self.config)

    def _feed(self, inputs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        return graph_feed(self.path, self.input_names, inputs)

    def full_logits(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits from the uncut model (for the load-time check of the cut)."""
        compiled = self.core.compile_model(self._full, "CPU", self.config)
        return torch.from_numpy(np.array(compiled(self._feed(inputs))[0]))

    def drop_cut(self) -> None:
        """Run the whole model from now on (the cut did not reproduce the logits)."""
        self.compiled, self.cut = self.core.compile_model(self._full, "CPU", self.config), False

    def release_full_graph(self) -> None:
        """Drop the uncut model once the cut one is known to match it (memory)."""
        self._full = None if self.cut else self._full

    def __call__(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, bool]:
        """Run the model; returns its output and whether it is the states before the projection (cut)."""
        out = self.compiled(self._feed(inputs))[0]
        return torch.from_numpy(np.array(out)), self.cut
