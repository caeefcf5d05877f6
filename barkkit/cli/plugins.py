"""``barkkit plugins``: what is installed, and which plugin provides it."""

from __future__ import annotations

import click

from barkkit.cli.state import CliState
from barkkit.tokens import kind_name


@click.command()
@click.pass_obj
def plugins(state: CliState) -> None:
    """List every stage, decoder, voice source and detector, with the plugin that provides it.

    Plugins load from the 'barkkit' entry point group; BARKKIT_PLUGINS=a,b loads only those and
    BARKKIT_BLOCK_PLUGINS=a,b blocks those.
    """
    loaded = state.plugins
    rows: list[tuple[str, str, str, str]] = []
    for name in loaded.stages:
        stage = loaded.stages.get(name)
        rows.append(("stage", name, f"{kind_name(stage.consumes)} -> {kind_name(stage.produces)}", loaded.stages.providers[name]))
    for name in loaded.decoders:
        decoder = loaded.decoders.get(name)
        rows.append(("decoder", name, f"{kind_name(decoder.consumes)} -> {kind_name(decoder.produces)}", loaded.decoders.providers[name]))
    for name in loaded.voice_sources:
        rows.append(("voices", name, "preset name -> voice", loaded.voice_sources.providers[name]))
    for name in loaded.detectors:
        rows.append(("detector", name, "audio -> p(bark)", loaded.detectors.providers[name]))
    header = ("kind", "name", "does", "plugin")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    click.echo(f"\nplugins loaded: {', '.join(loaded.plugin_names()) or 'none'}")
