"""Hook implementations of barkkit_detect: the ``bark-detector`` detector and the ``barkkit detector`` commands."""

from __future__ import annotations

from collections.abc import Callable

import click

from barkkit.hookspecs import hookimpl


@hookimpl
def register_detectors(register: Callable[[type], None]) -> None:
    from barkkit_detect.model import Detector

    register(Detector)


@hookimpl
def register_commands(cli: click.Group) -> None:
    from barkkit_detect.cli import detector

    cli.add_command(detector)
