"""Bark's preset voices on the Hugging Face hub, in the layout transformers' ``BarkProcessor`` reads.

``suno/bark`` (and ``suno/bark-small``) hold ``speaker_embeddings_path.json``, which maps each preset name
(``v2/en_speaker_6``) to three ``.npy`` files under ``speaker_embeddings/``::

    {"repo_or_path": "...", "v2/en_speaker_6": {"semantic_prompt": "speaker_embeddings/v2/en_speaker_6_semantic_prompt.npy",
                                                "coarse_prompt": "...", "fine_prompt": "..."}, ...}

Files come through huggingface_hub: its cache, its offline mode (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import json
import os
from pathlib import PurePosixPath
from typing import Any

from barkkit.errors import VoiceError
from barkkit.voice import TOKEN_KEYS, Voice, VoiceSource, load_token_array
from barkkit.weights import hub_download

__all__ = ["HubVoiceSource", "DEFAULT_VOICE_REPO"]

DEFAULT_VOICE_REPO = "suno/bark"
INDEX_FILE = "speaker_embeddings_path.json"


class HubVoiceSource(VoiceSource):
    """Preset voices of a hub repository (default ``suno/bark``; ``BARKKIT_VOICE_REPO`` picks another)."""

    def __init__(self, repo_id: str | None = None, *, revision: str | None = None) -> None:
        self.repo_id = repo_id or os.environ.get("BARKKIT_VOICE_REPO") or DEFAULT_VOICE_REPO
        self.revision = revision
        self.name = f"hub:{self.repo_id}"

    def _download(self, filename: str, what: str) -> str:
        from huggingface_hub.errors import (
            EntryNotFoundError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
        )

        try:
            return hub_download(self.repo_id, filename, revision=self.revision)
        except LocalEntryNotFoundError:
            raise VoiceError(
                f"{what} from hub {self.repo_id} is not in the local cache and the hub cannot be reached (offline, "
                f"or HF_HUB_OFFLINE=1): fetch it once online with `hf download {self.repo_id} {filename}`"
            ) from None
        except EntryNotFoundError:
            raise VoiceError(f"hub {self.repo_id} has no {filename}; it does not hold Bark voices") from None
        except RepositoryNotFoundError:
            raise VoiceError(f"hub repository {self.repo_id} does not exist (or is private)") from None
        except (OSError, ValueError) as exc:
            raise VoiceError(f"cannot fetch {filename} from hub {self.repo_id}: {exc}") from None

    def _index(self) -> dict[str, Any]:
        path = self._download(INDEX_FILE, "the voice list")
        try:
            with open(path, encoding="utf-8") as file:
                index = json.load(file)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise VoiceError(f"{path}: not a readable voice list ({exc})") from None
        if not isinstance(index, dict):
            raise VoiceError(f"{path}: not a voice list (expected a JSON object)")
        return index

    def names(self) -> list[str]:
        """The preset names, when the list is cached or the hub is reachable; else ``VoiceError`` saying so."""
        index = self._index()
        return sorted(name for name, entry in index.items() if name != "repo_or_path" and isinstance(entry, dict))

    def find(self, name: str) -> Voice | None:
        """The preset ``name``, or None when the repository has no such preset."""
        entry = self._index().get(name)
        if name == "repo_or_path" or not isinstance(entry, dict):
            return None
        arrays = {}
        for key in TOKEN_KEYS:
            relative = entry.get(key)
            parts = PurePosixPath(relative).parts if isinstance(relative, str) else ()
            if not parts or relative.startswith("/") or ".." in parts:  # the list may only name files of the repo
                raise VoiceError(f"hub {self.repo_id}: voice '{name}' has no valid {key} path in {INDEX_FILE}")
            path = self._download(relative, f"voice '{name}'")
            arrays[key] = load_token_array(path, key)  # checked from its header first: a repository may be hostile
        return Voice.from_dict(arrays, source=f"hub {self.repo_id}: {name}")
