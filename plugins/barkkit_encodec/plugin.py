"""Hook implementations of barkkit_encodec: the ``encodec`` decoder (EnCodec 24 kHz, 6 kbps)."""

from __future__ import annotations

from collections.abc import Callable

from barkkit.hookspecs import hookimpl


@hookimpl
def register_decoders(register: Callable[[type], None]) -> None:
    from barkkit_encodec.decoder import EncodecDecoder

    register(EncodecDecoder)
