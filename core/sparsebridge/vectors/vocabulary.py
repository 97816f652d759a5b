"""A model's vocabulary: id -> token, and the fingerprint stored with an index so that an index is
never queried or extended with another tokenizer."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
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

    def __init__(self, tokenizer: Any, model_name: str, *, tokens: Sequence[str] | None = None) -> None:
        tokens = list(tokens) if tokens is not None else vocabulary(tokenizer)
        self.tokens = np.array(tokens, dtype=object)
        self.metadata = {
            "model": model_name,
            "vocab_size": len(tokens),
            "vocab_fingerprint": _fingerprint(tokens),
        }

    @classmethod
    def from_tokens(cls, tokens: Sequence[str], model_name: str) -> Vocabulary:
        """The vocabulary of id-ordered ``tokens`` (read without a tokenizer object, e.g. from a
        ``tokenizer.json``); the same fingerprint as the tokenizer's own."""
        return cls(None, model_name, tokens=[t if t is not None else f"[{i}]" for i, t in enumerate(tokens)])

    def token_array(self, size: int) -> np.ndarray:
        """The id -> token array, long enough for ``size`` output dimensions."""
        # Models may pad their output past the tokenizer (multiples of 8); name those ids by number.
        if size > len(self.tokens):
            extra = np.array([f"[{i}]" for i in range(len(self.tokens), size)], dtype=object)
            self.tokens = np.concatenate([self.tokens, extra])
        return self.tokens
