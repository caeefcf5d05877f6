"""The hooks a barkkit plugin can implement (pluggy project name ``barkkit``).

A plugin is a module or object with functions decorated ``@barkkit.hookimpl`` and named as below, registered
through an entry point in the group ``barkkit``. Each ``register_*`` hook receives a ``register`` callback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TypeVar

import click
import pluggy

if TYPE_CHECKING:  # the interfaces import torch and the registries: only their names are needed here
    from barkkit.detection import AudioDetector
    from barkkit.stage import Decoder, Stage
    from barkkit.voice import VoiceSource

PROJECT = "barkkit"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Item = TypeVar("Item", contravariant=True)


class Register(Protocol[Item]):
    """The callback a ``register_*`` hook receives: ``register(item)`` files ``item`` under its ``name``
    attribute, ``register(item, name="other")`` under another name; a name registered twice is a ``PluginError``."""

    def __call__(self, item: Item, name: str | None = None) -> None: ...


@hookspec
def register_stages(register: Register[type[Stage]]) -> None:
    """Register ``Stage`` subclasses: ``register(MyStage)``; each is found by its ``name``."""


@hookspec
def register_decoders(register: Register[type[Decoder]]) -> None:
    """Register ``Decoder`` subclasses: ``register(MyDecoder)``; each is found by its ``name``."""


@hookspec
def register_voices(register: Register[VoiceSource]) -> None:
    """Register voice sources (``barkkit.voice.VoiceSource`` instances) that resolve preset names to voices."""


@hookspec
def register_detectors(register: Register[type[AudioDetector]]) -> None:
    """Register ``AudioDetector`` subclasses: ``register(MyDetector)``; ``barkkit detect --detector NAME``."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add click commands or groups to the ``barkkit`` command line: ``cli.add_command(my_command)``."""
