"""sentence-transformers 6 behaviour, one behaviour at a time, against the installed
sentence-transformers (the oracle, test-only) on the same real models: the packaged SPLADE model
(BERT-tiny masked LM) and all-MiniLM-L6-v2. Same outputs, same errors, same warnings.

What led here: sentence-transformers' own ``tests/sparse_encoder`` inference suite, run on both
libraries (see the README's "Encoding in Python"); each behaviour it found missing is pinned below.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import torch
from sparsebridge import SparseEncoder
from sparsebridge.similarity import SimilarityFunction

TEXTS = ["What is the capital of France?", "The capital of France is Paris.", "Sparse retrieval with SPLADE"]


def dense(x: torch.Tensor) -> torch.Tensor:
    return x.to_dense() if x.is_sparse else x


def close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> bool:
    a, b = dense(a).cpu(), dense(b).cpu()
    return a.shape == b.shape and torch.allclose(a, b, atol=atol)


@pytest.fixture(scope="module")
def pair(splade_path):
    from sentence_transformers import SparseEncoder as Oracle

    return SparseEncoder(str(splade_path), device="cpu"), Oracle(str(splade_path), device="cpu")


def raised(call) -> tuple[type, str]:
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the point is to compare whatever each library raises
        return type(exc), str(exc)
    raise AssertionError("no exception raised")


def same_error(ours_call, theirs_call, builtin: type[Exception]) -> None:
    ours_type, ours_msg = raised(ours_call)
    theirs_type, theirs_msg = raised(theirs_call)
    assert issubclass(ours_type, builtin) and issubclass(theirs_type, builtin)
    assert ours_msg == theirs_msg


# -- 1. inputs= first, sentences= as the 5.x alias, full encode_query/encode_document signatures --
def test_inputs_keyword_and_the_5x_sentences_alias(pair):
    ours, theirs = pair
    expected = theirs.encode(inputs=TEXTS)
    assert close(ours.encode(inputs=TEXTS), expected)
    assert close(ours.encode(sentences=TEXTS), expected)
    assert close(ours.encode_query(sentences=TEXTS[0]), theirs.encode_query(inputs=TEXTS[0]))
    assert close(ours.encode_document(inputs=TEXTS), theirs.encode_document(inputs=TEXTS))


def test_encode_query_takes_encodes_parameters_by_name(pair):
    ours, theirs = pair
    kwargs = dict(prompt="query: ", batch_size=1, convert_to_sparse_tensor=False, save_to_cpu=True, max_active_dims=7)
    assert close(ours.encode_query(TEXTS, **kwargs), theirs.encode_query(TEXTS, **kwargs))
    rows = ours.encode_document(TEXTS, convert_to_tensor=False)
    assert isinstance(rows, list) and len(rows) == len(TEXTS)
    for row, ref in zip(rows, theirs.encode_document(TEXTS, convert_to_tensor=False)):
        assert close(row, ref)


# -- 2. the names sentence-transformers 6 added -------------------------------------------------
def test_new_names_report_what_the_oracle_reports(pair):
    ours, theirs = pair
    assert ours.get_embedding_dimension() == theirs.get_embedding_dimension()
    assert ours.get_sentence_embedding_dimension() == theirs.get_embedding_dimension()
    assert ours.dtype == theirs.dtype
    assert ours.modalities == theirs.modalities
    for modality in ("text", "image", ("image", "text")):
        assert ours.supports(modality) == theirs.supports(modality)
    assert ours.get_backend() == theirs.get_backend()
    # The same Hugging Face config (sentence-transformers turns the KV cache off at load; no encoder uses it).
    mine, ref = ours.config.to_dict(), theirs.config.to_dict()
    assert {k: v for k, v in mine.items() if k != "use_cache"} == {k: v for k, v in ref.items() if k != "use_cache"}
    assert type(ours.processor) is type(theirs.processor)
    assert ours.SUPPORTED_SIMILARITY_FN_NAMES == theirs.SUPPORTED_SIMILARITY_FN_NAMES


@pytest.mark.parametrize(
    "value",
    ["a", ["a", "b"], ("a", "b"), np.array(["a", "b"]), np.array("a"), 3, None, {"text": "a"}, [["a", "b"]]],
    ids=repr,
)
def test_is_singular_input_agrees(pair, value):
    ours, theirs = pair
    assert ours.is_singular_input(value) == theirs.is_singular_input(value)


def test_preprocess_gives_the_oracles_features(pair):
    ours, theirs = pair
    mine, ref = ours.preprocess(TEXTS, prompt="query: "), theirs.preprocess(TEXTS, prompt="query: ")
    assert set(mine) == set(ref)
    for key, value in ref.items():
        assert torch.equal(mine[key], value) if isinstance(value, torch.Tensor) else mine[key] == value
    assert ours.preprocess([]) == theirs.preprocess([]) == {}


def test_preprocess_of_an_inference_free_query_route(splade_path):
    """The query route of an inference-free model gives padded ids without special tokens."""
    from sentence_transformers import SparseEncoder as Oracle
    from sentence_transformers.base.modules import Router as OracleRouter
    from sentence_transformers.sparse_encoder.modules import SparseStaticEmbedding as OracleStatic
    from sparsebridge.modules import Router, SparseStaticEmbedding

    doc = SparseEncoder(str(splade_path), device="cpu")
    static = SparseStaticEmbedding(doc.tokenizer)
    ours = SparseEncoder(modules=[Router.for_query_document([static], list(doc))], device="cpu")
    ref_doc = Oracle(str(splade_path), device="cpu")
    ref_static = OracleStatic(ref_doc.tokenizer)
    theirs = Oracle(
        modules=[OracleRouter.for_query_document(query_modules=[ref_static], document_modules=list(ref_doc))],
        device="cpu",
    )
    texts = ["a short query", "a somewhat longer query about the capital of france"]
    mine, ref = ours.preprocess(texts, task="query"), theirs.preprocess(texts, task="query")
    assert torch.equal(mine["input_ids"], ref["input_ids"])
    assert torch.equal(mine["attention_mask"], ref["attention_mask"])
    assert close(ours.encode_query(texts), theirs.encode_query(texts))


def test_set_pooling_include_prompt_reaches_the_pooling(minilm_path):
    from sentence_transformers import SparseEncoder as Oracle

    ours, theirs = SparseEncoder(str(minilm_path), device="cpu"), Oracle(str(minilm_path), device="cpu")
    for model in (ours, theirs):
        model.set_pooling_include_prompt(False)
    assert ours[1].include_prompt is theirs[1].include_prompt is False


# -- 3. CSR: dense sentence-transformers models and bare non-masked-LM checkpoints ---------------
def test_dense_sentence_transformers_model_gets_a_csr_head(minilm_path, tmp_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers import SparseEncoder as Oracle

    source = SentenceTransformer(str(minilm_path), device="cpu", prompts={"query": "Represent this: "})
    source.save_pretrained(str(tmp_path / "dense"))
    ours, theirs = SparseEncoder(str(tmp_path / "dense"), device="cpu"), Oracle(str(tmp_path / "dense"), device="cpu")
    assert [type(m).__name__ for m in ours] == [type(m).__name__ for m in theirs]
    assert ours[-1].get_config_dict() == theirs[-1].get_config_dict()
    assert ours.max_active_dims == theirs.max_active_dims == ours[-1].k
    assert ours.prompts == theirs.prompts
    assert ours.similarity_fn_name == theirs.similarity_fn_name == "cosine"
    # Same CSR weights -> same sparse vectors.
    ours[-1].load_state_dict({k: v for k, v in theirs[-1].state_dict().items() if not k.startswith("decoder.")})
    assert close(ours.encode(TEXTS), theirs.encode(TEXTS))


def test_another_familys_save_is_rebuilt_without_its_settings(minilm_path, tmp_path):
    from sentence_transformers import MultiVectorEncoder
    from sentence_transformers import SparseEncoder as Oracle

    source = MultiVectorEncoder(str(minilm_path), device="cpu")
    source.prompts = {"query": "find: ", "document": "text: "}
    source.default_prompt_name = "query"
    source.save_pretrained(str(tmp_path / "mv"))
    ours, theirs = SparseEncoder(str(tmp_path / "mv"), device="cpu"), Oracle(str(tmp_path / "mv"), device="cpu")
    assert [type(m).__name__ for m in ours] == [type(m).__name__ for m in theirs]
    assert ours[-1].get_config_dict() == theirs[-1].get_config_dict()
    assert ours.prompts == theirs.prompts == {"query": "", "document": ""}
    assert ours.default_prompt_name is theirs.default_prompt_name is None
    assert ours.similarity_fn_name == theirs.similarity_fn_name == "dot"


# -- 5. decode and prompt errors in sentence-transformers' words ------------------------------------
@pytest.mark.parametrize("top_k", [0, -1, -5])
def test_decode_refuses_top_k_below_one(pair, top_k):
    ours, theirs = pair
    emb = ours.encode("Hello world")
    same_error(lambda: ours.decode(emb, top_k=top_k), lambda: theirs.decode(emb, top_k=top_k), ValueError)


def test_decode_input_errors(pair):
    ours, theirs = pair
    same_error(lambda: ours.decode([1, 2, 3]), lambda: theirs.decode([1, 2, 3]), TypeError)
    cube = torch.zeros(2, 3, 4)
    same_error(lambda: ours.decode(cube), lambda: theirs.decode(cube), ValueError)


def test_decode_output_matches(pair):
    ours, theirs = pair
    emb = theirs.encode(TEXTS)
    for top_k in (None, 1, 5, 1000):
        mine, ref = ours.decode(emb, top_k=top_k), theirs.decode(emb, top_k=top_k)
        assert [[t for t, _ in row] for row in mine] == [[t for t, _ in row] for row in ref]
        assert np.allclose([w for row in mine for _, w in row], [w for row in ref for _, w in row])


def test_prompt_errors(pair, splade_path):
    from sentence_transformers import SparseEncoder as Oracle

    ours, theirs = pair
    same_error(lambda: ours.encode("x", prompt_name="nope"), lambda: theirs.encode("x", prompt_name="nope"), ValueError)
    same_error(
        lambda: SparseEncoder(str(splade_path), prompts={"query": "q: "}, default_prompt_name="nope"),
        lambda: Oracle(str(splade_path), prompts={"query": "q: "}, default_prompt_name="nope"),
        ValueError,
    )


# -- 6. prompt and prompt_name both given: the oracle's warning, and the prompt wins --------------
def test_prompt_and_prompt_name_warn_like_the_oracle(pair, caplog):
    ours, theirs = pair
    ours.prompts["query"] = theirs.prompts["query"] = "query: "
    try:
        messages = []
        for model in (ours, theirs):
            caplog.clear()
            with caplog.at_level(logging.WARNING):
                out = model.encode(TEXTS, prompt="custom: ", prompt_name="query", convert_to_sparse_tensor=False)
            messages.append([r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING])
            assert close(out, theirs.encode(TEXTS, prompt="custom: ", convert_to_sparse_tensor=False))
        assert messages[0] == messages[1] and len(messages[0]) == 1
    finally:
        ours.prompts["query"] = theirs.prompts["query"] = ""


# -- 7. unknown encode keywords refused; processing_kwargs honoured --------------------------------
def test_unknown_encode_keyword_is_refused_with_the_oracles_message(pair):
    ours, theirs = pair
    same_error(lambda: ours.encode("x", normalize=True), lambda: theirs.encode("x", normalize=True), ValueError)
    # task is always allowed, even without a router
    assert close(ours.encode("x", task="query"), theirs.encode("x", task="query"))


def test_unknown_keyword_lists_what_a_router_model_takes(splade_path):
    from sparsebridge.modules import Router, SparseStaticEmbedding

    doc = SparseEncoder(str(splade_path), device="cpu")
    model = SparseEncoder(
        modules=[Router.for_query_document([SparseStaticEmbedding(doc.tokenizer)], list(doc))], device="cpu"
    )
    expected = (
        "SparseEncoder.encode() has been called with additional keyword arguments that this model does not use: "
        "['normalize']. As per SparseEncoder.get_model_kwargs(), the valid additional keyword arguments are: "
    )
    with pytest.raises(ValueError, match=re.escape(expected)):
        model.encode_query("x", normalize=True)


def test_processing_kwargs_truncate_like_the_oracle(pair):
    ours, theirs = pair
    text = ["this sentence is much longer than four tokens for sure"]
    kwargs = {"processing_kwargs": {"text": {"max_length": 4, "truncation": True}}}
    truncated = ours.encode(text, **kwargs)
    assert close(truncated, theirs.encode(text, **kwargs))
    assert not close(truncated, ours.encode(text))


# -- 8. batches run through the module call: hooks apply -----------------------------------------
def test_encode_runs_forward_hooks(pair):
    ours, _ = pair
    calls = []
    handle = ours.register_forward_hook(lambda module, args, output: calls.append(set(output)))
    try:
        ours.encode(TEXTS, batch_size=2)
    finally:
        handle.remove()
    assert len(calls) == 2 and all("sentence_embedding" in keys and "modality" in keys for keys in calls)


# -- 9. text pairs and 2-D numpy string arrays ----------------------------------------------------
def test_text_pairs_and_2d_numpy_arrays(pair):
    ours, theirs = pair
    pairs = [("what is AI?", "AI is artificial intelligence."), ("what is ML?", "ML is machine learning.")]
    expected = theirs.encode(pairs)
    assert close(ours.encode(pairs), expected)
    assert close(ours.encode(np.array(pairs)), theirs.encode(np.array(pairs)))
    assert close(ours.encode(np.array(pairs)), expected)
    assert close(ours.encode(np.array(TEXTS)), theirs.encode(TEXTS))
    empty = ours.encode(np.array([], dtype=str))
    assert empty.numel() == 0 and empty.is_sparse


def test_mixed_texts_and_pairs_are_refused(pair):
    ours, _ = pair
    with pytest.raises(ValueError, match="mix single texts and text pairs"):
        ours.encode(["a text", ("a", "pair")])


# -- 10. SimilarityFunction.possible_values() --------------------------------------------------------
def test_possible_values_include_dot():
    from sentence_transformers.util.similarity import SimilarityFunction as Oracle

    supported = SparseEncoder.SUPPORTED_SIMILARITY_FN_NAMES
    assert SimilarityFunction.possible_values() == [v for v in Oracle.possible_values() if v in supported]
    assert SimilarityFunction("dot") is SimilarityFunction.DOT is SimilarityFunction.DOT_PRODUCT


def test_multi_vector_similarity_is_refused_like_the_oracle(pair):
    ours, theirs = pair

    def set_maxsim(model):
        model.similarity_fn_name = "maxsim"

    same_error(lambda: set_maxsim(ours), lambda: set_maxsim(theirs), ValueError)


# -- 11. SpladePooling: unpadded (cu_seq_lens) input; outputs carry modality ----------------------
@pytest.mark.parametrize("strategy", ["max", "sum"])
@pytest.mark.parametrize("activation", ["relu", "log1p_relu"])
def test_splade_pooling_unpadded_input_matches_padded_and_oracle(strategy, activation):
    from sentence_transformers.sparse_encoder.modules import SpladePooling as OraclePooling
    from sparsebridge.modules import SpladePooling

    torch.manual_seed(3)
    lengths = [4, 9, 1]
    segments = [torch.randn(n, 31) for n in lengths]
    flat = torch.cat(segments).unsqueeze(0)
    cu = torch.tensor([0, *np.cumsum(lengths).tolist()])
    padded = torch.nn.utils.rnn.pad_sequence(segments, batch_first=True)
    mask = (torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]).long()
    ours = SpladePooling(strategy, activation)
    theirs = OraclePooling(pooling_strategy=strategy, activation_function=activation)
    before = flat.clone()
    got = ours({"token_embeddings": flat, "cu_seq_lens_q": cu})["sentence_embedding"]
    assert torch.equal(flat, before)  # no in-place change of the caller's tensor
    assert torch.allclose(got, theirs({"token_embeddings": flat, "cu_seq_lens_q": cu})["sentence_embedding"])
    padded_out = ours({"token_embeddings": padded, "attention_mask": mask})["sentence_embedding"]
    assert torch.allclose(got, padded_out, atol=1e-6)


@pytest.mark.parametrize("inference", [True, False])
def test_csr_forward_outputs_match_the_oracle(minilm_path, inference):
    """A CSR model's forward: the same keys (modality included) and, outside inference mode, the
    same reconstructions that sentence-transformers' CSR losses read."""
    from sentence_transformers import SparseEncoder as Oracle

    theirs = Oracle(str(minilm_path), device="cpu")
    ours = SparseEncoder(str(minilm_path), device="cpu")
    torch.manual_seed(0)
    with torch.no_grad():
        theirs[-1].pre_bias.normal_(0, 0.01)
        theirs[-1].latent_bias.normal_(0, 0.01)
    ours[-1].load_state_dict({k: v for k, v in theirs[-1].state_dict().items() if not k.startswith("decoder.")})
    theirs.eval()
    ours.eval()
    outs = []
    for model in (ours, theirs):
        features = model.preprocess(TEXTS)
        with torch.inference_mode(inference):
            outs.append(model(features))
    mine, ref = outs
    assert set(mine) == set(ref)
    for key, value in ref.items():
        if isinstance(value, torch.Tensor):
            assert torch.allclose(mine[key], value, atol=1e-5), key
        else:
            assert mine[key] == value, key


