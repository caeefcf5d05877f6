"""``barkkit generate`` and the stage commands ``semantic``, ``coarse``, ``fine``, ``decode``.

Stage commands read and write token ``.npz`` files under Bark's voice keys, carrying the input tokens forward, so
the output of ``fine`` (and of ``generate --save-tokens``) is a complete voice.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from typing import Any

import click

from barkkit.audio import WRITE_FORMATS, PeakPolicy, save_audio
from barkkit.cli.options import (
    OUTPUT_NOTE,
    ProgressBars,
    audio_output_options,
    collect_stage_options,
    input_files,
    model_options,
    run_options,
    stage_options,
)
from barkkit.cli.scale import check_scale_options, generate_scale_options, report_generation, set_threads
from barkkit.cli.state import CliState
from barkkit.errors import BarkkitError, TextError, VoiceError
from barkkit.files import check_distinct, check_input_file, check_writable
from barkkit.pipeline import DEFAULT_SPEC, Generation, Pipeline, read_spec_file
from barkkit.scale.rows import BatchRow, batch_rows
from barkkit.tokens import Audio
from barkkit.voice import TOKEN_KEYS, load_token_file, save_token_file

SLOTS = ("semantic", "coarse", "fine", "decoder")
MAX_BATCH_LINE = 100_000  # characters: far beyond any sentence Bark speaks (256 tokens), and cheap to refuse


def _build(state: CliState, params: dict[str, Any], keep: tuple[str, ...], names: dict[str, str | None]) -> Pipeline:
    return Pipeline.from_spec(_spec(params, keep, names), plugins=state.plugins)


def _spec(params: dict[str, Any], keep: tuple[str, ...], names: dict[str, str | None]) -> dict[str, Any]:
    """The pipeline spec a command line names (a spec file, slot names, model, device, mode), as a dict."""
    spec: dict[str, Any] = read_spec_file(Path(params["spec_file"])) if params.get("spec_file") else {}
    if "stages" in spec and keep != SLOTS:
        raise BarkkitError("a spec with an explicit 'stages' list works with `barkkit generate` only")
    for slot in SLOTS:
        if slot not in keep:
            spec[slot] = False
        elif names.get(slot):
            spec[slot] = names[slot]
    if "decoder" in keep:  # a command that writes audio needs its decoder's weights: fail before any work
        spec.setdefault("decoder", DEFAULT_SPEC["decoder"])
    overrides = {key: params.get(key) for key in ("model", "device", "mode") if params.get(key) is not None}
    if overrides.get("model") and Path(str(overrides["model"])).expanduser().is_dir():
        overrides["model"] = str(Path(str(overrides["model"])).expanduser().resolve())  # workers elsewhere read it too
    return {**spec, **overrides}


def _audio_of(generation: Generation) -> Audio:
    if generation.audio is None:
        raise BarkkitError("the pipeline has no decoder, so it made no audio; name one with --decoder")
    return generation.audio


def _check_audio_output(output: Path) -> None:
    if output.suffix.lower() not in WRITE_FORMATS:
        raise BarkkitError(f"{output}: cannot write '{output.suffix or 'no extension'}' audio; use {', '.join(WRITE_FORMATS)}")
    check_writable(output)


def _note(state: CliState, quiet: bool, message: str) -> None:
    if not (state.quiet or quiet):
        click.echo(message, err=True)


def _read_text(text: str | None) -> str:
    if text == "-":
        try:
            text = sys.stdin.read()
        except UnicodeDecodeError as exc:
            raise BarkkitError(f"standard input is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                               f"{exc.start}); give text") from None
    if text is None or not text.strip():
        raise BarkkitError("text is empty; give some words to speak")
    if "\0" in text:
        raise BarkkitError("text holds NUL bytes: it is binary data, not text; give some words to speak")
    return text


def _read_batch(path: Path) -> tuple[list[str], list[int]]:
    """The non-empty lines of a batch file, stripped, and their line numbers (from 1)."""
    data = check_input_file(path, "batch file").read_bytes()
    if b"\0" in data:
        raise BarkkitError(f"{path}: holds NUL bytes: a binary file, not a batch file (one text per line)")
    try:
        content = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise BarkkitError(f"{path}: line {line} is not UTF-8 text (byte {data[exc.start]:#04x}); a batch file holds "
                           "one text per line, in UTF-8") from None
    texts: list[str] = []
    numbers: list[int] = []
    for number, text in enumerate(content.splitlines(), 1):
        if len(text) > MAX_BATCH_LINE:
            raise BarkkitError(f"{path}: line {number} is {len(text):,} characters long, more than {MAX_BATCH_LINE:,}; "
                               "split it into several lines")
        if text.strip():
            texts.append(text.strip())
            numbers.append(number)
    if not texts:
        raise BarkkitError(f"{path}: holds no text lines")
    return texts, numbers


def _batch_outputs(output: Path, count: int) -> list[Path]:
    if "{n}" in output.name:
        return [output.with_name(output.name.replace("{n}", str(i + 1))) for i in range(count)]
    return [output.with_name(f"{output.stem}_{i + 1}{output.suffix}") for i in range(count)]


def _check_generate_outputs(outputs: list[Path], token_outputs: list[Path], line_numbers: list[int] | None,
                            inputs: dict[str, Any]) -> None:
    """Before any work: every output writable, no two the same file, none an input (the voice excepted for
    --save-tokens: a voice is read whole before anything is written, and --save-tokens writes a voice too)."""
    for path in outputs:
        _check_audio_output(path)
    for path in token_outputs:
        check_writable(path)
    where = [f" (line {n})" for n in line_numbers] if line_numbers is not None else [""]
    audio_outputs = {f"-o{w}": path for w, path in zip(where, outputs)}
    all_outputs = audio_outputs | {f"--save-tokens{w}": path for w, path in zip(where, token_outputs)}
    voice = {label: inputs.pop(label) for label in ["--voice file"] if label in inputs}
    check_distinct(all_outputs, inputs)
    check_distinct(audio_outputs, voice)


def _generate_on_ray(state: CliState, quiet: bool, rows: list[BatchRow], params: dict[str, Any],
                     names: dict[str, str | None], options: dict[str, Any], scale: dict[str, Any], *, pcm16: bool,
                     peak: PeakPolicy) -> None:
    """``--ray``: the batch as a Ray Data job (``barkkit.scale``); exits 1 when a row failed."""
    from barkkit.scale.generation import run_generation_job

    results = run_generation_job(
        rows, _spec(params, SLOTS, names), options, address=scale["ray_address"], actors=scale["actors"],
        threads=scale["threads"] or 1, rows_per_call=scale["rows_per_call"], pcm16=pcm16, peak=peak,
        manifest=scale["manifest"], quiet=state.quiet or quiet)
    click.get_current_context().exit(report_generation(results, quiet=state.quiet or quiet))


@click.command()
@click.argument("text", required=False)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Audio file to write: .wav, .flac, .ogg, .opus or .mp3. With --batch, a pattern with {n} (or _N is added). " + OUTPUT_NOTE)
@click.option("--save-tokens", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the tokens as a voice .npz (semantic_prompt, coarse_prompt, fine_prompt); it may be the "
                   "--voice file. " + OUTPUT_NOTE)
@click.option("--batch", "batch_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Generate every non-empty line of this file (text, or JSONL with text, voice, seed, out), batched.")
@click.option("--semantic-stage", default=None, help="Semantic stage by name.  [default: bark.semantic]")
@click.option("--coarse-stage", default=None, help="Coarse stage by name.  [default: bark.coarse]")
@click.option("--fine-stage", default=None, help="Fine stage by name.  [default: bark.fine]")
@click.option("--decoder", default=None, help="Decoder by name (encodec, vocos).  [default: encodec]")
@model_options
@run_options
@stage_options
@audio_output_options
@generate_scale_options
@click.pass_obj
def generate(state: CliState, text: str | None, output: Path, save_tokens: Path | None, batch_file: Path | None,
             pcm16: bool, peak: PeakPolicy, quiet: bool, **params: Any) -> None:
    """Text to audio, through all stages.

    TEXT is what to say ('-' reads standard input).

    \b
    Examples:
      barkkit generate "Hello, my name is Suno." -o hello.wav
      barkkit generate "Bonjour !" -o fr.flac --voice v2/fr_speaker_1 --seed 7 --save-tokens fr.npz
      barkkit generate "Hi." -o hi.wav --model ./bark-small --mode fast --top-k 50
      barkkit generate --batch lines.txt -o "clip_{n}.wav" --seed 0
      barkkit generate --batch rows.jsonl -o "out/clip_{n}.wav" --seed 0 --ray auto --manifest m.jsonl
    """
    options = collect_stage_options(params)
    names = {"semantic": params.pop("semantic_stage"), "coarse": params.pop("coarse_stage"),
             "fine": params.pop("fine_stage"), "decoder": params.pop("decoder")}
    if batch_file is not None:
        if text is not None:
            raise BarkkitError("give TEXT or --batch FILE, not both")
        texts, line_numbers = _read_batch(batch_file)
        base_seed = params["seed"] if params["seed"] is not None else secrets.randbelow(2**31)
        rows = batch_rows(batch_file, list(zip(line_numbers, texts)), output, seed=base_seed, voice=params["voice"])
        texts, outputs = [row.text for row in rows], [Path(row.path) for row in rows]
    else:
        texts, line_numbers, outputs = [_read_text(text)], [1], [output]
    scale = {name: params.pop(name) for name in ("ray_address", "actors", "threads", "manifest", "rows_per_call")}
    check_scale_options(batch=batch_file is not None, address=scale["ray_address"], actors=scale["actors"],
                        manifest=scale["manifest"], rows_per_call=scale["rows_per_call"], save_tokens=save_tokens)
    token_outputs = (_batch_outputs(save_tokens, len(texts)) if batch_file is not None else [save_tokens]) if save_tokens else []
    _check_generate_outputs(outputs, token_outputs, line_numbers if batch_file is not None else None,
                            input_files(params, **{"--batch file": batch_file}))
    if scale["ray_address"] is not None:
        _generate_on_ray(state, quiet, rows, params, names, options, scale, pcm16=pcm16, peak=peak)
    set_threads(scale["threads"])
    pipeline = _build(state, params, SLOTS, names)
    with ProgressBars(state.quiet or quiet) as progress:
        try:
            if batch_file is not None:
                generations = pipeline.generate_batch(texts, voices=[row.voice for row in rows], seeds=[row.seed for row in rows],
                                                      progress=progress, **options)
            else:
                generations = [pipeline.generate(texts[0], voice=params["voice"], seed=params["seed"], progress=progress, **options)]
        except TextError as exc:  # say which line of a batch file it was
            if batch_file is None or exc.text not in texts:
                raise
            raise BarkkitError(f"{batch_file}: line {line_numbers[texts.index(exc.text)]}: {exc}") from None
    for i, generation in enumerate(generations):
        audio = _audio_of(generation)
        save_audio(outputs[i], audio, pcm16=pcm16, peak=peak)
        if token_outputs:
            generation.save_tokens(token_outputs[i])
        _note(state, quiet, f"wrote {outputs[i]} ({audio.duration_s:.2f} s at {generation.sample_rate} Hz, seed {generation.seed})")


_MADE_BY = {"semantic_prompt": "barkkit semantic", "coarse_prompt": "barkkit coarse", "fine_prompt": "barkkit fine"}


def _load_input_tokens(path: str | Path, key: str) -> dict[str, Any]:
    """A token file that must hold ``key``, with at least one step; the error says which command makes it."""
    tokens = load_token_file(path)
    if key not in tokens:
        held = ", ".join(sorted(tokens)) or "no token arrays"
        raise VoiceError(f"{path}: missing {key} (it holds {held}); `{_MADE_BY[key]}` writes it")
    if len(tokens[key]) == 0:
        raise VoiceError(f"{path}: {key} is empty (shape {tuple(tokens[key].shape)}): there is nothing to go on from; "
                         f"write it again with `{_MADE_BY[key]}`")
    return tokens


def _stage_command(slot: str, input_key: str | None) -> Any:
    """Build the command that runs one stage on a token file (or on text, for the semantic stage)."""
    order = list(TOKEN_KEYS)
    output_key = f"{slot}_prompt"

    def command(state: CliState, source: str, output: Path, stage: str | None, quiet: bool, **params: Any) -> None:
        options = collect_stage_options(params)
        check_writable(output)
        # the output may be the input (the same kind of file): it is read whole first, so only other inputs clash
        check_distinct({"-o": output}, input_files(params))
        carried: dict[str, Any] = {}
        dropped: list[str] = []
        if input_key is None:
            value: Any = _read_text(source)
        else:
            tokens = _load_input_tokens(source, input_key)
            value = tokens[input_key]
            # the arrays of this stage and the later ones were made from other tokens: carrying them on would pair
            # the new tokens with stale ones (a later `decode` would play the old audio)
            carried = {key: array for key, array in tokens.items() if order.index(key) < order.index(output_key)}
            dropped = [key for key in tokens if key not in carried and key != output_key]
        pipeline = _build(state, params, (slot,), {slot: stage})
        with ProgressBars(state.quiet or quiet) as progress:
            generation: Generation = pipeline.run(value, voice=params["voice"], seed=params["seed"], progress=progress, **options)
        produced = getattr(generation, slot)
        carried[output_key] = produced
        save_token_file(output, carried)
        note = f"; left out {', '.join(dropped)} of {source}, made from the old tokens" if dropped else ""
        _note(state, quiet, f"wrote {output} ({slot} tokens {tuple(produced.shape)}, seed {generation.seed}){note}")

    return command


def _make_stage_command(slot: str, input_key: str | None, doc: str) -> click.Command:
    function = _stage_command(slot, input_key)
    function.__doc__ = doc
    function.__name__ = slot
    argument = "text" if input_key is None else "tokens"
    decorated = click.pass_obj(function)
    decorated = stage_options(decorated)
    decorated = run_options(decorated)
    decorated = model_options(decorated)
    decorated = click.option("--stage", default=None, help=f"{slot.capitalize()} stage by name.  [default: bark.{slot}]")(decorated)
    decorated = click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
                             help="Token file (.npz) to write; it may be the input TOKENS file. " + OUTPUT_NOTE)(decorated)
    decorated = click.argument("source", metavar=argument.upper())(decorated)
    return click.command(name=slot)(decorated)


semantic = _make_stage_command("semantic", None, """Text to semantic tokens (writes semantic_prompt).

    TEXT is what to say ('-' reads standard input).

    \b
    Example:
      barkkit semantic "Hello there." -o tokens.npz --voice v2/en_speaker_6 --seed 0
    """)

coarse = _make_stage_command("coarse", "semantic_prompt", """Semantic tokens to the two coarse codebooks.

    TOKENS is an .npz with semantic_prompt; the output keeps it and adds coarse_prompt.

    \b
    Example:
      barkkit coarse tokens.npz -o tokens.npz --voice v2/en_speaker_6 --seed 0
    """)

fine = _make_stage_command("fine", "coarse_prompt", """Coarse codebooks to all eight (fine_prompt).

    TOKENS is an .npz with coarse_prompt; the output keeps its tokens and adds fine_prompt: with
    semantic_prompt present it is a complete voice.

    \b
    Example:
      barkkit fine tokens.npz -o voice.npz --voice v2/en_speaker_6 --fine-temp none
    """)


@click.command()
@click.argument("tokens", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Audio file to write: .wav, .flac, .ogg, .opus or .mp3. " + OUTPUT_NOTE)
@click.option("--decoder", default=None, help="Decoder by name (encodec, vocos).  [default: encodec]")
@model_options
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or notes.")
@audio_output_options
@click.pass_obj
def decode(state: CliState, tokens: Path, output: Path, decoder: str | None, quiet: bool, pcm16: bool, peak: PeakPolicy,
           **params: Any) -> None:
    """Fine tokens to audio.

    TOKENS is an .npz with fine_prompt (any barkkit token file or Bark voice).

    \b
    Examples:
      barkkit decode voice.npz -o voice.wav
      barkkit decode tokens.npz -o out.flac --model ./bark-small --decoder vocos
    """
    _check_audio_output(output)
    check_distinct({"-o": output}, input_files(params, TOKENS=tokens))
    fine_tokens = _load_input_tokens(tokens, "fine_prompt")["fine_prompt"]
    pipeline = _build(state, params, ("decoder",), {"decoder": decoder})
    with ProgressBars(state.quiet or quiet) as progress:
        generation = pipeline.run(fine_tokens, progress=progress)
    audio = _audio_of(generation)
    save_audio(output, audio, pcm16=pcm16, peak=peak)
    _note(state, quiet, f"wrote {output} ({audio.duration_s:.2f} s at {generation.sample_rate} Hz)")
