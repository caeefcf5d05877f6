"""Making a voice (Bark history prompt) from a recording.

A voice has three parts, and they come from two different models:

- ``coarse_prompt`` (2, T) and ``fine_prompt`` (8, T): the recording's EnCodec codes at 6 kbps, from a decoder
  that can encode (``encodec``); the coarse part is the first two codebooks of the fine part.
- ``semantic_prompt`` (S,): Bark's semantic tokens for the same audio. Bark ships no model for this (its semantic
  tokens come from text), so it is a plugin slot: a registered ``Stage`` with ``consumes = Audio`` and
  ``produces = SemanticTokens``: the built-in ``hubert.semantic`` (plugin barkkit_hubert: HuBERT base and the
  community quantizer). Without one, barkkit does not invent semantic tokens: ``make_voice`` fails with a clear
  error, and ``encode_recording`` gives the codec part only.

Bark conditions on the end of each part (the last 256 semantic tokens, about 5 s; the last 630 coarse tokens, 4.2 s;
up to 512 fine frames, 6.8 s), so a recording of 5 to 10 seconds of clean speech is what a voice needs.

Memory does not grow with the recording's length: a file is read in blocks (``barkkit.audio_stream``), a stage with
``run_stream`` tokenises it as it passes, and the codec encodes only its last ``CODEC_SECONDS`` (10 s). What grows
is the semantic tokens (8 bytes per 20 ms: 1.4 MB an hour).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch

from barkkit.audio import load_audio
from barkkit.audio_stream import AudioStream, TailKeeper
from barkkit.devices import check_device
from barkkit.errors import AudioError, PluginError, VoiceError
from barkkit.stage import Decoder, ModelRef, Progress, Stage
from barkkit.tokens import Audio, CoarseTokens, FineTokens, SemanticTokens, Tokens
from barkkit.voice import Voice
from barkkit.weights import DEFAULT_MODEL

if TYPE_CHECKING:
    from barkkit.plugins import Plugins

__all__ = ["semantic_stage_names", "encode_recording", "make_voice", "DEFAULT_ENCODER", "CODEC_SECONDS"]

DEFAULT_ENCODER = "encodec"
CODEC_SECONDS = 10.0
"""Seconds at the end of a recording that a voice's codec part covers. Bark reads at most the last 512 fine frames
(6.8 s) and 315 coarse frames (4.2 s); encoding only these seconds keeps memory flat in the recording's length
(EnCodec's one-pass encoder takes ~11 MB per second of audio: a whole hour would need ~40 GB)."""
NO_SEMANTIC_STAGE = (
    "no audio-to-semantic stage is installed, and a voice's semantic_prompt needs one (a plugin Stage that consumes "
    "audio and produces semantic tokens); install such a plugin, or use --codes-only to write only coarse_prompt "
    "and fine_prompt"
)


def semantic_stage_names(plugins: "Plugins") -> list[str]:
    """Names of the registered stages that turn audio into semantic tokens."""
    return [
        name
        for name in plugins.stages
        if plugins.stages.get(name).consumes is Audio and plugins.stages.get(name).produces is SemanticTokens
    ]


def _recording(recording: Audio | str | os.PathLike) -> Audio:
    return recording if isinstance(recording, Audio) else load_audio(recording)


def _encoder(plugins: "Plugins", name: str, model: ModelRef, device: str | torch.device) -> Decoder:
    decoder_class = plugins.decoders.get(name)
    if not decoder_class.can_encode:
        raise PluginError(f"decoder '{name}' cannot encode audio; use one that can, such as '{DEFAULT_ENCODER}'")
    return decoder_class.load(model, device=device)


def _tail(recording: Audio | str | os.PathLike, seconds: float | None) -> Audio:
    """The last ``seconds`` of a recording (all of it for None), reading a file in blocks."""
    if isinstance(recording, Audio):
        return recording if seconds is None else Audio(recording.samples[-max(1, round(seconds * recording.sample_rate)) :], recording.sample_rate)
    if seconds is None:
        return load_audio(recording)
    stream = AudioStream(recording)
    keeper = TailKeeper(seconds, stream.sample_rate)
    for _ in keeper.through(stream.blocks()):
        pass
    return keeper.audio()


def _codes(encoder: Decoder, audio: Audio) -> tuple[CoarseTokens, FineTokens]:
    """(coarse (2, T), fine (8, T)): the audio's codes; the coarse part is the first two codebooks."""
    fine = encoder.encode(audio)
    return CoarseTokens(fine[:2]), fine


def encode_recording(
    recording: Audio | str | os.PathLike,
    *,
    model: ModelRef = None,
    device: str | torch.device = "cpu",
    plugins: "Plugins | None" = None,
    encoder: str = DEFAULT_ENCODER,
    codec_seconds: float | None = CODEC_SECONDS,
) -> dict[str, Tokens]:
    """The codec part of a voice: ``{"coarse_prompt": (2, T), "fine_prompt": (8, T)}`` at 75 frames a second.

    ``recording`` is an ``Audio`` or an audio file of any format, rate and channel count (mixed to mono, resampled
    to the codec's rate). ``model`` is where the codec weights come from (as for the pipeline). Only the last
    ``codec_seconds`` are encoded (``CODEC_SECONDS``, 10 s; a file is read in blocks), so memory does not grow with
    the recording; None encodes all of it.
    """
    from barkkit.plugins import load_plugins

    plugins = plugins or load_plugins()
    coarse, fine = _codes(_encoder(plugins, encoder, model, check_device(device)), _tail(recording, codec_seconds))
    return {"coarse_prompt": coarse, "fine_prompt": fine}


def make_voice(
    recording: Audio | str | os.PathLike,
    *,
    model: ModelRef = None,
    device: str | torch.device = "cpu",
    plugins: "Plugins | None" = None,
    encoder: str = DEFAULT_ENCODER,
    semantic_stage: str | Stage | None = None,
    semantic_model: ModelRef = None,
    codec_seconds: float | None = CODEC_SECONDS,
    seed: int = 0,
    progress: Progress | None = None,
    **options: Any,
) -> Voice:
    """A full voice from a recording: codec codes from ``encoder`` and semantic tokens from an audio-to-semantic stage.

    ``semantic_stage`` is a registered stage name or a loaded ``Stage`` (consumes ``Audio``, produces
    ``SemanticTokens``); None picks the only one installed (``hubert.semantic`` when barkkit_hubert is). A name is
    loaded with ``semantic_model`` (not ``model``, which is the codec's) and those of ``options`` that the stage
    class lists in its ``load_options`` (for ``hubert.semantic``: ``hubert=`` a hub id or transformers folder,
    ``quantizer=`` a file or ``hub-id:filename``); the other options go to its ``run``, with a generator seeded
    with ``seed``.

    The semantic part covers the whole recording; a stage with ``run_stream`` (``hubert.semantic``) reads a file in
    blocks, in memory that does not grow with its length; other stages get the whole recording as mono ``Audio``
    at the file's own rate. The codec part is the last ``codec_seconds`` (see ``encode_recording``). The voice's
    ``note`` says where each part came from (saved in the ``.npz``).

    Raises ``PluginError`` when no such stage is installed (or several are and none was named), ``AudioError`` when
    the recording cannot be read (or the stage refuses it: silent, too short).
    """
    from barkkit.plugins import load_plugins

    plugins = plugins or load_plugins()
    device = check_device(device)
    if not isinstance(recording, Audio) and not os.path.isfile(recording):  # before any weights load
        raise AudioError(f"{recording}: no such file")
    stage, run_options = _semantic_stage(plugins, semantic_stage, semantic_model, device, options)
    encoder_step = _encoder(plugins, encoder, model, device)
    generator = torch.Generator(device=device).manual_seed(seed)
    where = "recording" if isinstance(recording, Audio) else str(recording)
    try:
        semantic, seconds, tail = _semantic_part(stage, recording, codec_seconds, generator, progress, run_options)
    except AudioError as exc:
        message = str(exc)
        raise AudioError(message if message.startswith(where) else f"{where}: {message}") from None
    _check_semantic(stage, semantic)
    coarse, fine = _codes(encoder_step, tail)
    note = _note(stage, encoder, model, where, seconds, tail.duration_s)
    return Voice(semantic, coarse, fine, source=where, note=note)


def _semantic_part(stage: Stage, recording: Audio | str | os.PathLike, codec_seconds: float | None,
                   generator: torch.Generator, progress: Progress | None, options: dict[str, Any]) -> tuple[Any, float, Audio]:
    """(the stage's output, the recording's length in seconds, the recording's tail for the codec).

    A file goes to a stage with ``run_stream`` block by block (the tail is kept as the blocks pass); anything else
    is read whole and given to ``run``.
    """
    if isinstance(recording, Audio) or not hasattr(stage, "run_stream"):
        audio = _recording(recording)
        semantic = stage.run(audio, voice=None, generator=generator, progress=progress, **options)
        return semantic, audio.duration_s, _tail(audio, codec_seconds)
    stream = AudioStream(recording)
    keeper = TailKeeper(codec_seconds if codec_seconds is not None else stream.duration_s + 1.0, stream.sample_rate)
    semantic = stage.run_stream(keeper.through(stream.blocks()), stream.sample_rate, generator=generator,
                                progress=progress, **options)
    return semantic, stream.duration_s, keeper.audio()


def _check_semantic(stage: Stage, semantic: Any) -> None:
    if not isinstance(semantic, SemanticTokens):
        raise PluginError(f"stage '{stage.name}' returned {type(semantic).__name__}, not SemanticTokens")
    if len(semantic) == 0:
        raise VoiceError(f"stage '{stage.name}' found no semantic tokens in the recording; is it silent or too short?")


def _note(stage: Stage, encoder: str, model: ModelRef, where: str, seconds: float, codec_s: float) -> dict[str, str]:
    """Where each part of a made voice came from (kept in the .npz as its source note)."""
    describe = getattr(stage, "describe", None)
    semantic = describe() if callable(describe) else stage.name
    codec = f"{encoder} ({model if model is not None else DEFAULT_MODEL})"
    span = "all" if codec_s >= seconds - 1e-6 else f"the last {codec_s:.1f} s"
    return {
        "recording": f"{where} ({seconds:.2f} s)",
        "semantic": f"{semantic}, over all {seconds:.2f} s of {where}",
        "coarse": f"{codec}, first 2 codebooks of {span} of {where}",
        "fine": f"{codec}, 8 codebooks at 6 kbps of {span} of {where}",
    }


def _semantic_stage(plugins: "Plugins", stage: str | Stage | None, model: ModelRef, device: str | torch.device,
                    options: dict[str, Any]) -> tuple[Stage, dict[str, Any]]:
    """The loaded stage, and the options left for its ``run`` (those in its ``load_options`` went to ``load``)."""
    if isinstance(stage, Stage):
        if stage.consumes is not Audio or stage.produces is not SemanticTokens:
            raise PluginError(f"stage '{stage.name}' does not turn audio into semantic tokens")
        late = sorted(set(options) & set(stage.load_options))
        if late:
            raise PluginError(f"stage '{stage.name}' is already loaded: pass {', '.join(late)} to its load(), not here")
        _check_options(stage, options)
        return stage, options
    names = semantic_stage_names(plugins)
    if stage is None:
        if not names:
            raise PluginError(NO_SEMANTIC_STAGE)
        if len(names) > 1:
            raise PluginError(f"several audio-to-semantic stages are installed ({', '.join(names)}); choose one by name")
        stage = names[0]
    elif stage not in names:
        stage_class = plugins.stages.get(stage)  # a clear error for an unknown name
        raise PluginError(
            f"stage '{stage}' consumes {stage_class.consumes.__name__} and produces {stage_class.produces.__name__}, "
            f"not audio -> semantic tokens; audio-to-semantic stages: {', '.join(names) or 'none installed'}"
        )
    stage_class = plugins.stages.get(stage)
    _check_options(stage_class, options)
    load_options = {key: value for key, value in options.items() if key in stage_class.load_options}
    run_options = {key: value for key, value in options.items() if key not in stage_class.load_options}
    return stage_class.load(model, device=device, **load_options), run_options


def _check_options(stage: Stage | type[Stage], options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - set(stage.load_options) - set(stage.options))
    if unknown:
        known = sorted({*stage.load_options, *stage.options})
        raise PluginError(
            f"stage '{stage.name}' takes no option(s) {', '.join(unknown)}; it takes {', '.join(known) or 'none'}"
        )
