"""Hook implementations of barkkit_bark: Bark's three stages and its voice sources."""

from __future__ import annotations

from collections.abc import Callable

from barkkit.hookspecs import hookimpl
from barkkit.voice import FolderVoiceSource


@hookimpl
def register_stages(register: Callable[[type], None]) -> None:
    """``bark.semantic`` (text -> semantic), ``bark.coarse`` (semantic -> coarse), ``bark.fine`` (coarse -> fine)."""
    from barkkit_bark.coarse import CoarseStage
    from barkkit_bark.fine import FineStage
    from barkkit_bark.semantic import SemanticStage

    register(SemanticStage)
    register(CoarseStage)
    register(FineStage)


@hookimpl
def register_voices(register: Callable[[object], None]) -> None:
    """Preset voices: folders in ``BARKKIT_VOICE_PATH`` first, then the hub's ``suno/bark`` speaker embeddings."""
    from barkkit_bark.voices import HubVoiceSource

    register(FolderVoiceSource.from_env("BARKKIT_VOICE_PATH"))
    register(HubVoiceSource())
