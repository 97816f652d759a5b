"""The README.md model card that ``save_pretrained`` writes next to a saved model.

The user's facts come from the model's ``model_card_data`` (``sparsebridge.model_card_data``):
language, license, title, Hub id, datasets and tags, as in sentence-transformers.

It carries what a sentence-transformers card carries, so the Hub shows the model the same way:
Hub metadata (library, pipeline tag, tags, base model, datasets), the model type (``SPLADE Sparse
Encoder``, ``Asymmetric Inference-free SPLADE Sparse Encoder``...), maximum sequence length,
output dimensionality, similarity function, the module listing, and a usage snippet, here for
sparsebridge, with the outputs the saved model really gives on the example sentences.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import re
from pathlib import Path
from typing import Any

from .._version import __version__
from .model_card_data import (
    DEFAULT_USAGE_EXAMPLES,
    SPARSE_TYPE_WORDS,
    SentenceTransformerModelCardData,
    SparseEncoderModelCardData,
)

__all__ = ["architecture", "model_card_text", "model_type_name", "write_model_card"]

logger = logging.getLogger(__name__)

README = "README.md"
EXAMPLES = list(DEFAULT_USAGE_EXAMPLES)
SIMILARITY_NAMES = {
    "cosine": "Cosine Similarity",
    "dot": "Dot Product",
    "euclidean": "Euclidean Distance",
    "manhattan": "Manhattan Distance",
}


def _is_sparse(model: Any) -> bool:
    return getattr(model, "model_type", "") == "SparseEncoder"


def model_type_name(model: Any) -> str:
    """``"SPLADE Sparse Encoder"``, ``"CSR Sparse Encoder"``... from the modules; dense: ``"Sentence Transformer"``."""
    if not _is_sparse(model):
        return "Sentence Transformer"
    present = {type(m).__name__ for m in model.modules()}
    return " ".join([word for cls, word in SPARSE_TYPE_WORDS if cls in present] + ["Sparse Encoder"])


def _base_model(model: Any) -> str | None:
    """The Hub id the model was loaded from, if it was one (a local folder is no base model)."""
    name = getattr(model, "model_name_or_path", None)
    if not name or os.path.exists(name) or name.count("/") != 1 or name.startswith((".", "/", "~")):
        return None
    return name


def _card_data(model: Any) -> Any:
    """The model's card data; a fresh default one for a model that has none (e.g. built by hand)."""
    data = getattr(model, "model_card_data", None)
    if data is None:
        data = (SparseEncoderModelCardData if _is_sparse(model) else SentenceTransformerModelCardData)(
            local_files_only=True
        )
        data.register_model(model)
    return data


def _metadata(model: Any, data: Any, train_datasets: list[str] | None) -> dict[str, Any]:
    if _is_sparse(model):
        present = {type(m).__name__ for m in model.modules()}
        type_tags = [word.lower() for cls, word in SPARSE_TYPE_WORDS if cls in present]
    else:
        type_tags = ["dense"]
    tags = list(data.tags) + [t for t in [*type_tags, "sparsebridge"] if t not in data.tags]
    meta: dict[str, Any] = {}
    if data.language:
        meta["language"] = list(data.language)
    if data.license:
        meta["license"] = data.license
    meta["tags"] = tags
    meta["pipeline_tag"] = data.pipeline_tag or ("feature-extraction" if _is_sparse(model) else "sentence-similarity")
    base = data.base_model or _base_model(model)
    if base:
        meta["base_model"] = base
    datasets = [*data.dataset_ids(), *(d for d in (train_datasets or []) if d not in data.dataset_ids())]
    if datasets:
        meta["datasets"] = datasets
    meta["library_name"] = data.library_name  # the layout is sentence-transformers'; it loads it
    return meta


