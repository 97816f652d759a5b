"""The ONNX Runtime backend: runs sentence-transformers' ONNX files of a masked LM, cut before the
vocabulary projection, so that ``SpladePooling`` projects real tokens only.

Files follow sentence-transformers' layout: ``onnx/model.onnx`` (and variants such as
``onnx/model_O3.onnx`` or ``onnx/model_qint8_avx512_vnni.onnx``, chosen with
``model_kwargs={"file_name": ...}``). A folder without one gets ``onnx/model.onnx`` exported on first
load (torch.onnx, full logits output, so sentence-transformers loads it too).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...errors import ModelLoadError
from .graph_cut import projection_input
from .graph_inputs import graph_feed

logger = logging.getLogger(__name__)

SUBFOLDER = "onnx"
DEFAULT_FILE = "model.onnx"
LOGITS = "logits"
OPSET = 17


def find_model_file(folder: Path, file_name: str | None, subfolder: str, default: str) -> Path | None:
    """``file_name`` (default ``default``) in the folder itself or in its backend subfolder, as
    sentence-transformers looks them up; None when neither exists."""
    name = file_name or default
    for candidate in (folder / name, folder / subfolder / name):
        if candidate.is_file():
            return candidate
    return None


class _LogitsOnly(nn.Module):
    """The masked LM with positional inputs and the logits as its only output, for export."""

    def __init__(self, model: nn.Module, input_names: list[str]) -> None:
        super().__init__()
        self.model, self.input_names = model, input_names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.input_names, inputs)), return_dict=True).logits


def export_onnx(model: nn.Module, input_names: list[str], target: Path) -> Path:
    """Export a torch masked LM to ONNX at ``target`` (dynamic batch and sequence axes, logits out)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    sample = torch.ones(2, 8, dtype=torch.long)
    inputs = tuple(torch.zeros_like(sample) if n == "token_type_ids" else sample for n in input_names)
    axes = {name: {0: "batch_size", 1: "sequence_length"} for name in [*input_names, LOGITS]}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer notes about shape-dependent Python control flow
        torch.onnx.export(
            _LogitsOnly(model.float().eval(), input_names),
            inputs,
            str(target),
            input_names=input_names,
            output_names=[LOGITS],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    return target


def cut_before_projection(model_proto: Any) -> Any | None:
    """A copy of the graph whose only output is the vocabulary projection's input; None if not found."""
    import onnx

    graph = model_proto.graph
    producers = {out: node for node in graph.node for out in node.output}
    constant = {init.name for init in graph.initializer}
    for node in graph.node:  # nodes are topologically sorted: constants propagate forward
        if node.op_type == "Constant" or (node.input and all(i in constant or not i for i in node.input)):
            constant.update(node.output)
    outputs = [o.name for o in graph.output]
    if LOGITS not in outputs:
        return None

    def op_type(value: str) -> str | None:
        node = producers.get(value)
        return None if node is None else node.op_type

    def variable_inputs(value: str) -> list[str]:
        node = producers.get(value)
        return [] if node is None else [i for i in node.input if i and i not in constant]

    hidden = projection_input(LOGITS, op_type, variable_inputs)
    if hidden is None:
        return None
    # Keep the nodes the new output depends on (in their original, topological, order).
    needed, stack = set(), [hidden]
    while stack:
        node = producers.get(stack.pop())
        if node is not None and id(node) not in needed:
            needed.add(id(node))
            stack.extend(i for i in node.input if i)
    nodes = [node for node in graph.node if id(node) in needed]
    used = {i for node in nodes for i in node.input}
    logits_type = next(o for o in graph.output if o.name == LOGITS).type.tensor_type.elem_type
    new_graph = onnx.helper.make_graph(
        nodes,
        graph.name,
        [i for i in graph.input if i.name in used],
        [onnx.helper.make_tensor_value_info(hidden, logits_type, None)],
        [init for init in graph.initializer if init.name in used],
    )
    cut = onnx.helper.make_model(new_graph, opset_imports=model_proto.opset_import, ir_version=model_proto.ir_version)
    cut.domain, cut.producer_name = model_proto.domain, "sparsebridge"
    return cut


class OnnxRunner:
    """An ONNX Runtime session on the graph, cut before the vocabulary projection when that works.

    ``__call__`` returns ``(tensor, is_hidden)``: the projection's input, or full logits.
    """

    def __init__(self, path: Path, threads: int | None = None) -> None:
        import onnx
        import onnxruntime as ort

        self.path = path
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        # Busy-waiting threads are what collapses under foreign load; sleep between ops instead.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._options, self._ort = options, ort
        try:
            proto = onnx.load(str(path))
        except Exception as exc:  # onnx raises its own DecodeError / ValidationError types
            raise ModelLoadError(f"{path}: not a readable ONNX model: {exc}") from exc
        self.input_names = [i.name for i in proto.graph.input]
        self._full_proto = proto
        cut = cut_before_projection(proto)
        self.cut = cut is not None
        self.session = self._session(cut if cut is not None else proto)

    def _session(self, proto: Any):
        providers = ["CPUExecutionProvider"]
        return self._ort.InferenceSession(proto.SerializeToString(), self._options, providers=providers)

    def full_logits(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits from the uncut graph (for the load-time check of the cut)."""
        session = self._session(self._full_proto)
        return torch.from_numpy(session.run([LOGITS], self._feed(inputs))[0])

    def drop_cut(self) -> None:
        """Run the whole graph from now on (the cut did not reproduce the logits)."""
        self.session, self.cut = self._session(self._full_proto), False

    def release_full_graph(self) -> None:
        """Drop the uncut graph once the cut one is known to match it (memory)."""
        self._full_proto = None if self.cut else self._full_proto

    def _feed(self, inputs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        return graph_feed(self.path, self.input_names, inputs)

    def __call__(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, bool]:
        """Run the graph; returns its output and whether it is the states before the projection (cut)."""
        out = self.session.run(None, self._feed(inputs))[0]
        return torch.from_numpy(out), self.cut
