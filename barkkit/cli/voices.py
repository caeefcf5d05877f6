"""``barkkit voices``: list, show (and make) voices."""

from __future__ import annotations

from pathlib import Path

import click

from barkkit.cli.state import CliState
from barkkit.errors import VoiceError
from barkkit.voice import TOKEN_KEYS, Voice, load_token_file, read_source_note


@click.group()
def voices() -> None:
    """Voices (history prompts): presets from the voice sources, or .npz files.

    \b
    Examples:
      barkkit voices list
      barkkit voices show v2/en_speaker_6
      barkkit voices show my_voice.npz
    """


@voices.command(name="list")
@click.option("--source", default=None, help="Only this voice source.")
@click.pass_obj
def list_voices(state: CliState, source: str | None) -> None:
    """List the preset names each voice source offers.

    Presets come from the folders in $BARKKIT_VOICE_PATH and from the hub's Bark repositories (cached or online).
    """
    registry = state.plugins.voice_sources
    names = [source] if source else list(registry)
    if source:
        registry.get(source)  # a clear error for an unknown source
    if not names:
        raise VoiceError("no voice sources are registered; install or unblock a plugin that provides voices")
    for name in names:
        try:
            presets = registry.get(name).names()
        except VoiceError as exc:
            click.echo(f"# {name} ({registry.providers[name]}): unavailable: {exc}")
            continue
        click.echo(f"# {name} ({registry.providers[name]}): {len(presets)} voices")
        for preset in presets:
            click.echo(preset)


@voices.command(name="show")
@click.argument("voice")
@click.pass_obj
def show_voice(state: CliState, voice: str) -> None:
    """Show a voice's token arrays: a preset name or an .npz file (also a token file that is not a whole voice)."""
    path = Path(voice)
    if path.suffix == ".npz" and path.is_file():
        tokens = load_token_file(path)
        missing = [key for key in TOKEN_KEYS if key not in tokens]
        if missing:  # a stage's token file, or `voices make --codes-only`: say what it holds and what it lacks
            click.echo(f"voice:    {voice} (not a whole voice: no {', '.join(missing)}; generation needs all three)")
            partial_note = read_source_note(path)
            for key, value in tokens.items():
                part = key.removesuffix("_prompt")
                came_from = f"  <- {partial_note[part]}" if part in partial_note else ""
                click.echo(f"{part + ':':<10}{tuple(value.shape)}{came_from}")
            return
    loaded = Voice.load(voice, plugins=state.plugins)
    note = loaded.note or {}  # where each part came from: kept by `voices make` (older voices have none)

    def origin(part: str) -> str:
        return f"  <- {note[part]}" if part in note else ""

    click.echo(f"voice:    {voice}")
    click.echo(f"source:   {loaded.source or 'preset'}")
    if "recording" in note:
        click.echo(f"made from: {note['recording']}")
    click.echo(f"semantic: {loaded.semantic.shape[0]} tokens ({loaded.duration_s:.2f} s){origin('semantic')}")
    click.echo(f"coarse:   {tuple(loaded.coarse.shape)} ({len(loaded.coarse) / 75:.2f} s){origin('coarse')}")
    click.echo(f"fine:     {tuple(loaded.fine.shape)}{origin('fine')}")
