"""What the model card says about a model beyond its modules: the user's facts (language, license,
name, Hub id, datasets, tags) and the ones found when the model registers itself (model type, tags,
base model). ``SparseEncoder(..., model_card_data=SparseEncoderModelCardData(...))`` takes one, as
in sentence-transformers, and ``save_pretrained`` writes the README.md card from it
(``sparsebridge.model_card``).

The fields and methods a user touches have sentence-transformers' names and defaults; what only
its trainer fills (losses, training logs, evaluation results, widget examples) is not kept here,
since training stays with sentence-transformers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = ["SentenceTransformerModelCardData", "SparseEncoderModelCardData"]

logger = logging.getLogger(__name__)

# (module class name, word in the model type), in the order sentence-transformers names them
# The sentences of the card's usage example when none are given.
DEFAULT_USAGE_EXAMPLES = ("The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium.")
SPARSE_TYPE_WORDS = (
    ("Router", "Asymmetric"),
    ("SparseStaticEmbedding", "Inference-free"),
    ("SpladePooling", "SPLADE"),
    ("SparseAutoEncoder", "CSR"),
)


@dataclass
class SentenceTransformerModelCardData:
    """Model-card facts of a dense encoder (and the base of ``SparseEncoderModelCardData``).

    Args:
        language: the model language(s), e.g. ``"en"`` or ``["en", "de"]`` (kept as a list).
        license: e.g. ``"apache-2.0"``.
        model_name: the card's title; by default the model type (and base model, if known).
        model_id: the Hub id the model is pushed to, e.g. ``"me/splade-tiny"`` (used in the usage
            snippet); an id without an organisation or user is dropped with a warning.
        train_datasets / eval_datasets: ``[{"name": ..., "id": ...}]``; a missing name is the id.
        task_name: what the model is for, in words.
        tags: Hub tags; the model type's tags are added when the model registers.
        local_files_only: never ask the Hub (for the base model).
        generate_widget_examples: run the usage example on save and print its outputs in the card.
    """

    language: str | list[str] | None = field(default_factory=list)
    license: str | None = None
    model_name: str | None = None
    model_id: str | None = None
    train_datasets: list[dict[str, str]] = field(default_factory=list)
    eval_datasets: list[dict[str, str]] = field(default_factory=list)
    task_name: str | None = "retrieval"
    tags: list[str] = field(
        default_factory=lambda: ["sentence-transformers", "sentence-similarity", "feature-extraction"]
    )
    local_files_only: bool = False
    generate_widget_examples: bool = field(default=True)

    # Found later: by register_model / set_base_model, or by saving (save_dir).
    base_model: str | None = field(default=None, init=False)
    base_model_revision: str | None = field(default=None, init=False)
    pipeline_tag: str = field(default="sentence-similarity", init=False)
    library_name: str = field(default="sentence-transformers", init=False)
    model_type: str = field(default="Sentence Transformer", init=False, repr=False)
    save_dir: str | None = field(default=None, init=False, repr=False)
    model: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.language, str):
            self.language = [self.language]
        self.language = list(self.language or [])
        self.train_datasets = self.validate_datasets(self.train_datasets)
        self.eval_datasets = self.validate_datasets(self.eval_datasets)
        if self.model_id and self.model_id.count("/") != 1:
            logger.warning(
                f"The provided {self.model_id!r} model ID should include the organization or user,"
                ' such as "tomaarsen/mpnet-base-nli-matryoshka". Setting `model_id` to None.'
            )
            self.model_id = None

    def validate_datasets(self, dataset_list: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The dataset entries with a ``name`` each (the id where none is given).

        Unlike sentence-transformers, ids are not looked up on the Hub (it is often unreachable
        where sparsebridge runs): the card lists them as the user gave them.
        """
        out = []
        for i, dataset in enumerate(dataset_list or []):
            if not isinstance(dataset, dict) or not ({"name", "id"} & set(dataset)):
                raise ValueError(f"dataset {i} must be a dict with a 'name' and/or 'id', got {dataset!r}")
            out.append({"name": dataset.get("name", dataset.get("id")), **dataset})
        return out

    def register_model(self, model: Any) -> None:
        """Remember the model the card describes (the constructor calls this)."""
        self.model = model

    def set_model_id(self, model_id: str) -> None:
        """The Hub id the card's usage snippet loads (``push_to_hub`` sets it)."""
        self.model_id = model_id

    def set_base_model(self, model_id: str, revision: str | None = None) -> bool:
        """Name ``model_id`` as the base model if the Hub confirms it exists; False when it cannot
        (``local_files_only``, offline, unknown id), as in sentence-transformers."""
        if self.local_files_only:
            return False
        try:
            from huggingface_hub import model_info

            info = model_info(model_id, revision=revision)
        except Exception:  # no network, no such model, offline mode: the card just names no base model
            return False
        self.base_model = info.id
        self.base_model_revision = info.sha if revision in (None, "main") else revision
        return True

    def set_language(self, language: str | list[str]) -> None:
        """The model language(s); one string becomes a one-item list."""
        self.language = [language] if isinstance(language, str) else list(language)

    def set_license(self, license: str) -> None:
        """The license the card's metadata names, e.g. ``"apache-2.0"``."""
        self.license = license

    def add_tags(self, tags: str | list[str]) -> None:
        """Add tags not present yet, keeping their order."""
        for tag in [tags] if isinstance(tags, str) else tags:
            if tag not in self.tags:
                self.tags.append(tag)

    def get_default_model_name(self) -> str:
        """The card's title when no ``model_name`` is given: the class, and the base model if known."""
        if self.base_model:
            return f"{type(self.model).__name__} based on {self.base_model}"
        return type(self.model).__name__

    # (our class, sentence-transformers' class) named in the usage snippet, and the id shown without model_id.
    _snippet_class: ClassVar[tuple[str, str]] = ("DenseEncoder", "SentenceTransformer")
    _snippet_default_id: ClassVar[str] = "sentence_transformers_model_id"

    def generate_usage_snippet(self) -> str:
        """The card's Python usage block (with its ``` fences): load by ``model_id`` and encode the
        ``usage_examples`` (set on the instance; three example sentences otherwise).

        It names sparsebridge's class and says that sentence-transformers' class of the same model
        type loads the same files, since saved models are interchangeable between the two.
        """
        ours, theirs = self._snippet_class
        model_id = self.model_id or self._snippet_default_id
        examples = list(getattr(self, "usage_examples", None) or DEFAULT_USAGE_EXAMPLES)
        return "\n".join(
            [
                "```python",
                f"from sparsebridge import {ours}",
                f"# the same files load with `from sentence_transformers import {theirs}`",
                "",
                f'model = {ours}("{model_id}")',
                "sentences = [",
                *(f"    {text!r}," for text in examples),
                "]",
                "embeddings = model.encode(sentences)",
                "similarities = model.similarity(embeddings, embeddings)",
                "```",
            ]
        )

    def dataset_ids(self) -> list[str]:
        """The Hub ids of the training datasets, for the card's ``datasets`` metadata."""
        return [d["id"] for d in self.train_datasets if d.get("id")]


