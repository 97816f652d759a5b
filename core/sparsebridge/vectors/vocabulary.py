"""A model's vocabulary: id -> token, and the fingerprint stored with an index so that an index is
never queried or extended with another tokenizer."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np


def vocabulary(tokenizer: Any) -> list[str]:
    """The tokenizer's tokens in id order (``convert_ids_to_tokens`` over every id)."""
    size = len(tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(list(range(size)))
    return [t if t is not None else f"[{i}]" for i, t in enumerate(tokens)]


def vocab_fingerprint(tokenizer: Any) -> str:
    """sha256 over the id-ordered vocabulary: equal exactly when two tokenizers map ids alike."""
    return _fingerprint(vocabulary(tokenizer))


def _fingerprint(vocab: Sequence[str]) -> str:
    h = hashlib.sha256()
    for i, token in enumerate(vocab):
        h.update(f"{i}\t{token}\n".encode())
    return h.hexdigest()


class Vocabulary:
    """Id -> token lookup as a numpy array, plus the metadata stored with an index."""

    def __init__(
        self, tokenizer: Any, model_name: str, dimension: int | None = None, *, tokens: Sequence[str] | None = None
    ) -> None:
        tokens = list(tokens) if tokens is not None else vocabulary(tokenizer)
        self.tokens = np.array(tokens, dtype=object)
        # Ids this model's vectors can hold: its output size (which may pad past the tokenizer, and
        # is no tokenizer's size for a CSR model), else the tokenizer's.
        self.dimension = int(dimension) if dimension else len(tokens)
        self.metadata = {
            "model": model_name,
            "vocab_size": len(tokens),
            "vocab_fingerprint": _fingerprint(tokens),
        }

    @classmethod
    def of(cls, encoder: Any, model_name: str) -> Vocabulary:
        """The vocabulary of ``encoder``, bounded by its output dimension when it tells it."""
        size = getattr(encoder, "get_embedding_dimension", None)
        return cls(encoder.tokenizer, model_name, size() if callable(size) else None)

    def outside(self, records: Iterable[Any]) -> str | None:
        """The first record (anything with ``id`` and ``sparse``) holding a token id this model
        cannot give, as one line, or None: such a vector (a hand-made dataset, an index written by
        another program) would score against tokens that are not the ones it meant."""
        for rec in records:
            bad = next((i for i in rec.sparse.indices if i >= self.dimension), None)
            if bad is not None:
                return (
                    f"record {rec.id!r} has token index {bad}, outside the vocabulary of model "
                    f"{self.metadata['model']!r} (ids 0 to {self.dimension - 1})"
                )
        return None

    @classmethod
    def from_tokens(cls, tokens: Sequence[str], model_name: str, dimension: int | None = None) -> Vocabulary:
        """The vocabulary of id-ordered ``tokens`` (read without a tokenizer object, e.g. from a
        ``tokenizer.json``); the same fingerprint as the tokenizer's own."""
        tokens = [t if t is not None else f"[{i}]" for i, t in enumerate(tokens)]
        return cls(None, model_name, dimension, tokens=tokens)

    def token_array(self, size: int) -> np.ndarray:
        """The id -> token array, long enough for ``size`` output dimensions."""
        # Models may pad their output past the tokenizer (multiples of 8); name those ids by number.
        if size > len(self.tokens):
            extra = np.array([f"[{i}]" for i in range(len(self.tokens), size)], dtype=object)
            self.tokens = np.concatenate([self.tokens, extra])
        return self.tokens
