"""Making a voice (Bark history prompt) from a recording.

A voice has three parts, and they come from two different models:

- ``coarse_prompt`` (2, T) and ``fine_prompt`` (8, T): the recording's EnCodec codes at 6 kbps, from a decoder
  that can encode (``encodec``); the coarse part is the first two codebooks of the fine part.
- ``semantic_prompt`` (S,): Bark's semantic tokens for the same audio. Bark ships no model for this (its semantic
  tokens come from text), so it is a plugin slot: a registered ``Stage`` with ``consumes = Audio`` and
  ``produces = SemanticTokens`` (HuBERT + quantizer projects are such models). Without one, barkkit does not invent
  semantic tokens: ``make_voice`` fails with a clear error, and ``encode_recording`` gives the codec part only.

Bark conditions on the end of each part (the last 256 semantic tokens, about 5 s; the last 630 coarse tokens, 4.2 s;
up to 512 fine frames, 6.8 s), so a recording of 5 to 10 seconds of clean speech is what a voice needs.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch

from barkkit.audio import load_audio
from barkkit.devices import check_device
from barkkit.errors import PluginError, VoiceError
from barkkit.stage import Decoder, ModelRef, Progress, Stage
from barkkit.tokens import Audio, CoarseTokens, SemanticTokens, Tokens
from barkkit.voice import Voice

if TYPE_CHECKING:
    from barkkit.plugins import Plugins

__all__ = ["semantic_stage_names", "encode_recording", "make_voice", "DEFAULT_ENCODER"]

DEFAULT_ENCODER = "encodec"
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


def encode_recording(
    recording: Audio | str | os.PathLike,
    *,
    model: ModelRef = None,
    device: str | torch.device = "cpu",
    plugins: "Plugins | None" = None,
    encoder: str = DEFAULT_ENCODER,
) -> dict[str, Tokens]:
    """The codec part of a voice: ``{"coarse_prompt": (2, T), "fine_prompt": (8, T)}`` at 75 frames a second.

    ``recording`` is an ``Audio`` or an audio file of any format, rate and channel count (mixed to mono, resampled
    to the codec's rate). ``model`` is where the codec weights come from (as for the pipeline).
    """
    from barkkit.plugins import load_plugins

    plugins = plugins or load_plugins()
    fine = _encoder(plugins, encoder, model, check_device(device)).encode(_recording(recording))
    return {"coarse_prompt": CoarseTokens(fine[:2]), "fine_prompt": fine}


def make_voice(
    recording: Audio | str | os.PathLike,
    *,
    model: ModelRef = None,
    device: str | torch.device = "cpu",
    plugins: "Plugins | None" = None,
    encoder: str = DEFAULT_ENCODER,
    semantic_stage: str | Stage | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    **options: Any,
) -> Voice:
    """A full voice from a recording: codec codes from ``encoder`` and semantic tokens from an audio-to-semantic stage.

    ``semantic_stage`` is a registered stage name or a loaded ``Stage`` (consumes ``Audio``, produces
    ``SemanticTokens``); None picks the only one installed. It receives the recording as mono ``Audio`` at the
    file's own rate, a generator seeded with ``seed``, and ``options``.

    Raises ``PluginError`` when no such stage is installed (or several are and none was named).
    """
    from barkkit.plugins import load_plugins

    plugins = plugins or load_plugins()
    device = check_device(device)
    stage = _semantic_stage(plugins, semantic_stage, model, device)
    audio = _recording(recording)
    codes = encode_recording(audio, model=model, device=device, plugins=plugins, encoder=encoder)
    generator = torch.Generator(device=device).manual_seed(seed)
    semantic = stage.run(audio, voice=None, generator=generator, progress=progress, **options)
    if not isinstance(semantic, SemanticTokens):
        raise PluginError(f"stage '{stage.name}' returned {type(semantic).__name__}, not SemanticTokens")
    if len(semantic) == 0:
        raise VoiceError(f"stage '{stage.name}' found no semantic tokens in the recording; is it silent or too short?")
    source = str(recording) if not isinstance(recording, Audio) else "recording"
    return Voice(semantic, codes["coarse_prompt"], codes["fine_prompt"], source=source)


def _semantic_stage(plugins: "Plugins", stage: str | Stage | None, model: ModelRef, device: str | torch.device) -> Stage:
    if isinstance(stage, Stage):
        if stage.consumes is not Audio or stage.produces is not SemanticTokens:
            raise PluginError(f"stage '{stage.name}' does not turn audio into semantic tokens")
        return stage
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
    return plugins.stages.get(stage).load(model, device=device)