@dataclass
class SparseEncoderModelCardData(SentenceTransformerModelCardData):
    """Model-card facts of a ``SparseEncoder``; the fields of ``SentenceTransformerModelCardData``,
    with sentence-transformers' sparse defaults (tags, task, pipeline tag).

    Example::

        model = SparseEncoder(
            "naver/splade-v3",
            model_card_data=SparseEncoderModelCardData(language="en", license="apache-2.0", model_id="me/splade"),
        )
    """

    task_name: str | None = None
    tags: list[str] = field(default_factory=lambda: ["sentence-transformers", "sparse-encoder", "sparse"])
    pipeline_tag: str = field(default=None, init=False)
    model_type: str = field(default="Sparse Encoder", init=False, repr=False)

    def register_model(self, model: Any) -> None:
        """Remember the model, and name its type from its modules (``"SPLADE Sparse Encoder"``...),
        adding the matching tags (``splade``, ``csr``...)."""
        super().register_model(model)
        if self.task_name is None:
            self.task_name = "semantic search and sparse retrieval"
        if self.pipeline_tag is None:
            self.pipeline_tag = "feature-extraction"
        present = {type(m).__name__ for m in model.modules()}
        words = [word for cls, word in SPARSE_TYPE_WORDS if cls in present]
        self.add_tags([word.lower() for word in words])
        self.model_type = " ".join([*words, "Sparse Encoder"])

    def get_default_model_name(self) -> str:
        """The card's title when no ``model_name`` is given: the model type (``"SPLADE Sparse Encoder"``)."""
        return self.model_type

    _snippet_class: ClassVar[tuple[str, str]] = ("SparseEncoder", "SparseEncoder")
    _snippet_default_id: ClassVar[str] = "sparse_encoder_model_id"
