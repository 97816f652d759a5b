"""Reduced precision on the packaged model: bf16 and int8 stay close to fp32, and a CPU without the
instructions for them falls back to fp32 with a warning (the capability probe is faked for that)."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import DATA_DIR, read_jsonl
from sparsebridge import SparseEncoder, precision
from sparsebridge.errors import SparsebridgeError

# The bounds, per row of the output (weights of the packaged model reach about 2.5):
# * bf16 keeps 8 significant bits: each rounding is off by at most 2^-9 (0.2%) relative. The output
#   goes through a few dozen roundings (2 layers, the projection), which as a random walk gives
#   about 1-2% relative error: we allow 5% relative L2 error and cosine >= 0.999.
# * int8 quantizes weights (per output channel) and activations (per tensor) to 8 bits, about 1% per
#   matmul, over 12 quantized matmuls: we allow 15% relative L2 error and cosine >= 0.99.
BOUNDS = {"bf16": (0.05, 0.999), "int8": (0.15, 0.99)}


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [f"{d['title']} {d['text']}".strip() for d in read_jsonl(DATA_DIR / "cranfield" / "corpus.jsonl", 24)]


@pytest.fixture(scope="module")
def fp32(splade_path, texts) -> torch.Tensor:
    return SparseEncoder(str(splade_path), device="cpu").encode(texts, convert_to_sparse_tensor=False)


@pytest.fixture
def capable(monkeypatch):
    """Pretend this CPU has BF16 and VNNI, so the test runs the reduced path on any machine."""
    flags = frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_vnni"})
    monkeypatch.setattr(precision, "cpu_flags", lambda: flags)


def _close(got: torch.Tensor, want: torch.Tensor, name: str) -> None:
    rel_bound, cos_bound = BOUNDS[name]
    assert got.dtype == torch.float32
    rel = (got - want).norm(dim=1) / want.norm(dim=1)
    cos = torch.nn.functional.cosine_similarity(got, want, dim=1)
    assert rel.max() <= rel_bound, f"{name}: relative error {rel.max():.4f}"
    assert cos.min() >= cos_bound, f"{name}: cosine {cos.min():.5f}"
    assert not torch.equal(got, want)  # the reduced path really ran


@pytest.mark.parametrize(
    "kwargs",
    [
        {"model_kwargs": {"dtype": torch.bfloat16}},
        {"model_kwargs": {"torch_dtype": "bfloat16"}},  # the older spelling, as a string
        {"precision": "bf16"},
    ],
)
def test_bf16_close_to_fp32(capable, splade_path, texts, fp32, kwargs):
    model = SparseEncoder(str(splade_path), device="cpu", **kwargs)
    assert model[0].precision == "bf16"
    assert model.transformers_model.dtype == torch.bfloat16
    _close(model.encode(texts, convert_to_sparse_tensor=False), fp32, "bf16")


def test_int8_close_to_fp32(capable, splade_path, texts, fp32):
    model = SparseEncoder(str(splade_path), device="cpu", precision="int8")
    assert model[0].precision == "int8"
    quantized = [m for m in model.transformers_model.modules() if "quantized" in type(m).__module__]
    assert quantized, "no Linear layer was quantized"
    _close(model.encode(texts, convert_to_sparse_tensor=False), fp32, "int8")


@pytest.mark.parametrize(
    ("flags", "dtype"),
    [
        ({"avx2", "avx512f", "avx512_bf16", "avx512_vnni"}, torch.bfloat16),
        ({"avx2", "avx512f", "avx512_vnni"}, torch.float32),  # VNNI without BF16: bf16 would be emulated
    ],
)
def test_int8_projects_in_bf16_only_where_the_cpu_has_it(monkeypatch, splade_path, texts, fp32, flags, dtype):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    model = SparseEncoder(str(splade_path), device="cpu", precision="int8")
    features = model[0](model.tokenize(texts[:2]))
    assert features["vocab_projection"].weight.dtype == dtype
    # The model's own projection (tied to the input embeddings) keeps fp32 either way.
    assert model.transformers_model.get_output_embeddings().weight.dtype == torch.float32
    _close(model.encode(texts, convert_to_sparse_tensor=False), fp32, "int8")


@pytest.mark.parametrize("asked", ["bf16", "int8"])
def test_cpu_without_the_instructions_falls_back_to_fp32_with_a_warning(monkeypatch, splade_path, texts, fp32, asked):
    # Faked probe: an AVX2-only CPU (no BF16, no VNNI).
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
    precision._warn_once.cache_clear()
    with pytest.warns(RuntimeWarning, match=f"{asked} was asked for, but this CPU has no"):
        model = SparseEncoder(str(splade_path), device="cpu", precision=asked)
    assert model[0].precision == "fp32"
    assert torch.equal(model.encode(texts, convert_to_sparse_tensor=False), fp32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: a second model warns no more
        SparseEncoder(str(splade_path), device="cpu", precision=asked)


def test_capabilities_are_read_from_cpuinfo(monkeypatch, tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni amx_tile amx_int8\n")
    monkeypatch.setattr(precision, "_CPUINFO", info)
    precision.cpu_flags.cache_clear()
    try:
        caps = precision.cpu_capabilities()
        line = precision.describe_cpu()
    finally:
        precision.cpu_flags.cache_clear()
    assert caps == {"avx2": True, "avx512": True, "bf16": False, "vnni": True, "amx": True}
    assert line == "AVX2=yes AVX512=yes BF16=no VNNI=yes AMX=yes"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"precision": "fp8"}, "unknown precision 'fp8'"),
        ({"model_kwargs": {"dtype": torch.int64}}, "dtype torch.int64 is not supported"),
    ],
)
def test_bad_precision_is_one_clear_error(splade_path, kwargs, message):
    with pytest.raises(SparsebridgeError, match=message):
        SparseEncoder(str(splade_path), device="cpu", **kwargs)


def test_config_key_reaches_the_encoder(capable, tmp_path):
    from sparsebridge.config import config_from_dict
    from sparsebridge.errors import ConfigError
    from sparsebridge.pipeline import load_sparse_encoder

    config = config_from_dict({"model": {"precision": "bf16"}}, source="sb.toml", check_connector=False)
    assert config.model.precision == "bf16"
    assert config_from_dict({}, check_connector=False).model.precision == "fp32"
    with pytest.raises(ConfigError, match=r"sb.toml: \[model\] precision = 'fp16': allowed: 'fp32', 'bf16', 'int8'"):
        config_from_dict({"model": {"precision": "fp16"}}, source="sb.toml", check_connector=False)
    model = load_sparse_encoder(config.model.name_or_path, "cpu", config.model.precision)
    assert model[0].precision == "bf16"


@pytest.mark.parametrize(
    ("isa", "expected"),
    [
        ("avx2", {"avx2": True, "avx512": False, "bf16": False, "vnni": False, "amx": False}),
        ("AVX512_CORE_VNNI", {"avx2": True, "avx512": True, "bf16": False, "vnni": True, "amx": False}),
        ("AVX512_CORE_BF16", {"avx2": True, "avx512": True, "bf16": True, "vnni": True, "amx": False}),
        ("AVX512_CORE_AMX", {"avx2": True, "avx512": True, "bf16": True, "vnni": True, "amx": True}),
        ("not-a-level", {"avx2": True, "avx512": True, "bf16": True, "vnni": True, "amx": True}),
    ],
)
def test_onednn_isa_cap_limits_the_capabilities(monkeypatch, isa, expected):
    """torch's CPU matmuls run through oneDNN: with its ISA capped (ONEDNN_MAX_CPU_ISA, oneDNN's own
    documented variable), bf16 would be emulated, so it counts as absent."""
    flags = frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8"})
    monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
    assert precision.cpu_capabilities() == expected
    if expected["bf16"] is False:
        precision._warn_once.cache_clear()
        with pytest.warns(RuntimeWarning, match="bf16 was asked for"):
            assert precision.effective_precision("bf16") == "fp32"
        assert f"(ONEDNN_MAX_CPU_ISA={isa.upper()})" in precision.describe_cpu()
