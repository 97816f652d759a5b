"""The ONNX Runtime and OpenVINO backends on the packaged model: export on first load, the
sentence-transformers file layout, the graph cut before the vocabulary projection, export helpers."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import DATA_DIR, read_jsonl
from sparsebridge import SparseEncoder
from sparsebridge.errors import ModelLoadError, SparsebridgeError

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [f"{d['title']} {d['text']}".strip() for d in read_jsonl(DATA_DIR / "cranfield" / "corpus.jsonl", 12)]


@pytest.fixture(scope="module")
def folder(splade_path, tmp_path_factory):
    """A writable copy of the packaged model (exports land in the model folder)."""
    target = tmp_path_factory.mktemp("model") / "splade"
    shutil.copytree(splade_path, target, ignore=shutil.ignore_patterns("onnx", "openvino"))
    return target


@pytest.fixture(scope="module")
def fp32(folder, texts) -> torch.Tensor:
    return SparseEncoder(str(folder), device="cpu").encode(texts, convert_to_sparse_tensor=False)


@pytest.fixture(scope="module")
def onnx_model(folder):
    return SparseEncoder(str(folder), backend="onnx")


def test_onnx_exports_on_first_load_and_matches_torch(onnx_model, folder, texts, fp32):
    assert (folder / "onnx" / "model.onnx").is_file()
    assert onnx_model[0]._runner.cut  # our projection + pooling, not the graph's logits
    got = onnx_model.encode(texts, convert_to_sparse_tensor=False)
    assert torch.allclose(got, fp32, atol=1e-4)


def test_exported_file_has_sentence_transformers_interface(onnx_model, folder):
    """What optimum's ORTModelForMaskedLM (sentence-transformers' loader) reads: named inputs and logits."""
    session = ort.InferenceSession(str(folder / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert {i.name for i in session.get_inputs()} == {"input_ids", "attention_mask", "token_type_ids"}
    assert [o.name for o in session.get_outputs()] == ["logits"]
    features = onnx_model.tokenize(["wing flutter at high speed", "a"])
    feed = {k: features[k].numpy() for k in ("input_ids", "attention_mask", "token_type_ids")}
    logits = session.run(None, feed)[0]
    with torch.no_grad():
        want = onnx_model.transformers_model(**features).logits.numpy()
    assert logits.shape == want.shape and np.abs(logits - want).max() < 1e-4


def test_cut_graph_never_outputs_the_vocabulary(onnx_model):
    runner = onnx_model[0]._runner
    (output,) = runner.session.get_outputs()
    hidden = onnx_model.transformers_model.config.hidden_size
    assert output.shape[-1] in (hidden, None) or isinstance(output.shape[-1], str)
    out, is_hidden = runner(onnx_model[0]._model_inputs(onnx_model.tokenize(["one text"])))
    assert is_hidden and out.shape[-1] == hidden


def test_dynamic_quantized_file_is_chosen_with_file_name(onnx_model, folder, texts, fp32):
    from sparsebridge.backends import export_dynamic_quantized_onnx_model

    export_dynamic_quantized_onnx_model(onnx_model, "avx512_vnni", str(folder))
    name = "onnx/model_qint8_avx512_vnni.onnx"
    assert (folder / name).is_file()
    model = SparseEncoder(str(folder), backend="onnx", model_kwargs={"file_name": name})
    assert model[0]._runner.path == folder / name
    assert model[0]._runner.cut  # the walk passes the int8 matmul's scale and cast ops
    got = model.encode(texts, convert_to_sparse_tensor=False)
    # int8 matmuls in the encoder (our projection stays fp32): the bound of tests/test_precision.py.
    cos = torch.nn.functional.cosine_similarity(got, fp32, dim=1)
    assert cos.min() >= 0.99 and not torch.equal(got, fp32)


def test_optimized_file(onnx_model, folder, texts, fp32):
    from sparsebridge.backends import export_optimized_onnx_model

    export_optimized_onnx_model(onnx_model, "O3", str(folder))
    model = SparseEncoder(str(folder), backend="onnx", model_kwargs={"file_name": "onnx/model_O3.onnx"})
    got = model.encode(texts, convert_to_sparse_tensor=False)
    # O3 approximates GELU (tanh form, error < 1e-3 per activation): weights agree to about 1e-2.
    assert (got - fp32).abs().max() < 2e-2


def test_missing_file_name_is_one_clear_error(folder):
    with pytest.raises(ModelLoadError, match=r"no onnx file 'onnx/model_nope\.onnx'; found: .*onnx/model\.onnx"):
        SparseEncoder(str(folder), backend="onnx", model_kwargs={"file_name": "onnx/model_nope.onnx"})


def test_export_refuses_what_it_cannot_do(onnx_model, folder):
    from sparsebridge.backends import export_dynamic_quantized_onnx_model, export_optimized_onnx_model

    with pytest.raises(SparsebridgeError, match="push_to_hub"):
        export_optimized_onnx_model(onnx_model, "O2", str(folder), push_to_hub=True)
    with pytest.raises(SparsebridgeError, match="O4 converts to fp16, which needs a GPU"):
        export_optimized_onnx_model(onnx_model, "O4", str(folder))
    with pytest.raises(SparsebridgeError, match="quantization_config must be one of arm64"):
        export_dynamic_quantized_onnx_model(onnx_model, "avx9", str(folder))


def test_unknown_backend_is_one_clear_error(folder):
    with pytest.raises(ValueError, match="backend 'tensorrt' is not supported; choose one of torch, onnx, openvino"):
        SparseEncoder(str(folder), backend="tensorrt")


def test_openvino_exports_on_first_load_with_explicit_precision(folder, texts, fp32):
    pytest.importorskip("openvino", reason="the openvino extra is not installed")
    model = SparseEncoder(str(folder), backend="openvino")
    runner = model[0]._runner
    assert (folder / "openvino" / "openvino_model.xml").is_file()
    assert runner.cut
    assert "float32" in str(runner.compiled.get_property("INFERENCE_PRECISION_HINT"))  # not bf16, even on AMX
    got = model.encode(texts, convert_to_sparse_tensor=False)
    assert torch.allclose(got, fp32, atol=1e-4)


def test_openvino_bf16_is_asked_for_explicitly(folder, texts, fp32):
    pytest.importorskip("openvino", reason="the openvino extra is not installed")
    from sparsebridge import precision

    if not precision.cpu_capabilities()["bf16"]:
        pytest.skip("this CPU has no bf16 instructions: OpenVINO runs f32 whatever the hint")
    model = SparseEncoder(str(folder), backend="openvino", precision="bf16")
    assert "bfloat16" in str(model[0]._runner.compiled.get_property("INFERENCE_PRECISION_HINT"))
    got = model.encode(texts, convert_to_sparse_tensor=False)
    cos = torch.nn.functional.cosine_similarity(got, fp32, dim=1)
    assert cos.min() >= 0.999  # the bf16 bound of tests/test_precision.py


def test_static_quantized_openvino_file_keeps_the_cut(folder, texts, fp32, tmp_path):
    """nncf's static int8 (SmoothQuant on) puts a scaling Multiply before the projection and folds its
    inverse into the file's weights: the cut must take the unscaled states, so our projection applies."""
    pytest.importorskip("nncf", reason="the openvino extra is not installed")
    from sparsebridge.backends import export_static_quantized_openvino_model

    calibration = tmp_path / "calibration.jsonl"
    rows = read_jsonl(DATA_DIR / "cranfield" / "corpus.jsonl", 60)
    calibration.write_text("\n".join(json.dumps({"text": d["text"]}) for d in rows), encoding="utf-8")
    source = SparseEncoder(str(folder), backend="openvino")
    export_static_quantized_openvino_model(source, {"subset_size": 60}, str(folder), dataset_name=str(calibration))
    xml = folder / "openvino" / "openvino_model_qint8_quantized.xml"
    assert "nncf_smooth_quant" in xml.read_text()  # the case this test is about
    model = SparseEncoder(str(folder), backend="openvino", model_kwargs={"file_name": str(xml.relative_to(folder))})
    assert model[0]._runner.cut
    got = model.encode(texts, convert_to_sparse_tensor=False)
    cos = torch.nn.functional.cosine_similarity(got, fp32, dim=1)
    assert cos.min() >= 0.97, cos  # int8 activations: looser than bf16, far from a wrong cut
    # precision="int8": what the file leaves unquantized, and our projection, run bf16 where the CPU has it.
    from sparsebridge import precision

    bf16 = precision.cpu_capabilities()["bf16"]
    model = SparseEncoder(
        str(folder), backend="openvino", precision="int8", model_kwargs={"file_name": str(xml.relative_to(folder))}
    )
    hint = str(model[0]._runner.compiled.get_property("INFERENCE_PRECISION_HINT"))
    assert ("bfloat16" if bf16 else "float32") in hint
    assert model[0]._pooling_projection.weight.dtype == (torch.bfloat16 if bf16 else torch.float32)
    got = model.encode(texts, convert_to_sparse_tensor=False)
    assert torch.nn.functional.cosine_similarity(got, fp32, dim=1).min() >= 0.97


def test_installed_package_folders_are_never_written(splade_path):
    """The packaged model lives in site-packages: its first-load export goes to a temporary folder."""
    model = SparseEncoder(str(splade_path), backend="onnx")
    assert not (splade_path / "onnx").exists()
    assert splade_path not in model[0]._runner.path.parents
