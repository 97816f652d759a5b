"""The README.md model card ``save_pretrained`` writes: its facts match the card sentence-transformers
(the oracle, test-only) writes for the same model, and sentence-transformers still loads the folder."""

from __future__ import annotations

import re

import pytest
import torch
import yaml
from sparsebridge import SparseEncoder
from sparsebridge.model_card import model_type_name
from sparsebridge.modules import MLMTransformer, Router, SparseStaticEmbedding, SpladePooling
from tolerances import float32_close

FACTS = ("Model Type", "Maximum Sequence Length", "Output Dimensionality", "Similarity Function")
TEXTS = ["boundary layer separation at hypersonic speeds", "heat transfer", "a"]


def front_matter(card: str) -> dict:
    match = re.match(r"---\n(.*?)\n---\n", card, re.S)
    assert match, "no YAML front matter"
    return yaml.safe_load(match.group(1))


def facts(card: str) -> dict[str, str]:
    return {name: re.search(rf"- \*\*{name}:\*\* (.+)", card).group(1).strip() for name in FACTS}


@pytest.fixture(scope="module")
def saved(encoder, tmp_path_factory):
    path = tmp_path_factory.mktemp("card") / "model"
    encoder.save_pretrained(path, train_datasets=["sentence-transformers/msmarco-bm25"])
    return path


@pytest.fixture(scope="module")
def oracle_card(splade_path, tmp_path_factory):
    from sentence_transformers import SparseEncoder as OracleEncoder

    path = tmp_path_factory.mktemp("oracle_card")
    OracleEncoder(str(splade_path), device="cpu").save_pretrained(str(path))
    return (path / "README.md").read_text(encoding="utf-8")


def test_card_is_written_with_the_oracles_facts(saved, oracle_card):
    card = (saved / "README.md").read_text(encoding="utf-8")
    assert facts(card) == facts(oracle_card)
    assert facts(card)["Model Type"] == "SPLADE Sparse Encoder"
    ours, theirs = front_matter(card), front_matter(oracle_card)
    assert ours["library_name"] == theirs["library_name"] == "sentence-transformers"
    assert ours["pipeline_tag"] == theirs["pipeline_tag"]
    assert set(theirs["tags"]) <= set(ours["tags"])
    assert ours["datasets"] == ["sentence-transformers/msmarco-bm25"]


