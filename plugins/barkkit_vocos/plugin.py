"""Hook implementations of barkkit_vocos: the optional ``vocos`` decoder (``pip install 'barkkit[vocos]'``).

The decoder is registered whether or not the vocos package is installed, so it is listed and can be named;
loading it without the package is a one-line error that says how to install it.
"""

from __future__ import annotations

from collections.abc import Callable

from barkkit.hookspecs import hookimpl


@hookimpl
def register_decoders(register: Callable[[type], None]) -> None:
    from barkkit_vocos.decoder import VocosDecoder

    register(VocosDecoder)