def architecture(model: Any) -> str:
    """The module listing, one line per sparsebridge module with its config (routes nested, transformer
    internals left out), like the listing sentence-transformers prints."""
    from torch import nn

    from .modules.base import Module

    def lines(parent: nn.Module, depth: int) -> list[str]:
        out = []
        for name, child in parent.named_children():
            pad = "  " * depth
            if isinstance(child, Module):
                config = child.extra_repr()
                inner = getattr(child, "auto_model", None)
                if inner is not None:  # name the Hugging Face architecture instead of printing it
                    arch = type(inner).__name__
                    config = config[:-1] + f', "architecture": "{arch}"}}' if config.endswith("}") else arch
                nested = [] if inner is not None else lines(child, depth + 1)
                if nested:
                    out += [f"{pad}({name}): {type(child).__name__}({config}", *nested, f"{pad})"]
                else:
                    out.append(f"{pad}({name}): {type(child).__name__}({config})")
            elif isinstance(child, (nn.ModuleDict, nn.ModuleList, nn.Sequential)):
                nested = lines(child, depth + 1)
                out += [f"{pad}({name}): {type(child).__name__}(", *nested, f"{pad})"] if nested else []
        return out

    return "\n".join([f"{type(model).__name__}(", *lines(model, 1), ")"])


def _yaml_scalar(value: str) -> str:
    # plain where YAML reads it back as the same string, JSON-quoted (valid YAML) otherwise
    return value if re.fullmatch(r"[A-Za-z][A-Za-z0-9._/-]*", value) else json.dumps(value, ensure_ascii=False)


def _front_matter(meta: dict[str, Any]) -> str:
    lines = []
    for key, value in meta.items():
        if isinstance(value, list):
            lines += [f"{key}:", *(f"- {_yaml_scalar(str(v))}" for v in value)]
        else:
            lines.append(f"{key}: {_yaml_scalar(str(value))}")
    return "\n".join(lines)


def _example_outputs(model: Any) -> tuple[str, str] | None:
    """The shape and similarity matrix the model gives on the example sentences, as printed."""
    import torch

    training = model.training  # encoding switches to eval mode; a save during training must not
    try:
        embeddings = model.encode(EXAMPLES, show_progress_bar=False)
        similarities = model.similarity(embeddings, embeddings)
        with torch._tensor_str.printoptions(precision=4, sci_mode=False):
            printed = str(similarities.cpu())
    except Exception as exc:  # the card is still worth writing without the example outputs
        logger.warning("model card: could not run the usage example (%s: %s)", type(exc).__name__, exc)
        return None
    finally:
        model.train(training)
    shape = f"# {list(embeddings.shape)}"
    return shape, "\n".join(f"# {line}" for line in printed.splitlines())


def _side_lengths(model: Any) -> str:
    """The per-side token caps of the input transformer, as indented card lines (none when unset)."""
    module = model[0] if len(model) else None
    lines = ""
    for side, attr in (("Query", "query_length"), ("Document", "document_length")):
        value = getattr(module, attr, None)
        if value:
            lines += f"\n    - **Maximum {side} Length:** {value} tokens"
    return lines


def _usage(model: Any, model_id: str, run_example: bool = True) -> str:
    cls = "SparseEncoder" if _is_sparse(model) else "DenseEncoder"
    outputs = _example_outputs(model) if run_example else None
    shape, similarities = outputs if outputs else ("", "")
    lines = [
        "```python",
        f"from sparsebridge import {cls}",
        "",
        f"model = {cls}({model_id!r})",
        "sentences = [",
        *(f"    {s!r}," for s in EXAMPLES),
        "]",
        "embeddings = model.encode(sentences)",
        "print(embeddings.shape)",
        *([shape] if shape else []),
        "",
        "similarities = model.similarity(embeddings, embeddings)",
        "print(similarities)",
        *([similarities] if similarities else []),
    ]
    if _is_sparse(model):
        lines += ["", "# the strongest tokens of the first sentence", "print(model.decode(embeddings[0], top_k=5))"]
    lines.append("```")
    return "\n".join(lines)


