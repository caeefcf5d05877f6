"""Voices a server offers: the presets of the registered voice sources and voices uploaded to it.

Uploaded voices are ``<data_dir>/voices/<id>.npz``. An id is checked to be a plain name (``check_voice_name``
without the slash), and the resolved file must lie inside that folder: no request reads or writes elsewhere.
Names never reach ``Voice.load`` (which also takes paths): presets go to the voice sources by name only.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any

from barkkit.errors import VoiceError
from barkkit.plugins import Plugins
from barkkit.serve.errors import ApiError
from barkkit.serve.schemas import check_voice_name
from barkkit.voice import Voice, find_preset

__all__ = ["VoiceStore", "check_upload_name"]

_UPLOAD_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")
UPLOADED = "uploaded"


def check_upload_name(name: str) -> str:
    """An uploaded voice's id: one plain name, at most 64 characters, no path separators."""
    if not _UPLOAD_NAME.match(name) or ".." in name:
        raise ApiError(400, f"voice name '{name[:80]}' is not allowed: use 1 to 64 letters, digits, '_', '-' or '.' "
                            "(no path separators, not starting with '.')", param="name", code="invalid_voice_name")
    return name


class VoiceStore:
    """Resolves voice names for requests and keeps the uploaded voices under ``folder``."""

    def __init__(self, folder: Path, plugins: Plugins) -> None:
        self.folder = Path(folder)
        self.plugins = plugins
        self._lock = threading.Lock()

    def _path(self, voice_id: str) -> Path:
        path = (self.folder / f"{voice_id}.npz").resolve()
        if path.parent != self.folder.resolve():  # belt and braces: the name check already forbids this
            raise ApiError(400, f"voice '{voice_id}' is not a voice name", param="voice", code="invalid_voice")
        return path

    def uploaded_ids(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(path.stem for path in self.folder.glob("*.npz") if path.is_file())

    def resolve(self, name: str) -> Voice:
        """The voice called ``name``: an uploaded id first, then a preset of the voice sources."""
        name = check_voice_name(name)
        if "/" not in name and _UPLOAD_NAME.match(name):
            path = self._path(name)
            if path.is_file():
                return Voice.from_npz(path)
        try:
            return find_preset(name, plugins=self.plugins)
        except VoiceError as exc:
            # the library's message ends in advice for the command line (.npz paths, `barkkit voices list`)
            reason = str(exc).split(";")[0]
            raise ApiError(400, f"{reason}; GET /v1/audio/voices lists this server's voices", param="voice",
                           code="unknown_voice") from None

    def check_free(self, voice_id: str) -> Path:
        """The file an upload called ``voice_id`` would get; 409 when the id is taken."""
        path = self._path(check_upload_name(voice_id))
        if path.exists():
            raise ApiError(409, f"a voice named '{voice_id}' exists; choose another name or DELETE "
                                f"/v1/voices/{voice_id} first", param="name", code="voice_exists")
        return path

    def save(self, voice_id: str, voice: Voice) -> Path:
        """Store an uploaded voice; 409 when the id is taken."""
        with self._lock:
            path = self.check_free(voice_id)
            self.folder.mkdir(parents=True, exist_ok=True)
            voice.save(path)
        return path

    def delete(self, voice_id: str) -> None:
        path = self._path(check_upload_name(voice_id))
        with self._lock:
            if not path.is_file():
                raise ApiError(404, f"no uploaded voice '{voice_id}'", param="voice_id", code="unknown_voice")
            os.remove(path)

    def listing(self) -> dict[str, Any]:
        """Every voice a request may name: ``{"voices": [{id, name, source}], "unavailable": [{source, reason}]}``."""
        voices = [{"id": voice_id, "name": voice_id, "source": UPLOADED} for voice_id in self.uploaded_ids()]
        unavailable = []
        registry = self.plugins.voice_sources
        for source_name in registry:
            try:
                names = registry.get(source_name).names()
            except VoiceError as exc:
                unavailable.append({"source": source_name, "reason": str(exc)})
                continue
            voices.extend({"id": name, "name": name, "source": source_name} for name in names)
        return {"object": "list", "voices": voices, "unavailable": unavailable}
