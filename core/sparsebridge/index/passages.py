"""Long documents as passages: split at word boundaries to fit the model, and fold passage hits back
into their parent document."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..connector import Hit

PARENT_KEY = "parent_id"
PASSAGE_KEY = "passage"


def split_passages(text: str, tokenizer: Any, max_tokens: int, overlap: int = 0) -> list[str]:
    """Split ``text`` into passages of at most ``max_tokens`` tokens (``overlap`` shared between
    neighbours), cutting between words; a text that fits is returned whole."""
    if overlap >= max_tokens:
        raise ValueError(f"passage overlap ({overlap}) must be smaller than passage length ({max_tokens})")
    try:
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)[
            "offset_mapping"
        ]
    except (NotImplementedError, TypeError, ValueError, KeyError):  # slow tokenizers have no offsets
        return _split_by_tokens(text, tokenizer, max_tokens, overlap)
    n = len(offsets)
    if n <= max_tokens:
        return [text]

    def word_start(pos: int, low: int) -> int:
        # Move a cut back to a token that follows whitespace, so no word (nor "word," / "##piece")
        # is split; a single "word" longer than the window is cut where it falls.
        if pos >= n:
            return pos
        back = pos
        while back > low and offsets[back][0] == offsets[back - 1][1]:
            back -= 1
        return back if back > low else pos

    passages, start = [], 0
    while start < n:
        end = word_start(min(start + max_tokens, n), start)
        passages.append(text[offsets[start][0] : offsets[end - 1][1]])
        if end >= n:
            break
        nxt = word_start(max(end - overlap, start + 1), start)
        start = nxt if nxt > start else end
    return passages


def _split_by_tokens(text: str, tokenizer: Any, max_tokens: int, overlap: int) -> list[str]:
    tokens = tokenizer.tokenize(text)
    if len(tokens) <= max_tokens:
        return [text]
    step = max_tokens - overlap
    return [
        tokenizer.convert_tokens_to_string(tokens[i : i + max_tokens])
        for i in range(0, max(len(tokens) - overlap, 1), step)
    ]


def collapse_passages(hits: Iterable[Hit | Any]) -> list[str]:
    """Document ids in rank order, passages folded into their parent (best passage counts)."""
    seen: dict[str, None] = {}
    for hit in hits:
        doc = str(hit.payload.get(PARENT_KEY, hit.id)) if hit.payload else hit.id
        seen.setdefault(doc, None)
    return list(seen)


def count_truncated(texts: Iterable[str], tokenizer: Any, max_tokens: int) -> int:
    """How many ``texts`` are longer than ``max_tokens`` tokens (special tokens included), which the
    encoder cuts at that length: the ingest report counts them and points at ``--split-passages``."""
    # A token covers at least one UTF-8 byte (a word-initial marker aside), so shorter texts cannot
    # be cut; only the others are tokenized, keeping this cheap next to encoding.
    candidates = [t for t in texts if len(t.encode("utf-8", "surrogatepass")) >= max_tokens // 2]
    if not candidates:
        return 0
    try:
        lengths = tokenizer(
            candidates, add_special_tokens=True, truncation=False, return_attention_mask=False, verbose=False
        )["input_ids"]
    except (TypeError, ValueError):  # a text the tokenizer refuses fails its encoding; not counted here
        return 0
    return sum(1 for ids in lengths if len(ids) > max_tokens)
