"""Hook implementations of barkkit_hubert: the ``hubert.semantic`` stage."""

from __future__ import annotations

from collections.abc import Callable

from barkkit.hookspecs import hookimpl


@hookimpl
def register_stages(register: Callable[[type], None]) -> None:
    """``hubert.semantic``: a recording (audio) -> Bark semantic tokens, for voices made from recordings."""
    from barkkit_hubert.stage import HubertSemantic

    register(HubertSemantic)
