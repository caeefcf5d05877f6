"""``barkkit voices make``: a voice from a recording (attached to the ``voices`` group)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from barkkit.cli.options import OUTPUT_NOTE, ProgressBars, input_files, seed_callback
from barkkit.cli.state import CliState
from barkkit.errors import AudioError, BarkkitError
from barkkit.files import check_distinct, check_input_file, check_writable
from barkkit.voice import save_token_file
from barkkit.voice_making import CODEC_SECONDS, DEFAULT_ENCODER, encode_recording, make_voice
from barkkit.weights import DEFAULT_MODEL


@click.command(name="make")
@click.argument("audio", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The voice file to write (.npz). " + OUTPUT_NOTE)
@click.option("-m", "--model", default=None, help="Where the codec weights come from: a model name (bark, bark-small), hub id or local folder.  [default: bark-small]")
@click.option("--device", default="cpu", show_default=True, help="Torch device.")
@click.option("--semantic-stage", default=None, help="The audio-to-semantic stage to use, by name (needed only when several are installed).")
@click.option("--hubert", default=None, help="hubert.semantic: HuBERT, a hub id or local transformers folder.  [default: facebook/hubert-base-ls960]")
@click.option("--quantizer", default=None, help="hubert.semantic: the quantizer, a local file or hub-id:filename.  [default: GitMylo/bark-voice-cloning:quantifier_hubert_base_ls960_14.pth]")
@click.option("--codes-only", is_flag=True, help="Write only coarse_prompt and fine_prompt (no audio-to-semantic stage needed). Not a complete voice: `barkkit decode` reads it, generation does not.")
@click.option("--encoder", default=DEFAULT_ENCODER, show_default=True, help="The codec that encodes the audio (a decoder that can encode).")
@click.option("--seed", type=int, default=0, show_default=True, callback=seed_callback, help="Seed for a semantic stage that samples.")
@click.option("-q", "--quiet", is_flag=True, help="No notes.")
@click.pass_obj
def make(state: CliState, audio: Path, output: Path, model: str | None, device: str, semantic_stage: str | None,
         hubert: str | None, quantizer: str | None, codes_only: bool, encoder: str, seed: int, quiet: bool) -> None:
    """Make a voice (.npz with semantic_prompt, coarse_prompt, fine_prompt) from a recording.

    AUDIO is any file soundfile or librosa reads (wav, flac, mp3, ogg, ...), at any rate, mono or not. Bark uses
    the last 5 to 7 seconds of each part of a voice: 5 to 10 s of clean speech is enough.

    The semantic part comes from an audio-to-semantic stage: hubert.semantic (HuBERT base, layer 9, and the
    community quantizer; the default files are fetched once from the hub), over the whole recording. The codec
    part comes from EnCodec, over the recording's last 10 s (Bark reads at most the last 6.8 s). A long file is
    read in blocks: memory does not grow with its length. Silence, or under 1 s of sound, is refused.

    \b
    Examples:
      barkkit voices make me.wav -o me.npz
      barkkit voices make me.flac -o me.npz --hubert ./hubert-base-ls960 --quantizer ./quantifier_hubert_base_ls960_14.pth
      barkkit voices make me.mp3 -o me_codes.npz --codes-only
      barkkit generate "Hello there." -o hello.wav --voice me.npz
    """
    if output.suffix.lower() != ".npz":
        raise BarkkitError(f"{output}: a voice file must end in .npz")
    check_input_file(audio, "audio file", AudioError)  # before the codec loads
    check_writable(output)
    inputs = input_files({"model": model}, AUDIO=audio, **{"--quantizer file": quantizer})
    if hubert and Path(hubert).is_dir():
        inputs |= {f"--hubert file {path.name}": path for path in Path(hubert).iterdir()}
    check_distinct({"-o": output}, inputs)
    weights: dict[str, Any] = {key: value for key, value in (("hubert", hubert), ("quantizer", quantizer)) if value is not None}
    if weights and codes_only:
        raise BarkkitError("--hubert and --quantizer choose the semantic stage's weights; --codes-only makes no semantic part")
    if codes_only:
        tokens = encode_recording(audio, model=model, device=device, plugins=state.plugins, encoder=encoder)
        frames = len(tokens["fine_prompt"])
        span = "all" if frames < CODEC_SECONDS * 75 else f"the last {CODEC_SECONDS:.1f} s"
        codec = f"{encoder} ({model if model is not None else DEFAULT_MODEL})"
        save_token_file(output, tokens, note={"recording": str(audio),
                                              "coarse": f"{codec}, first 2 codebooks of {span} of {audio}",
                                              "fine": f"{codec}, 8 codebooks at 6 kbps of {span} of {audio}"})
        summary = f"coarse_prompt and fine_prompt only, {frames} frames ({frames / 75:.2f} s); no semantic_prompt"
    else:
        if weights and semantic_stage is None:
            semantic_stage = "hubert.semantic"
        with ProgressBars(state.quiet or quiet) as bars:
            voice = make_voice(audio, model=model, device=device, plugins=state.plugins, encoder=encoder,
                               semantic_stage=semantic_stage, seed=seed,
                               progress=lambda done, total: bars("semantic", done, total), **weights)
        voice.save(output)
        summary = (f"{len(voice.semantic)} semantic tokens ({voice.semantic.duration_s:.2f} s), "
                   f"{len(voice.fine)} codec frames ({len(voice.fine) / 75:.2f} s)")
    if not (state.quiet or quiet):
        click.echo(f"wrote {output}: {summary}", err=True)
