"""Request bodies: strict JSON, OpenAI's speech fields, and barkkit's extra fields passed on to the library.

JSON is parsed by hand rather than by a model class so that every message names the field and says what to send:
``NaN``/``Infinity`` (which Python's json accepts) and numbers that overflow to infinity are refused here; the
generation options are not checked here at all but passed to the pipeline, whose checks are the source of truth.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from barkkit.audio_encoding import STREAM_FORMATS
from barkkit.pipeline import MODES
from barkkit.serve.errors import ApiError

__all__ = ["SpeechRequest", "parse_json_body", "parse_speech_request", "check_voice_name", "SPEED_RANGE", "STREAM_KINDS"]

STREAM_KINDS = ("audio", "sse")
SPEED_RANGE = (0.25, 4.0)  # OpenAI's range for `speed`
# OpenAI's fields, and the server's own (not the library's generation options, which pass through)
_OPENAI_FIELDS = ("model", "input", "voice", "response_format", "speed", "stream_format", "instructions")
_SERVER_FIELDS = ("seed", "mode", "progress")
# a preset (v2/en_speaker_6) or an uploaded voice id: words joined by single slashes, nothing else
_VOICE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*$")


@dataclass
class SpeechRequest:
    """One ``POST /v1/audio/speech`` body, checked; ``options`` go to the pipeline as they are."""

    input: str
    model: str | None = None
    voice: str | None = None
    response_format: str = "mp3"
    speed: float = 1.0
    stream_format: str | None = None
    seed: int | None = None
    mode: str | None = None
    progress: bool = False
    options: dict[str, Any] = field(default_factory=dict)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number; send a finite number")


def _finite(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ApiError(400, f"{where} is out of range (it overflows to infinity); send a finite number",
                       param=where, code="invalid_value")
    if isinstance(value, dict):
        for key, item in value.items():
            _finite(item, str(key))
    elif isinstance(value, list):
        for item in value:
            _finite(item, where)


def parse_json_body(raw: bytes) -> dict[str, Any]:
    """A JSON object from a request body; 400 with the parser's reason for anything else."""
    if not raw.strip():
        raise ApiError(400, "the request body is empty; send a JSON object", code="invalid_json")
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise ApiError(400, "the request body is not UTF-8 text; send a JSON object", code="invalid_json") from None
    except (json.JSONDecodeError, ValueError) as exc:
        raise ApiError(400, f"malformed JSON in the request body: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"the request body must be a JSON object, got a JSON {type(data).__name__}", code="invalid_json")
    _finite(data, "body")
    return data


def check_voice_name(name: Any, *, param: str = "voice") -> str:
    """A voice name that is a name, never a path: no leading slash, backslash, '..' or empty parts."""
    if not isinstance(name, str) or not name.strip():
        raise ApiError(400, f"{param} must be a voice name (a preset such as v2/en_speaker_6, or an uploaded voice's id)",
                       param=param, code="invalid_voice")
    if len(name) > 200 or "\\" in name or name.startswith("/") or ".." in name.split("/") or not _VOICE_NAME.match(name):
        raise ApiError(400, f"voice '{name[:80]}' is not a voice name: names hold letters, digits, '_', '-' and '.', "
                            "and presets a '/' between parts (v2/en_speaker_6); paths are not accepted",
                       param=param, code="invalid_voice")
    return name


def _string(data: dict[str, Any], name: str, choices: tuple[str, ...] | None = None) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"{name} must be a string, got {type(value).__name__}", param=name, code="invalid_type")
    if choices is not None and value not in choices:
        raise ApiError(400, f"unknown {name} '{value[:40]}'; use one of {', '.join(choices)}", param=name,
                       code="invalid_value")
    return value


def _speed(data: dict[str, Any]) -> float:
    speed = data.get("speed", 1.0)
    if speed is None:
        return 1.0
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not SPEED_RANGE[0] <= speed <= SPEED_RANGE[1]:
        raise ApiError(400, f"speed must be a number from {SPEED_RANGE[0]} to {SPEED_RANGE[1]}, got {speed!r}",
                       param="speed", code="invalid_value")
    return float(speed)


def parse_speech_request(data: dict[str, Any], *, max_input_chars: int) -> SpeechRequest:
    """Check OpenAI's fields and the server's; everything else is a generation option for the pipeline."""
    text = data.get("input")
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, "input is empty; give some words to speak", param="input", code="empty_input")
    if len(text) > max_input_chars:
        raise ApiError(400, f"input is {len(text)} characters, over this server's limit of {max_input_chars}; "
                            "split it into several requests", param="input", code="input_too_long")
    if data.get("instructions"):
        raise ApiError(400, "instructions are not supported: Bark takes no instructions; write cues such as "
                            "[laughs] or ♪ into the input", param="instructions", code="unsupported")
    voice = data.get("voice")
    seed = data.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ApiError(400, f"seed must be a whole number, got {seed!r}", param="seed", code="invalid_value")
    progress = data.get("progress", False)
    if not isinstance(progress, bool):
        raise ApiError(400, "progress must be true or false", param="progress", code="invalid_type")
    return SpeechRequest(
        input=text,
        model=_string(data, "model"),
        voice=check_voice_name(voice) if voice not in (None, "") else None,
        response_format=_string(data, "response_format", STREAM_FORMATS) or "mp3",
        speed=_speed(data),
        stream_format=_string(data, "stream_format", STREAM_KINDS),
        seed=seed,
        mode=_string(data, "mode", MODES),
        progress=progress,
        options={k: v for k, v in data.items() if k not in _OPENAI_FIELDS and k not in _SERVER_FIELDS},
    )