def _versions() -> list[str]:
    import torch
    import transformers

    rows = [
        f"- Python: {platform.python_version()}",
        f"- sparsebridge: {__version__}",
        f"- Transformers: {transformers.__version__}",
        f"- PyTorch: {torch.__version__}",
    ]
    for package, label in (("huggingface_hub", "huggingface_hub"), ("tokenizers", "Tokenizers"), ("peft", "PEFT")):
        with contextlib.suppress(ImportError):
            rows.append(f"- {label}: {__import__(package).__version__}")
    return rows


def model_card_text(model: Any, model_name: str | None = None, train_datasets: list[str] | None = None) -> str:
    """The model card (Markdown with YAML front matter) for ``model``; ``model_name`` is its Hub id, if any.

    The model's ``model_card_data`` gives the title, language, license, tags, Hub id and datasets;
    ``train_datasets`` (dataset ids, sentence-transformers' older ``save`` argument) adds to them.
    """
    data = _card_data(model)
    kind = model_type_name(model)
    base = data.base_model or _base_model(model)
    dim = model.get_sentence_embedding_dimension()
    max_active = getattr(model, "max_active_dims", None)
    similarity = model.similarity_fn_name
    base_line = f"- **Base model:** [{base}](https://huggingface.co/{base})" if base else None
    if base_line and data.base_model_revision:
        base_line += f" <!-- at revision {data.base_model_revision} -->"
    details = [
        f"- **Model Type:** {kind}",
        base_line or "<!-- - **Base model:** unknown -->",
        f"- **Maximum Sequence Length:** {model.max_seq_length} tokens" + _side_lengths(model),
        f"- **Output Dimensionality:** {dim} dimensions"
        + (f" (at most {max_active} active dimensions)" if max_active else ""),
        f"- **Similarity Function:** {SIMILARITY_NAMES.get(similarity, similarity.replace('_', ' ').title())}",
    ]
    dataset_names = [d["name"] for d in data.train_datasets if d.get("name")]
    dataset_names += [d for d in train_datasets or [] if d not in dataset_names]
    if dataset_names:
        details.append("- **Training Datasets:** " + ", ".join(dataset_names))
    if data.language:
        details.append(f"- **Language{'s' if len(data.language) > 1 else ''}:** " + ", ".join(data.language))
    if data.license:
        details.append(f"- **License:** {data.license}")
    space = f"{dim}-dimensional sparse vector space" if _is_sparse(model) else f"{dim}-dimensional dense vector space"
    task = data.task_name or ("semantic search and sparse retrieval" if _is_sparse(model) else "semantic search")
    front = _front_matter(_metadata(model, data, train_datasets))
    model_id = data.model_id or model_name
    sections = [
        f"---\n{front}\n---",
        f"# {data.model_name or model_name or kind + ' model'}",
        f"This is a {kind} model{f' finetuned from [{base}](https://huggingface.co/{base})' if base else ''}. "
        f"It maps text to a {space} and can be used for {task}. It was saved by sparsebridge in the "
        "sentence-transformers layout, so sparsebridge and sentence-transformers both load it.",
        "## Model Details\n\n### Model Description\n" + "\n".join(details),
        f"### Full Model Architecture\n\n```\n{architecture(model)}\n```",
        "## Usage\n\nInstall sparsebridge, then load the model and run inference:\n\n"
        + _usage(model, model_id or "path/to/this/model", run_example=data.generate_widget_examples),
        "## Framework Versions\n\n" + "\n".join(_versions()),
    ]
    return "\n\n".join(sections) + "\n"


def write_model_card(
    model: Any, folder: str | os.PathLike, model_name: str | None = None, train_datasets: list[str] | None = None
) -> Path:
    """Write ``README.md`` into ``folder`` (``save_pretrained(create_model_card=True)`` calls it); returns the path."""
    path = Path(folder) / README
    data = getattr(model, "model_card_data", None)
    if data is not None:
        data.save_dir = str(folder)
    text = model_card_text(model, model_name=model_name, train_datasets=train_datasets)
    path.write_text(text, encoding="utf-8")
    return path
