"""Property-based tests of encode/decode on hostile and odd text (hypothesis), on the real model.

"Explained" failure: an exception of the library's documented classes, or a TypeError/ValueError
whose message names the offending item. Anything else is a crash. ``CASES`` counts the examples
run per property (benchmarks/faults.py reports it).
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CASES: Counter[str] = Counter()
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Pieces worth mixing in: controls, RTL marks and scripts, emoji with modifiers and ZWJ, odd spaces.
ODD = [
    "\x00", "\x01", "\x07", "\x1b[31m", "\x7f", "\u0085", "\u200b", "\u200d", "\u200e", "\u200f", "\u202e",
    "\u2028", "\u2029", "\ufeff", "\ufffd", "\uffff", "\U0010ffff", "مرحبا", "שלום", "👩🏽‍💻", "🇫🇷", "🏳️‍🌈",
    "e\u0301", "ﬁ", "Ⅻ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "漢字", "\t", "\n", "\r\n", " ", "\u3000", "[CLS]", "[SEP]", "[PAD]", "##ing",
]  # fmt: skip
# Any code point except lone surrogates (those get their own test below).
any_char = st.characters(exclude_categories=("Cs",))
odd_text = st.lists(st.one_of(st.text(any_char, max_size=40), st.sampled_from(ODD)), max_size=12).map("".join)


def check_vectors(embeddings: torch.Tensor, n: int, dim: int) -> None:
    assert embeddings.shape == (n, dim)
    dense = embeddings.to_dense()
    assert torch.isfinite(dense).all() and (dense >= 0).all()


@FUZZ
@given(texts=st.lists(odd_text, min_size=1, max_size=6))
def test_encode_and_decode_odd_text(encoder, texts):
    CASES["encode/decode odd text"] += 1
    dim = encoder.get_sentence_embedding_dimension()
    docs = encoder.encode_document(texts, batch_size=4)
    queries = encoder.encode_query(texts, batch_size=4)
    check_vectors(docs, len(texts), dim)
    check_vectors(queries, len(texts), dim)
    decoded = encoder.decode(docs)
    assert len(decoded) == len(texts)
    vocab_size = len(encoder.tokenizer)
    for row, pairs in zip(docs.to_dense(), decoded):
        assert len(pairs) == int((row > 0).sum())
        weights = [w for _, w in pairs]
        assert weights == sorted(weights, reverse=True) and all(w > 0 for w in weights)
        assert all(isinstance(t, str) and t for t, _ in pairs)
        assert {encoder.tokenizer.convert_tokens_to_ids(t) for t, _ in pairs} <= set(range(vocab_size))
    # Each text alone gives its row of the batch (batching and length sorting change nothing).
    alone = encoder.encode_document(texts[0]).to_dense()
    assert torch.allclose(alone, docs.to_dense()[0], atol=1e-4)


@FUZZ
@given(
    text=st.sampled_from(["", " ", "\t\n", "\u3000\u200b", "\x00", "\ufeff"]) | st.text(" \t\r\n\u3000", max_size=20)
)
def test_empty_and_whitespace_text_gives_a_vector(encoder, text):
    CASES["empty/whitespace"] += 1
    out = encoder.encode_document([text, "a real sentence about memory"])
    check_vectors(out, 2, encoder.get_sentence_embedding_dimension())
    assert isinstance(encoder.decode(out[0]), list)


@FUZZ
@given(
    items=st.lists(
        st.one_of(odd_text, st.integers(), st.none(), st.binary(max_size=5), st.floats(), st.lists(st.text())),
        min_size=1,
        max_size=5,
    )
)
def test_non_strings_are_refused_by_position(encoder, items):
    CASES["non-string inputs"] += 1
    # A list of exactly two strings is a text pair, which encoders take as sentence-transformers does.
    pair = [isinstance(x, list) and len(x) == 2 and all(isinstance(t, str) for t in x) for x in items]
    bad = [i for i, x in enumerate(items) if not isinstance(x, str) and not pair[i]]
    if not bad and any(pair) and not all(pair):
        with pytest.raises(ValueError, match="mix single texts and text pairs"):
            encoder.encode_document(items)
        return
    if not bad:
        check_vectors(encoder.encode_document(items), len(items), encoder.get_sentence_embedding_dimension())
        return
    with pytest.raises(TypeError) as err:
        encoder.encode_document(items)
    assert f"inputs[{bad[0]}]" in str(err.value)


@FUZZ
@given(
    data=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1, max_size=8),
    shape=st.sampled_from([(0,), (2, 3, 4), ()]),
)
def test_decode_refuses_what_is_not_an_embedding(encoder, data, shape):
    CASES["decode odd tensors"] += 1
    with pytest.raises((TypeError, ValueError)) as err:
        encoder.decode(torch.zeros(shape) if shape != (0,) else data)
    # sentence-transformers' wording (tests/test_st6_api.py checks it against the oracle).
    assert "Expected torch.Tensor" in str(err.value) or "Input tensor must be 1D or 2D" in str(err.value)


def test_a_one_megabyte_document_is_truncated_not_fatal(encoder):
    CASES["1 MB documents"] += 2
    words = ["magnetic", "core", "memory", "stores", "binary", "data", "reliably"]
    big = " ".join(words[i % len(words)] + ("\u202e" if i % 997 == 0 else "") for i in range(200_000))
    big = (big * (1_048_576 // len(big) + 1))[:1_048_576]
    assert len(big) == 1_048_576
    rtl = ("مرحبا 👩🏽‍💻 " * 80_000)[:1_048_576]
    out = encoder.encode_document([big, rtl])
    check_vectors(out, 2, encoder.get_sentence_embedding_dimension())
    # Only the first max_seq_length tokens count: a long enough prefix gives the same vector.
    prefix = encoder.encode_document([big[:20_000], rtl[:20_000]])
    assert torch.allclose(out.to_dense(), prefix.to_dense(), atol=1e-4)


LONE_SURROGATES = ["\ud800", "abc\udfffdef", "ok \udc80", "\ud83d"]  # "\ud83d" is half of an emoji


@pytest.mark.parametrize("text", LONE_SURROGATES)
def test_lone_surrogates_get_a_clear_error_naming_the_item(encoder, text):
    # Library bug (reported): today the Rust tokenizer raises "TypeError: TextEncodeInput must be
    # Union[TextInputSequence, Tuple[InputSequence, InputSequence]]", naming neither item nor cause.
    CASES["lone surrogates"] += 1
    with pytest.raises(ValueError) as err:
        encoder.encode_document(["fine", text])
    assert "inputs[1]" in str(err.value) and "surrogate" in str(err.value)


@pytest.mark.parametrize("text", LONE_SURROGATES)
def test_lone_surrogates_never_crash_the_process(encoder, text):
    # What holds today: an exception (no abort, no garbage vector), and the encoder still works after.
    CASES["lone surrogates"] += 1
    with pytest.raises((TypeError, ValueError)):
        encoder.encode_document(["fine", text])
    check_vectors(encoder.encode_document(["still fine"]), 1, encoder.get_sentence_embedding_dimension())
