"""Inference-free (static) sparse embeddings: a text becomes the static weight of each distinct
token it contains, with no transformer pass. The query side of "doc-only" SPLADE models, where the
weights are usually IDF values (OpenSearch ships them as ``idf.json``: token -> weight).

Texts are tokenized without special tokens, as those models expect, and truncated to the
tokenizer's ``model_max_length``. For fast tokenizers a private copy of the Rust tokenizer does
the work directly, which keeps a single query well under a millisecond.

``from_corpus`` derives IDF weights from any corpus, so every SPLADE document model can get an
inference-free query side (see its docstring for the formula).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from ..layout import truncation_limit
from .base import Module, filter_config, load_module_weights, read_json, save_module_weights

IDF_FILE = "idf.json"


class SparseStaticEmbedding(Module):
    """One learned weight per vocabulary token, looked up: an inference-free query side (no forward pass)."""

    config_keys: ClassVar[tuple[str, ...]] = ("frozen",)
    # An input module: as the first module of a model it lives in the model root, as in sentence-transformers.
    save_in_root: ClassVar[bool] = True
    st_type: ClassVar[str] = (
        "sentence_transformers.sparse_encoder.modules.sparse_static_embedding.SparseStaticEmbedding"
    )

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, weight: torch.Tensor | None = None, frozen: bool = False
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        if weight is None:
            weight = torch.ones(len(tokenizer.get_vocab()))
        self.weight = nn.Parameter(torch.as_tensor(weight, dtype=torch.float32), requires_grad=not frozen)
        self.frozen = bool(frozen)
        self.num_dimensions = int(self.weight.shape[0])
        self.max_seq_length = tokenizer.model_max_length
        self._backend = None
        self._backend_key = None

    # -- tokenization ---------------------------------------------------------------------------
    def _fast_backend(self):
        """A private copy of the Rust tokenizer, configured once (no padding, truncation at the limit),
        so the padding/truncation state that other modules set on the shared tokenizer never leaks in."""
        limit = truncation_limit(self.max_seq_length)
        key = (id(self.tokenizer), limit)
        if self._backend_key != key:
            self._backend = None
            if getattr(self.tokenizer, "is_fast", False):
                from tokenizers import Tokenizer

                backend = Tokenizer.from_str(self.tokenizer.backend_tokenizer.to_str())
                backend.no_padding()
                if limit:
                    backend.enable_truncation(max_length=limit)
                else:
                    backend.no_truncation()
                self._backend = backend
            self._backend_key = key
        return self._backend

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens."""
        backend = self._fast_backend()
        if backend is not None:
            return [enc.ids for enc in backend.encode_batch(texts, add_special_tokens=False)]
        return self.tokenizer(texts, add_special_tokens=False, truncation=True)["input_ids"]

    def tokenize(self, texts: list[str], **kwargs: Any) -> dict[str, Any]:
        # Token id lists, not padded tensors: forward() needs only the distinct ids of each text.
        return {"token_ids": self.token_ids(texts)}

    def preprocess(self, inputs: list[Any], prompt: str | None = None, **kwargs: Any) -> dict[str, Any]:
        """Padded ``input_ids`` / ``attention_mask`` tensors (no special tokens) plus ``modality``,
        the form sentence-transformers' ``preprocess`` returns; ``forward`` takes either form."""
        if prompt:
            inputs = [(prompt + t[0], t[1]) if isinstance(t, tuple) else prompt + t for t in inputs]
        features: dict[str, Any] = self._padded(self.token_ids(inputs))
        features["modality"] = "text"
        return features

    # -- forward --------------------------------------------------------------------------------
    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """``sentence_embedding`` [batch, vocab]: the weight of each token present, else 0.

        From ``token_ids`` (our tokenize) the result is built directly as a sparse COO tensor, with
        no [batch, vocab] dense pass; from padded ``input_ids`` + ``attention_mask`` it is dense.
        """
        if "token_ids" in features and features.get("sentence_embedding") is None:
            features["sentence_embedding"] = self._sparse_embedding(features["token_ids"])
            return features
        if "token_ids" in features:
            features.update(self._padded(features["token_ids"]))
        ids, mask = features["input_ids"].to(self.weight.device), features["attention_mask"].to(self.weight.device)
        vocab = self.num_dimensions
        # Padding goes to an extra column that is dropped, so a pad id never clears a real token.
        index = ids.masked_fill(mask == 0, vocab)
        presence = torch.zeros(ids.shape[0], vocab + 1, dtype=self.weight.dtype, device=ids.device)
        presence.scatter_(1, index, 1.0)
        embedding = presence[:, :vocab] * self.weight
        if features.get("sentence_embedding") is not None:
            embedding = embedding * features["sentence_embedding"]
        features["sentence_embedding"] = embedding
        return features

    def _padded(self, ids: list[list[int]]) -> dict[str, torch.Tensor]:
        width = max((len(x) for x in ids), default=0)
        input_ids = torch.zeros(len(ids), width, dtype=torch.long)
        mask = torch.zeros(len(ids), width, dtype=torch.long)
        for row, x in enumerate(ids):
            input_ids[row, : len(x)] = torch.tensor(x, dtype=torch.long)
            mask[row, : len(x)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}

    def _sparse_embedding(self, token_ids: list[list[int]]) -> torch.Tensor:
        weight = self.weight.detach()
        table = weight.numpy() if weight.device.type == "cpu" else weight.cpu().numpy()
        rows, cols = [], []
        for row, ids in enumerate(token_ids):
            distinct = np.unique(np.asarray(ids, dtype=np.int64))  # sorted: the result is coalesced
            rows.append(np.full(len(distinct), row, dtype=np.int64))
            cols.append(distinct)
        row = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        col = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
        values = table[col]
        keep = values != 0  # as a dense row's to_sparse() drops them
        indices = torch.from_numpy(np.stack([row[keep], col[keep]]))
        size = (len(token_ids), self.num_dimensions)
        out = torch.sparse_coo_tensor(
            indices, torch.from_numpy(values[keep]), size, is_coalesced=True, check_invariants=False
        )
        return out if weight.device.type == "cpu" else out.to(weight.device)

    def get_sentence_embedding_dimension(self) -> int:
        return self.num_dimensions

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_json(
        cls,
        json_path: str | os.PathLike,
        tokenizer: PreTrainedTokenizerBase,
        token: bool | str | None = None,
        cache_folder: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        **config: Any,
    ) -> SparseStaticEmbedding:
        """Weights from an ``idf.json`` (token -> weight): a file, a folder holding one, or a Hub id."""
        path = Path(json_path)
        if path.is_dir():
            path = path / IDF_FILE
        if not path.is_file():
            from huggingface_hub import hf_hub_download

            try:
                path = Path(
                    hf_hub_download(
                        str(json_path),
                        IDF_FILE,
                        token=token,
                        cache_dir=cache_folder,
                        revision=revision,
                        local_files_only=local_files_only,
                    )
                )
            except Exception as exc:
                raise FileNotFoundError(f"no {IDF_FILE} at {json_path!r} (not a file, folder or Hub model)") from exc
        idf = read_json(path)
        if not isinstance(idf, dict):
            raise ValueError(f"{path}: expected a JSON object mapping tokens to weights")
        vocab = tokenizer.get_vocab()
        weight = torch.zeros(len(vocab), dtype=torch.float32)
        known = [(vocab[t], float(w)) for t, w in idf.items() if t in vocab]
        if known:
            ids, values = zip(*known)
            weight[list(ids)] = torch.tensor(values, dtype=torch.float32)
        return cls(tokenizer, weight=weight, **config)

    @classmethod
    def from_corpus(
        cls,
        tokenizer: PreTrainedTokenizerBase,
        texts: Iterable[str],
        batch_size: int = 1024,
        **config: Any,
    ) -> SparseStaticEmbedding:
        """IDF weights from a corpus: ``idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))``.

        ``N`` is the number of texts and ``df(t)`` the number of texts whose tokens (tokenized as
        queries are: no special tokens, whole text) include ``t``. This is the BM25/Lucene IDF: always
        positive, so a token found in every document still counts a little (plain ``ln(N / df)``
        would drop it to 0, and is undefined for unseen tokens), and it is the same weighting the
        search engines apply to their own terms. Tokens the corpus never contains get the largest
        weight, ``ln(1 + (N + 0.5) / 0.5)``; special tokens get 0.
        """
        module = cls(tokenizer, **config)
        vocab = module.num_dimensions
        df = np.zeros(vocab, dtype=np.int64)
        n = 0
        batch: list[str] = []

        def count(chunk: list[str]) -> None:
            for ids in module.token_ids(chunk):
                if ids:
                    df[np.unique(np.asarray(ids, dtype=np.int64))] += 1

        for text in texts:
            batch.append(text)
            n += 1
            if len(batch) >= batch_size:
                count(batch)
                batch = []
        if batch:
            count(batch)
        if n == 0:
            raise ValueError("from_corpus needs at least one text")
        idf = np.log1p((n - df + 0.5) / (df + 0.5))
        special = [i for i in tokenizer.all_special_ids if 0 <= i < vocab]
        idf[special] = 0.0
        with torch.no_grad():
            module.weight.copy_(torch.from_numpy(idf.astype(np.float32)))
        return module

    # -- persistence ----------------------------------------------------------------------------
    def save(self, output_path: str | os.PathLike, safe_serialization: bool = True) -> None:
        path = Path(output_path)
        path.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(path)
        save_module_weights(self, path, safe_serialization)
        with open(path / self.config_file_name, "w", encoding="utf-8") as fh:
            json.dump(self.get_config_dict(), fh, indent=4)

    @classmethod
    def load(
        cls,
        input_path: str | os.PathLike,
        tokenizer_args: dict[str, Any] | None = None,
        cache_dir: str | None = None,
        **_: Any,
    ) -> SparseStaticEmbedding:
        path = Path(input_path)
        config_file = path / cls.config_file_name
        config = read_json(config_file) if config_file.is_file() else {}
        tokenizer = AutoTokenizer.from_pretrained(path, cache_dir=cache_dir, **(tokenizer_args or {}))
        idf_path = config.get("path") if isinstance(config, dict) else None
        kwargs = filter_config(cls, config, config_file)
        if isinstance(idf_path, str) and idf_path.endswith(".json"):
            local = path / idf_path
            return cls.from_json(local if local.is_file() else idf_path, tokenizer, cache_folder=cache_dir, **kwargs)
        module = cls(tokenizer, **kwargs)
        load_module_weights(module, path)
        return module

    def extra_repr(self) -> str:
        return f"frozen={self.frozen}, dim={self.num_dimensions}, tokenizer={type(self.tokenizer).__name__}"