# -- sentence-transformers 6.3 test-suite gaps (tests/sparse_encoder passed there, failed here) ----------
def test_similarity_fn_name_takes_the_oracles_enum_too(pair):
    from sentence_transformers import SimilarityFunction as OracleSimilarity

    ours, theirs = pair
    for model in (ours, theirs):
        model.similarity_fn_name = OracleSimilarity.COSINE
    assert ours.similarity_fn_name == theirs.similarity_fn_name == "cosine"
    ours.similarity_fn_name = theirs.similarity_fn_name = None


@pytest.mark.parametrize(("side", "method"), [("query_length", "encode_query"), ("document_length", "encode_document")])
def test_a_side_length_caps_that_side_as_in_the_oracle(splade_path, side, method, tmp_path):
    from sentence_transformers import SparseEncoder as Oracle

    text = "boundary layer transition on a flat plate at supersonic speeds with heat transfer"
    ours, theirs = SparseEncoder(str(splade_path), device="cpu"), Oracle(str(splade_path), device="cpu")
    full = dense(getattr(ours, method)([text]))
    for model in (ours, theirs):
        setattr(model[0], side, 4)
    capped, expected = dense(getattr(ours, method)([text])), dense(getattr(theirs, method)([text]))
    assert close(capped, expected) and not close(capped, full)
    # The other side keeps the whole text, and the cap is saved and loaded with the module.
    other = "encode_document" if method == "encode_query" else "encode_query"
    assert close(dense(getattr(ours, other)([text])), dense(getattr(theirs, other)([text])))
    ours.save_pretrained(str(tmp_path), create_model_card=False)
    assert getattr(SparseEncoder(str(tmp_path), device="cpu")[0], side) == 4


def test_the_model_card_shows_the_side_lengths(splade_path):
    from sparsebridge.model_card import model_card_text

    model = SparseEncoder(str(splade_path), device="cpu")
    assert "Maximum Query Length" not in model_card_text(model)
    model[0].query_length, model[0].document_length = 32, 180
    assert (
        f"- **Maximum Sequence Length:** {model.max_seq_length} tokens"
        "\n    - **Maximum Query Length:** 32 tokens"
        "\n    - **Maximum Document Length:** 180 tokens"
        "\n- **Output Dimensionality:**"
    ) in model_card_text(model)


def test_generate_usage_snippet_names_the_class_and_model_id():
    from sparsebridge import SparseEncoderModelCardData

    data = SparseEncoderModelCardData(model_id="my-org/my-sparse-model")
    data.usage_examples = ["test"]
    snippet = data.generate_usage_snippet()
    assert 'SparseEncoder("my-org/my-sparse-model")' in snippet
    assert "from sentence_transformers import SparseEncoder" in snippet  # what the oracle's own test asks
    assert "SentenceTransformer" not in snippet and "'test'" in snippet
    assert 'SparseEncoder("sparse_encoder_model_id")' in SparseEncoderModelCardData().generate_usage_snippet()