def test_card_lists_the_modules_and_a_usage_snippet_that_runs(saved, oracle_card, capsys):
    card = (saved / "README.md").read_text(encoding="utf-8")
    architecture = re.search(r"### Full Model Architecture\n\n```\n(.*?)\n```", card, re.S).group(1)
    assert architecture.splitlines()[0] == "SparseEncoder("
    assert '(0): MLMTransformer({"max_seq_length": 512' in architecture and '"BertForMaskedLM"' in architecture
    assert '(1): SpladePooling({"pooling_strategy": "max", "activation_function": "relu"' in architecture
    snippet = re.search(r"```python\n(.*?)\n```", card, re.S).group(1)
    assert "from sparsebridge import SparseEncoder" in snippet
    # The outputs printed in the card are what the model gives: the oracle's card prints the same matrix.
    printed = [line for line in snippet.splitlines() if line.startswith(("# tensor", "#  "))]
    oracle_snippet = re.search(r"```python\n(.*?)\n```", oracle_card, re.S).group(1)
    assert printed and all(line in oracle_snippet for line in printed)
    # Run the snippet on the saved folder and compare what it prints with the card's comments.
    capsys.readouterr()
    exec(compile(snippet.replace("'path/to/this/model'", repr(str(saved)) + ", device='cpu'"), "card", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "torch.Size([3, 30522])"
    assert len(printed) == 3
    with torch._tensor_str.printoptions(precision=4, sci_mode=False):
        assert out[1:4] == [line[2:] for line in printed]


def test_sentence_transformers_loads_the_folder_with_equal_embeddings(splade_path, saved):
    from sentence_transformers import SparseEncoder as OracleEncoder

    reloaded = OracleEncoder(str(saved), device="cpu").encode(TEXTS, convert_to_sparse_tensor=False)
    original = OracleEncoder(str(splade_path), device="cpu").encode(TEXTS, convert_to_sparse_tensor=False)
    assert torch.equal(reloaded, original)
    ours = SparseEncoder(str(saved), device="cpu").encode(TEXTS, convert_to_sparse_tensor=False)
    assert float32_close(ours, original)


def test_no_card_when_not_asked(encoder, tmp_path):
    encoder.save_pretrained(tmp_path, create_model_card=False)
    assert not (tmp_path / "README.md").exists()


def test_model_type_of_an_inference_free_router_model(splade_path):
    transformer = MLMTransformer(str(splade_path))
    static = SparseStaticEmbedding.from_corpus(transformer.tokenizer, ["wing flutter", "shock wave"], frozen=True)
    model = SparseEncoder(
        modules=[Router.for_query_document([static], [transformer, SpladePooling("max", "relu")])], device="cpu"
    )
    # sentence-transformers' own name for this layout (sparse_encoder/model_card.py)
    assert model_type_name(model) == "Asymmetric Inference-free SPLADE Sparse Encoder"


def test_dense_encoder_card(minilm_path, tmp_path):
    from sparsebridge import DenseEncoder

    DenseEncoder(str(minilm_path), device="cpu").save_pretrained(tmp_path)
    card = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert facts(card)["Output Dimensionality"] == "384 dimensions"
    assert "from sparsebridge import DenseEncoder" in card
    assert front_matter(card)["pipeline_tag"] == "sentence-similarity"


def test_a_hub_id_becomes_the_base_model(encoder, monkeypatch):
    from sparsebridge.model_card import model_card_text

    monkeypatch.setattr(encoder, "model_name_or_path", "naver/splade-v3")
    card = model_card_text(encoder, model_name="someone/finetuned")
    assert front_matter(card)["base_model"] == "naver/splade-v3"
    # sentence-transformers' wording for the same fact (sparse_encoder/model_card_template.md)
    assert "- **Base model:** [naver/splade-v3](https://huggingface.co/naver/splade-v3)" in card
    assert card.splitlines()[front_matter_end(card)] == "# someone/finetuned"


def front_matter_end(card: str) -> int:
    lines = card.splitlines()
    return lines.index("---", 1) + 2


def test_saving_keeps_training_mode(splade_path, tmp_path):
    model = SparseEncoder(str(splade_path), device="cpu")
    model.train()
    model.save_pretrained(tmp_path)  # the card runs the usage example, which encodes in eval mode
    assert model.training and all(m.training for m in model.modules())


CARD_FACTS = {"language": "en", "license": "apache-2.0", "model_name": "Tiny SPLADE", "model_id": "me/tiny-splade"}


def card_with(cls, data_cls, path, model_dir, **data):
    data = {k: list(v) if isinstance(v, list) else v for k, v in data.items()}  # registering adds tags in place
    model = cls(str(model_dir), device="cpu", model_card_data=data_cls(local_files_only=True, **data))
    model.save_pretrained(str(path))
    return (path / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("tags", [None, ["cranfield", "aero"]])
def test_model_card_data_drives_the_card_as_in_the_oracle(splade_path, tmp_path, tags):
    """What the user puts in ``model_card_data`` lands in the card where sentence-transformers puts it:
    language, license and tags in the front matter, the model name as title, the model id in the snippet."""
    from sentence_transformers import SparseEncoder as OracleEncoder
    from sentence_transformers.sparse_encoder.model_card import SparseEncoderModelCardData as OracleData
    from sparsebridge.model_card_data import SparseEncoderModelCardData

    data = {**CARD_FACTS, **({"tags": tags} if tags else {})}
    theirs = card_with(OracleEncoder, OracleData, tmp_path / "oracle", splade_path, **data)
    ours = card_with(SparseEncoder, SparseEncoderModelCardData, tmp_path / "ours", splade_path, **data)
    front, oracle_front = front_matter(ours), front_matter(theirs)
    for key in ("language", "license", "pipeline_tag", "library_name"):
        assert front[key] == oracle_front[key], key
    assert front["language"] == ["en"] and front["license"] == "apache-2.0"
    # The same tags in the same order; ours adds its own name last.
    assert front["tags"] == [*oracle_front["tags"], "sparsebridge"]
    if tags:
        assert front["tags"][:2] == tags
    title = next(line for line in ours.splitlines() if line.startswith("# "))
    assert title == next(line for line in theirs.splitlines() if line.startswith("# ")) == "# Tiny SPLADE"
    for line in ("- **Language:** en", "- **License:** apache-2.0"):
        assert line in ours and line in theirs
    assert "SparseEncoder('me/tiny-splade')" in ours and 'SparseEncoder("me/tiny-splade")' in theirs


def test_model_card_data_defaults_name_the_model_type(encoder):
    data = encoder.model_card_data
    assert data.model_type == "SPLADE Sparse Encoder" and data.model is encoder
    assert data.get_default_model_name() == "SPLADE Sparse Encoder"
    data_without_id = type(data)(model_id="no-organisation")  # sentence-transformers drops such an id
    assert data_without_id.model_id is None


def test_model_card_data_training_datasets_become_metadata(splade_path, tmp_path):
    from sparsebridge.model_card_data import SparseEncoderModelCardData

    card = card_with(
        SparseEncoder,
        SparseEncoderModelCardData,
        tmp_path,
        splade_path,
        train_datasets=[{"name": "MS MARCO", "id": "sentence-transformers/msmarco-bm25"}, {"name": "local"}],
    )
    assert front_matter(card)["datasets"] == ["sentence-transformers/msmarco-bm25"]
    assert "- **Training Datasets:** MS MARCO, local" in card
