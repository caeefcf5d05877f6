"""``barkkit voices make``: a voice from a recording (attached to the ``voices`` group)."""

from __future__ import annotations

from pathlib import Path

import click

from barkkit.cli import CliState
from barkkit.cli.options import OUTPUT_NOTE, input_files, seed_callback
from barkkit.errors import AudioError, BarkkitError
from barkkit.files import check_distinct, check_input_file, check_writable
from barkkit.voice import save_token_file
from barkkit.voice_making import DEFAULT_ENCODER, encode_recording, make_voice


@click.command(name="make")
@click.argument("audio", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The voice file to write (.npz). " + OUTPUT_NOTE)
@click.option("-m", "--model", default=None, help="Where the codec (and semantic stage) weights come from: a model name (bark, bark-small), hub id or local folder.  [default: bark-small]")
@click.option("--device", default="cpu", show_default=True, help="Torch device.")
@click.option("--semantic-stage", default=None, help="The audio-to-semantic stage to use, by name (needed only when several are installed).")
@click.option("--codes-only", is_flag=True, help="Write only coarse_prompt and fine_prompt (no audio-to-semantic stage needed). Not a complete voice: `barkkit decode` reads it, generation does not.")
@click.option("--encoder", default=DEFAULT_ENCODER, show_default=True, help="The codec that encodes the audio (a decoder that can encode).")
@click.option("--seed", type=int, default=0, show_default=True, callback=seed_callback, help="Seed for a semantic stage that samples.")
@click.option("-q", "--quiet", is_flag=True, help="No notes.")
@click.pass_obj
def make(state: CliState, audio: Path, output: Path, model: str | None, device: str, semantic_stage: str | None,
         codes_only: bool, encoder: str, seed: int, quiet: bool) -> None:
    """Make a voice (.npz with semantic_prompt, coarse_prompt, fine_prompt) from a recording.

    AUDIO is any file soundfile or librosa reads (wav, flac, mp3, ogg, ...), at any rate, mono or not. Bark uses
    the last 5 to 7 seconds of each part of a voice: 5 to 10 s of clean speech is enough.

    The codec part comes from EnCodec. The semantic part needs an audio-to-semantic plugin stage; without one,
    this fails unless --codes-only is given.

    \b
    Examples:
      barkkit voices make me.wav -o me.npz
      barkkit voices make me.mp3 -o me_codes.npz --codes-only
    """
    if output.suffix.lower() != ".npz":
        raise BarkkitError(f"{output}: a voice file must end in .npz")
    check_input_file(audio, "audio file", AudioError)  # before the codec loads
    check_writable(output)
    check_distinct({"-o": output}, input_files({"model": model}, AUDIO=audio))
    if codes_only:
        tokens = encode_recording(audio, model=model, device=device, plugins=state.plugins, encoder=encoder)
        save_token_file(output, tokens)
        frames = len(tokens["fine_prompt"])
        summary = f"coarse_prompt and fine_prompt only, {frames} frames ({frames / 75:.2f} s); no semantic_prompt"
    else:
        voice = make_voice(audio, model=model, device=device, plugins=state.plugins, encoder=encoder,
                           semantic_stage=semantic_stage, seed=seed)
        voice.save(output)
        summary = f"{len(voice.semantic)} semantic tokens, {len(voice.fine)} codec frames ({len(voice.fine) / 75:.2f} s)"
    if not (state.quiet or quiet):
        click.echo(f"wrote {output}: {summary}", err=True)
