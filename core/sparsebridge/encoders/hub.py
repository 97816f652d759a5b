"""``push_to_hub``: upload an encoder to a Hugging Face Hub repository, with sentence-transformers' signature.

The model is saved (sentence-transformers layout plus model card) into a temporary folder and that
folder is uploaded with ``huggingface_hub``; or an already saved folder is uploaded as it is. Any
failure of the Hub calls (offline mode, no network, refused token, missing repository...) becomes
one ``HubError`` naming the repository and the cause.
"""

from __future__ import annotations

import logging
import tempfile
from typing import Any

from ..errors import HubError

__all__ = ["HubMixin"]

logger = logging.getLogger(__name__)


def _cause(exc: BaseException) -> str:
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__


class HubMixin:
    """``push_to_hub`` for the encoders (needs their ``save``)."""

    def push_to_hub(
        self,
        repo_id: str,
        token: str | None = None,
        private: bool | None = None,
        safe_serialization: bool = True,
        commit_message: str | None = None,
        local_model_path: str | None = None,
        exist_ok: bool = False,
        replace_model_card: bool = False,
        train_datasets: list[str] | None = None,
        revision: str | None = None,
        create_pr: bool = False,
    ) -> str:
        """Upload the model to ``repo_id`` (created if missing) and return the commit URL (or the PR URL).

        ``local_model_path`` uploads that folder instead of saving the model; ``revision`` pushes to
        that branch (created if missing); ``create_pr`` opens a pull request. The model card is only
        written when the repository has no README.md yet, unless ``replace_model_card``.
        """
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        try:
            repo_id = api.create_repo(repo_id=repo_id, private=private, repo_type=None, exist_ok=exist_ok or create_pr)
            repo_id = repo_id.repo_id  # the full id, with the user or organisation the Hub filled in
            if revision is not None:
                api.create_branch(repo_id=repo_id, branch=revision, exist_ok=True)
        except Exception as exc:  # the Hub boundary: every failure here is one clear error
            raise HubError(f"cannot push to the Hugging Face Hub repository {repo_id!r}: {_cause(exc)}") from exc

        name = type(self).__name__
        commit_message = commit_message or f"Add new {name} model"
        description = None
        if create_pr:
            description = (
                f"This pull request adds a {name} model saved by sparsebridge in the sentence-transformers layout.\n\n"
                f"Load it with `{name}({repo_id!r})` (sparsebridge) or sentence-transformers."
            )

        def upload(folder: str) -> Any:
            try:
                return api.upload_folder(
                    repo_id=repo_id,
                    folder_path=folder,
                    commit_message=commit_message,
                    commit_description=description,
                    create_pr=create_pr,
                    revision=revision,
                )
            except Exception as exc:  # the Hub boundary, as above
                raise HubError(f"cannot upload to the Hugging Face Hub repository {repo_id!r}: {_cause(exc)}") from exc

        card_data = getattr(self, "model_card_data", None)
        if card_data is not None:
            card_data.set_model_id(
                repo_id
            )  # the card's usage snippet loads the pushed model, as in sentence-transformers
        if local_model_path:
            result = upload(str(local_model_path))
        else:
            with tempfile.TemporaryDirectory() as folder:
                self.save(  # type: ignore[attr-defined]
                    folder,
                    model_name=repo_id,
                    create_model_card=replace_model_card or not self._hub_has_readme(api, repo_id, revision),
                    train_datasets=train_datasets,
                    safe_serialization=safe_serialization,
                )
                result = upload(folder)
        if create_pr:
            logger.info("A pull request has been created at %s", result.pr_url)
            return result.pr_url
        return result.commit_url

    @staticmethod
    def _hub_has_readme(api: Any, repo_id: str, revision: str | None) -> bool:
        """Whether the repository already has a model card; if that cannot be told, assume it has one,
        so an existing card is never overwritten by accident."""
        try:
            return bool(api.file_exists(repo_id, "README.md", revision=revision))
        except Exception as exc:  # a failed probe must not lose someone's card
            logger.warning(
                "Could not check for an existing README.md on %r (%s); not writing a model card.", repo_id, _cause(exc)
            )
            return True
