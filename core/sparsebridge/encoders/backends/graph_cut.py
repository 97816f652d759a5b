"""Finding the vocabulary projection's input in an exported masked-LM graph.

sentence-transformers' files (``onnx/model.onnx``, ``openvino/openvino_model.xml``) end with
``logits = hidden @ W + b``: [batch, seq_len, vocab]. We want ``hidden`` instead, so that
``SpladePooling`` projects real tokens only, block by block. Walking back from the logits through
the ops between the projection and the output (bias Add, a quantized matmul's Cast and scale Mul)
reaches the projection's activation input (before an activation quantizer, if any). The caller
checks the cut numerically against the full graph and keeps full logits if it does not match.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

# Ops that may sit between the projection and the logits output.
PASS_THROUGH = {"Add", "Mul", "Cast", "Convert", "Multiply", "Reshape", "Squeeze", "Unsqueeze"}
MATMULS = {"MatMul", "Gemm", "FusedMatMul", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"}
QUANTIZERS = {"DynamicQuantizeLinear", "QuantizeLinear", "FakeQuantize"}

Value = TypeVar("Value")


def projection_input(
    logits: Value,
    op_type: Callable[[Value], str | None],
    variable_inputs: Callable[[Value], Sequence[Value]],
    depth: int = 8,
) -> Value | None:
    """The value feeding the vocabulary projection that produces ``logits``, or None.

    ``op_type(v)`` names the op producing value ``v`` (None for a graph input);
    ``variable_inputs(v)`` lists that op's inputs that are not constants (weights, scales).
    """
    if depth <= 0:
        return None
    kind = op_type(logits)
    inputs = list(variable_inputs(logits))
    if kind in MATMULS and inputs:
        source = inputs[0]
        if op_type(source) in QUANTIZERS:
            before = list(variable_inputs(source))
            return before[0] if before else None
        return source
    if kind not in PASS_THROUGH:
        return None
    for value in inputs:  # e.g. Mul(matmul result, activation scale x weight scale): try each
        found = projection_input(value, op_type, variable_inputs, depth - 1)
        if found is not None:
            return found
    return None
