"""The models a server holds, and the two things done with them: checking a request's texts
(side, prompt, token counts, limits) and one model pass over a batch of texts."""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..config import Config
from ..encoders.layout import DOCUMENT_PROMPT_NAMES, QUERY_PROMPT_NAMES
from .errors import EmptyInput, InvalidInput, NotServed, TooLarge

SIDES = ("query", "document")


@dataclass(frozen=True)
class BatchKey:
    """What texts must share to go through one model pass together."""

    kind: str  # "sparse" or "dense"
    side: str  # "query" or "document"
    prompt_name: str | None  # an explicit prompt other than the side's own; None: the side's
    direction: str  # truncation side: "right" or "left"
    normalize: bool = False  # dense only
    dimensions: int | None = None  # dense only


@dataclass
class Job:
    """One request's texts, checked, with the token count each costs in a batch."""

    key: BatchKey
    texts: list[str]
    tokens: list[int]

    @property
    def cost(self) -> int:
        """What the request costs a batch: its tokens."""
        return sum(self.tokens)


@dataclass
class Limits:
    """What one request and one batch may hold (``[serve]``)."""

    max_client_batch_size: int
    max_batch_tokens: int
    auto_truncate: bool


class _Model:
    """One encoder with what the request checks need: its prompts, maximum length and a tokenizer of
    its own for counting (a fast tokenizer is not safe to share with the thread running the model)."""

    def __init__(self, encoder: Any, name: str) -> None:
        self.encoder, self.name = encoder, name
        self.prompts: dict[str, str] = dict(getattr(encoder, "prompts", {}) or {})
        self.max_length: int | None = getattr(encoder, "max_seq_length", None)
        self.counter = copy.deepcopy(encoder.tokenizer)
        # A fast tokenizer's Rust backend counts in half the time of the transformers call (which
        # sets and resets truncation per call); this copy is ours, so it is set once.
        self._backend = (
            getattr(self.counter, "backend_tokenizer", None) if getattr(self.counter, "is_fast", 0) else None
        )
        if self._backend is not None:
            self._backend.no_truncation()
            self._backend.no_padding()
        # Found once: walking the module tree on every pass cost about 1 ms per pass.
        self.tokenizers = _truncating_tokenizers(encoder)
        self.light_queries = light_query_side(encoder)

    def side_and_prompt(self, prompt_name: str | None, fixed_side: str | None) -> tuple[str, str | None]:
        """The side a request goes to, and the explicit prompt name to pass (None: the side's own).

        ``query`` (and the document names ``document``/``passage``/``corpus``) pick the side, with the
        prompt the model has for it; any other name must be one of the model's prompts and goes to
        ``fixed_side`` (document by default, as an ingest needs).
        """
        if prompt_name is None:
            return fixed_side or "document", None
        if prompt_name in QUERY_PROMPT_NAMES or prompt_name in DOCUMENT_PROMPT_NAMES:
            side = "query" if prompt_name in QUERY_PROMPT_NAMES else "document"
            explicit = prompt_name if prompt_name in self.prompts else None
        elif prompt_name in self.prompts:
            side, explicit = fixed_side or "document", prompt_name
        else:
            known = sorted({*self.prompts, *QUERY_PROMPT_NAMES, *DOCUMENT_PROMPT_NAMES})
            raise InvalidInput(f"prompt_name {prompt_name!r} is not a prompt of {self.name}; known: {', '.join(known)}")
        if fixed_side is not None and side != fixed_side:
            raise InvalidInput(f"prompt_name {prompt_name!r} is a {side} prompt, but this is the /{fixed_side} route")
        return side, explicit

    def prompt_text(self, side: str, explicit: str | None) -> str:
        names = (explicit,) if explicit else (QUERY_PROMPT_NAMES if side == "query" else DOCUMENT_PROMPT_NAMES)
        return next((self.prompts[n] for n in names if n in self.prompts), "") or ""

    def count(self, texts: list[str]) -> list[int]:
        """Tokens per text, special tokens included, nothing truncated."""
        if self._backend is not None:
            return [len(e.ids) for e in self._backend.encode_batch(texts, add_special_tokens=True)]
        ids = self.counter(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        return [len(x) for x in ids]


class ModelService:
    """The sparse model (and the dense one of a hybrid config) behind the routes."""

    def __init__(
        self,
        encoder: Any,
        *,
        model_name: str,
        dense_encoder: Any | None = None,
        dense_model_name: str | None = None,
        batch_size: int = 32,
        max_active_dims: int | None = None,
        precision: str = "fp32",
        limits: Limits,
    ) -> None:
        from ..vectors.vocabulary import Vocabulary

        self.sparse = _Model(encoder, model_name)
        self.dense = _Model(dense_encoder, dense_model_name or "dense model") if dense_encoder is not None else None
        self.vocab = Vocabulary(encoder.tokenizer, model_name)
        self.batch_size, self.max_active_dims, self.limits = batch_size, max_active_dims, limits
        self.precision = precision
        self._threads = PassThreads()

    @classmethod
    def from_config(cls, config: Config) -> ModelService:
        """Load what ``config`` names: the sparse model with its precision, checked against
        ``[model] query_side``, and the dense model when ``[search] hybrid = true``."""
        from ..config.builder import build_encoders

        encoders = build_encoders(config)
        s = config.serve
        return cls(
            encoders.encoder,
            model_name=encoders.model_name,
            dense_encoder=encoders.dense_encoder,
            dense_model_name=encoders.dense_model_name,
            batch_size=encoders.batch_size,
            max_active_dims=encoders.max_active_dims,
            precision=encoders.precision,
            limits=Limits(s.max_client_batch_size, s.max_batch_tokens, s.auto_truncate),
        )

    # -- checking a request

    def job(
        self,
        kind: str,
        inputs: str | list[str],
        *,
        fixed_side: str | None = None,
        prompt_name: str | None = None,
        truncate: bool | None = None,
        direction: str = "right",
        normalize: bool = False,
        dimensions: int | None = None,
    ) -> Job:
        """The request's texts as a :class:`Job`, or the error that refuses them (413, 422, 400)."""
        model = self.sparse if kind == "sparse" else self.dense
        if model is None:
            raise NotServed("this server has no dense model: serve a config with [search] hybrid = true")
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        if not texts:
            raise EmptyInput("inputs is empty")
        limit = self.limits.max_client_batch_size
        if len(texts) > limit:
            raise TooLarge(f"inputs holds {len(texts)} texts; max_client_batch_size is {limit}")
        side, explicit = model.side_and_prompt(prompt_name, fixed_side)
        prompt = model.prompt_text(side, explicit)
        counts = model.count([prompt + t for t in texts])
        truncate = self.limits.auto_truncate if truncate is None else truncate
        if model.max_length:
            for i, n in enumerate(counts):
                if n > model.max_length and not truncate:
                    raise TooLarge(
                        f"inputs[{i}] has {n} tokens, more than the model's {model.max_length}: "
                        "shorten it or send truncate=true"
                    )
            counts = [min(n, model.max_length) for n in counts]
        if sum(counts) > self.limits.max_batch_tokens:
            raise TooLarge(
                f"inputs hold {sum(counts)} tokens; max_batch_tokens is {self.limits.max_batch_tokens}: "
                "send fewer texts"
            )
        if dimensions is not None and kind == "dense":
            size = _dense_size(model.encoder)
            if size is not None and dimensions > size:
                raise InvalidInput(f"dimensions = {dimensions}: the model gives {size}")
        key = BatchKey(kind, side, explicit, direction.lower(), normalize, dimensions)
        return Job(key, texts, counts)

    # -- one model pass

    def inline(self, key: BatchKey) -> bool:
        """Whether ``key`` 's passes are cheap enough to run on the event loop, without the model
        thread: the query side of a model whose queries need no transformer (a static IDF lookup)."""
        return key.kind == "sparse" and key.side == "query" and self.sparse.light_queries

    def run(self, key: BatchKey, texts: list[str]) -> list[Any]:
        """Encode ``texts`` in one call of the model: SparseVectors (sparse) or lists of floats (dense).

        The call is the Python API's own (``encode_query`` / ``encode_document`` with the config's
        batch size and ``max_active_dims``), so a request alone gets the vectors a Python caller gets.
        Only the thread count differs: measured once per window for all passes (see
        :class:`PassThreads`), not by every pass.
        """
        from ..vectors.convert import dense_rows, to_sparse_vectors

        model = self.sparse if key.kind == "sparse" else self.dense
        assert model is not None  # job() refused dense requests without a dense model
        encoder = model.encoder
        method = encoder.encode_query if key.side == "query" else encoder.encode_document
        kwargs: dict[str, Any] = {"batch_size": self.batch_size, "show_progress_bar": False}
        if key.prompt_name is not None:
            kwargs["prompt_name"] = key.prompt_name
        # An inline pass (a table lookup on the event loop) keeps the loop thread's count as it is,
        # given as fixed so that the encode call does not measure the free cores either.
        threads = _current_threads() if self.inline(key) else self._threads.current(encoder)
        with truncation_side(model.tokenizers, key.direction), fixed_threads(encoder, threads):
            if key.kind == "sparse":
                if self.max_active_dims is not None:
                    kwargs["max_active_dims"] = self.max_active_dims
                return to_sparse_vectors(method(texts, convert_to_sparse_tensor=True, **kwargs), self.vocab)
            kwargs.update(normalize_embeddings=key.normalize, truncate_dim=key.dimensions)
            return dense_rows(method(texts, **kwargs))

    def info(self) -> dict[str, Any]:
        """The served models as TEI's ``/info`` describes them."""
        return {
            "model_id": self.sparse.name,
            "max_input_length": self.sparse.max_length,
            "dtype": {"fp32": "float32", "bf16": "bfloat16", "int8": "int8"}.get(self.precision, self.precision),
            "prompts": self.sparse.prompts,
            "dense_model_id": self.dense.name if self.dense is not None else None,
        }


def _dense_size(encoder: Any) -> int | None:
    method = getattr(encoder, "get_embedding_dimension", None) or getattr(
        encoder, "get_sentence_embedding_dimension", None
    )
    return int(method()) if method is not None and method() else None


def light_query_side(encoder: Any) -> bool:
    """Whether ``encode_query`` runs no transformer at all: the model is one Router whose query
    route holds only ``SparseStaticEmbedding`` modules (tokenize, then one weight per token)."""
    from ..encoders.modules import Router, SparseStaticEmbedding

    children = list(encoder.children()) if hasattr(encoder, "children") else []
    if len(children) != 1 or not isinstance(children[0], Router):
        return False
    router = children[0]
    try:
        route = router.sub_modules[router.route("query")]
    except (ValueError, KeyError):
        return False
    return all(isinstance(m, SparseStaticEmbedding) for m in route.children())


class PassThreads:
    """torch's intra-op thread count for the model thread's passes, measured at most once per
    :data:`sparsebridge.threads.WINDOW_S` instead of by every pass.

    Each ``encode`` call measures the free cores itself (``/proc/stat``, ``/proc/loadavg`` and
    every thread's ``/proc/self/task/*/stat``: about 1-2 ms on a busy machine), which a server
    making hundreds of small passes a second pays again and again. Here one
    :class:`~sparsebridge.threads.ThreadBudget` lives as long as the server and is re-measured when
    a window has passed; each pass gets its count as a fixed ``num_threads``, so the encode call
    does not measure again. ``SPARSEBRIDGE_NUM_THREADS`` or an encoder's own ``num_threads`` still
    fix the count. Used from the model thread only (torch's count is per thread).
    """

    def __init__(self) -> None:
        self._budget: Any = None
        self._measured = 0.0

    def current(self, encoder: Any) -> int | None:
        """The count for the next pass of ``encoder``; None off CPU (the encode call decides)."""
        import torch

        from ..encoders.runtime import threads

        if torch.device(getattr(encoder, "device", "cpu")).type != "cpu":
            return None
        now = time.monotonic()
        if self._budget is None:
            fixed = threads.fixed_threads(getattr(encoder, "num_threads", None))
            self._budget = threads.ThreadBudget(torch.get_num_threads(), fixed)
            self._budget.start()
            self._measured = now
        elif now - self._measured >= threads.WINDOW_S:
            self._budget.tick()
            self._measured = now
        return self._budget.threads


def _current_threads() -> int:
    import torch

    return torch.get_num_threads()


@contextlib.contextmanager
def fixed_threads(encoder: Any, count: int | None) -> Iterator[None]:
    """Give ``encoder`` the thread count ``count`` for one pass (None: leave it as it is)."""
    if count is None:
        yield
        return
    had = "num_threads" in vars(encoder)
    old = getattr(encoder, "num_threads", None)
    encoder.num_threads = count
    try:
        yield
    finally:
        if had:
            encoder.num_threads = old
        else:
            del encoder.num_threads


def _truncating_tokenizers(encoder: Any) -> list[Any]:
    """The distinct tokenizers in ``encoder`` 's modules that have a ``truncation_side``."""
    found: list[Any] = []
    for module in encoder.modules() if hasattr(encoder, "modules") else ():
        tok = getattr(module, "tokenizer", None)
        if tok is not None and hasattr(tok, "truncation_side") and all(tok is not t for t in found):
            found.append(tok)
    return found


@contextlib.contextmanager
def truncation_side(tokenizers: list[Any], direction: str) -> Iterator[None]:
    """Truncate on ``direction`` for the duration of one pass.

    The tokenizer call takes no truncation side (transformers ignores one passed as a keyword), so
    the tokenizers' attribute is set and restored. Passes on the model thread run one at a time,
    and inline passes run on the event loop between them, never during one (the loop only waits
    for the model thread), so no other pass sees it.
    """
    saved = [(tok, tok.truncation_side) for tok in tokenizers]
    try:
        for tok in tokenizers:
            tok.truncation_side = direction
        yield
    finally:
        for tok, old in saved:
            tok.truncation_side = old
