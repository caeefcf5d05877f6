"""The hooks a barkkit plugin can implement (pluggy project name ``barkkit``).

A plugin is a module or object with functions decorated ``@barkkit.hookimpl`` and named as below, registered
through an entry point in the group ``barkkit``. Each ``register_*`` hook receives a ``register`` callback.
"""

from __future__ import annotations

from collections.abc import Callable

import click
import pluggy

PROJECT = "barkkit"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_stages(register: Callable[[type], None]) -> None:
    """Register ``Stage`` subclasses: ``register(MyStage)``; each is found by its ``name``."""


@hookspec
def register_decoders(register: Callable[[type], None]) -> None:
    """Register ``Decoder`` subclasses: ``register(MyDecoder)``; each is found by its ``name``."""


@hookspec
def register_voices(register: Callable[[object], None]) -> None:
    """Register voice sources (``barkkit.voice.VoiceSource`` instances) that resolve preset names to voices."""


@hookspec
def register_detectors(register: Callable[[type], None]) -> None:
    """Register ``AudioDetector`` subclasses: ``register(MyDetector)``; ``barkkit detect --detector NAME``."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add click commands or groups to the ``barkkit`` command line: ``cli.add_command(my_command)``."""
