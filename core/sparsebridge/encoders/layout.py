"""Names of the sentence-transformers model layout on disk, and the prompt names of each side.

Torch-free, so that code reading a model folder without loading it (the inference-free query side
in ``static_query``) and the loaders share one spelling of each.
"""

from __future__ import annotations

MODULES_FILE = "modules.json"
ST_MODEL_CONFIG = "config_sentence_transformers.json"
ROUTER_CONFIG = "router_config.json"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
LEGACY_WEIGHTS_FILE = "pytorch_model.bin"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"

QUERY_PROMPT_NAMES = ("query",)
DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")

# Tokenizers without a length limit report a huge sentinel as model_max_length.
NO_LENGTH_LIMIT = 1_000_000


def truncation_limit(model_max_length: object) -> int:
    """The length a tokenizer truncates at: its ``model_max_length``, or 0 for none (the no-limit
    sentinel, or no integer at all)."""
    if isinstance(model_max_length, int) and 0 < model_max_length < NO_LENGTH_LIMIT:
        return model_max_length
    return 0
