"""``push_to_hub``: the real huggingface_hub client offline and against an unreachable endpoint gives one
clear ``HubError``; with the upload calls replaced by a recording double (the Hub cannot be reached
from here), what would be uploaded is the saved model folder with its model card, and
sentence-transformers (the oracle, test-only) loads it with equal embeddings."""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import CommitInfo, HfApi, RepoUrl
from sparsebridge import SparseEncoder
from sparsebridge.errors import HubError, SparsebridgeError

TEXTS = ["boundary layer separation", "heat transfer in hypersonic flow"]


@pytest.fixture
def encoder(splade_path):
    """A model of this test's own: push_to_hub records the repository id in its model card data (as
    sentence-transformers does), which must not reach the session's shared encoder."""
    return SparseEncoder(str(splade_path), device="cpu")


class RecordingHub:
    """A double for the Hub calls of ``HfApi`` (create_repo, create_branch, file_exists, upload_folder):
    it records each call and copies the folder to upload, since the Hub itself cannot be reached here."""

    def __init__(self, tmp_path: Path, readme_on_hub: bool = False) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.uploads: list[Path] = []
        self.tmp_path = tmp_path
        self.readme_on_hub = readme_on_hub

    def install(self, monkeypatch) -> RecordingHub:
        hub = self

        def create_repo(api, repo_id, **kwargs):
            hub.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
            return RepoUrl(f"https://huggingface.co/{repo_id if '/' in repo_id else 'someone/' + repo_id}")

        def create_branch(api, repo_id, **kwargs):
            hub.calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

        def file_exists(api, repo_id, filename, **kwargs):
            hub.calls.append(("file_exists", {"repo_id": repo_id, "filename": filename, **kwargs}))
            return hub.readme_on_hub

        def upload_folder(api, **kwargs):
            hub.calls.append(("upload_folder", kwargs))
            copy = hub.tmp_path / f"upload{len(hub.uploads)}"
            shutil.copytree(kwargs["folder_path"], copy)
            hub.uploads.append(copy)
            url = f"https://huggingface.co/{kwargs['repo_id']}"
            pr = f"{url}/discussions/1" if kwargs.get("create_pr") else None
            return CommitInfo(
                commit_url=f"{url}/commit/abc123",
                commit_message=kwargs["commit_message"],
                commit_description=kwargs.get("commit_description") or "",
                oid="abc123",
                pr_url=pr,
            )

        for name, fn in [
            ("create_repo", create_repo),
            ("create_branch", create_branch),
            ("file_exists", file_exists),
            ("upload_folder", upload_folder),
        ]:
            monkeypatch.setattr(HfApi, name, fn)
        return self

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def test_signature_matches_the_oracle():
    from sentence_transformers import SparseEncoder as OracleEncoder

    def parameters(fn):
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]

    assert parameters(SparseEncoder.push_to_hub) == parameters(OracleEncoder.push_to_hub)


def test_offline_gives_one_clear_error(encoder, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets
    with pytest.raises(HubError) as caught:
        encoder.push_to_hub("someone/sparse-model")
    message = str(caught.value)
    assert "'someone/sparse-model'" in message and "OfflineModeIsEnabled" in message
    assert "\n" not in message
    assert isinstance(caught.value, SparsebridgeError)


def test_unreachable_hub_gives_one_clear_error(encoder, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(HubError, match=r"repository 'someone/sparse-model': \w+") as caught:
        encoder.push_to_hub("someone/sparse-model", token="hf_not_a_real_token")
    assert "\n" not in str(caught.value)


def test_uploads_the_saved_folder_with_its_model_card(encoder, splade_path, tmp_path, monkeypatch):
    from sentence_transformers import SparseEncoder as OracleEncoder

    hub = RecordingHub(tmp_path).install(monkeypatch)
    url = encoder.push_to_hub("someone/sparse-model", private=True, train_datasets=["someone/pairs"])
    assert url == "https://huggingface.co/someone/sparse-model/commit/abc123"
    assert hub.names() == ["create_repo", "file_exists", "upload_folder"]
    create = hub.calls[0][1]
    assert create["private"] is True and create["exist_ok"] is False
    upload = hub.calls[-1][1]
    assert upload["commit_message"] == "Add new SparseEncoder model"
    assert upload["create_pr"] is False and upload["revision"] is None
    (folder,) = hub.uploads
    files = {p.name for p in folder.iterdir()}
    assert {"README.md", "modules.json", "config_sentence_transformers.json", "model.safetensors"} <= files
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert card.count("someone/sparse-model") >= 2  # the title and the usage snippet
    assert "- someone/pairs" in card
    # What would be uploaded is a model sentence-transformers loads, with the original's embeddings.
    uploaded = OracleEncoder(str(folder), device="cpu").encode(TEXTS, convert_to_sparse_tensor=False)
    original = OracleEncoder(str(splade_path), device="cpu").encode(TEXTS, convert_to_sparse_tensor=False)
    assert torch.equal(uploaded, original)


def test_keeps_an_existing_card_unless_asked(encoder, tmp_path, monkeypatch):
    hub = RecordingHub(tmp_path, readme_on_hub=True).install(monkeypatch)
    encoder.push_to_hub("someone/sparse-model", exist_ok=True)
    assert "README.md" not in {p.name for p in hub.uploads[0].iterdir()}
    encoder.push_to_hub("someone/sparse-model", exist_ok=True, replace_model_card=True)
    assert "README.md" in {p.name for p in hub.uploads[1].iterdir()}


def test_branch_pull_request_and_local_folder(encoder, tmp_path, monkeypatch):
    hub = RecordingHub(tmp_path).install(monkeypatch)
    url = encoder.push_to_hub("someone/sparse-model", revision="v2", create_pr=True, commit_message="Update")
    assert url == "https://huggingface.co/someone/sparse-model/discussions/1"
    assert hub.names() == ["create_repo", "create_branch", "file_exists", "upload_folder"]
    assert hub.calls[0][1]["exist_ok"] is True  # a pull request goes to an existing repository
    assert hub.calls[1][1]["branch"] == "v2"
    upload = hub.calls[-1][1]
    assert upload["revision"] == "v2" and upload["create_pr"] is True and upload["commit_message"] == "Update"
    assert "someone/sparse-model" in upload["commit_description"]

    saved = tmp_path / "saved"
    encoder.save(saved, train_datasets=None)
    hub.calls.clear()
    encoder.push_to_hub("model-only-name", local_model_path=str(saved))
    assert hub.names() == ["create_repo", "upload_folder"]
    assert hub.calls[-1][1]["folder_path"] == str(saved)
    assert hub.calls[-1][1]["repo_id"] == "someone/model-only-name"  # the id the Hub completed
