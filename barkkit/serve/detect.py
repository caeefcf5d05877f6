"""``POST /v1/audio/detect`` and ``POST /v1/voices``: the two routes that read uploaded audio.

Uploads are written to a private temporary folder (the readers take paths and look at the extension), read
there, and removed; nothing is kept but an uploaded voice's ``.npz`` under the data folder.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from pathlib import Path
from typing import Any

from barkkit.audio import load_audio
from barkkit.detection import detect_one
from barkkit.errors import BarkkitError
from barkkit.serve.errors import ApiError, from_exception
from barkkit.serve.holder import PipelineHolder
from barkkit.serve.settings import ServeSettings
from barkkit.serve.spectrum import long_term_spectrum
from barkkit.serve.voices import VoiceStore, check_upload_name
from barkkit.voice_making import make_voice

__all__ = ["detect_uploads", "make_uploaded_voice"]

DEFAULT_DETECTOR = "bark-detector"  # the name `barkkit detect` uses


def _suffix(filename: str) -> str:
    suffix = Path(filename).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else ".audio"


def _one_line(exc: BaseException, tmp: Path, filename: str) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = text.replace(str(tmp), filename)  # the reader names the temporary file: name the upload instead
    return text if isinstance(exc, BarkkitError) else f"{type(exc).__name__}: {text}"


def _detect_one(detector: Any, folder: Path, index: int, filename: str, data: bytes, spectrum: bool) -> dict[str, Any]:
    """What ``barkkit detect --json`` prints for one file (``path`` is the upload's name), and the spectrum."""
    tmp = folder / f"{index}{_suffix(filename)}"
    tmp.write_bytes(data)
    try:
        audio = load_audio(tmp)
    except Exception as exc:  # one unreadable file does not stop the others
        return {"path": filename, "error": _one_line(exc, tmp, filename)}
    # the detector's own result, as `barkkit detect --json` prints it (a clip too short or silent to judge: a warning)
    result: dict[str, Any] = {**detect_one(detector, audio), "path": filename}
    if "error" in result:
        return {"path": filename, "error": result["error"].replace(str(tmp), filename)}
    if spectrum:
        result["spectrum"] = long_term_spectrum(audio)
    return result


def _detect_all(holder: PipelineHolder, files: list[tuple[str, bytes]], spectrum: bool) -> list[dict[str, Any]]:
    detector = holder.detector(DEFAULT_DETECTOR)
    with tempfile.TemporaryDirectory(prefix="barkkit-detect-") as folder:
        return [_detect_one(detector, Path(folder), i, name, data, spectrum) for i, (name, data) in enumerate(files)]


async def detect_uploads(holder: PipelineHolder, files: list[tuple[str, bytes]], *, spectrum: bool) -> dict[str, Any]:
    """``{"object": "list", "data": [result per file]}``; 400 when no file could be read."""
    try:
        results = await asyncio.to_thread(_detect_all, holder, files, spectrum)
    except BarkkitError as exc:
        raise from_exception(exc) from None
    if all("error" in result for result in results):
        raise ApiError(400, results[0]["error"] if len(results) == 1 else
                       f"none of the {len(results)} files could be read; first: {results[0]['error']}",
                       param="file", code="invalid_audio")
    return {"object": "list", "data": results}


def _voice_id(fields: dict[str, str], filename: str) -> str:
    name = fields.get("name")
    if name is not None:
        return check_upload_name(name.strip())
    stem = re.sub(r"[^A-Za-z0-9_.\-]", "_", Path(filename).stem)[:64].lstrip(".") or "voice"
    return check_upload_name(stem)


async def make_uploaded_voice(holder: PipelineHolder, store: VoiceStore, files: list[tuple[str, bytes]],
                              fields: dict[str, str], settings: ServeSettings) -> dict[str, Any]:
    """Make a voice from one recording (``barkkit.voice_making.make_voice``) and store it under its id."""
    if len(files) != 1:
        raise ApiError(400, f"send one recording to make a voice from, got {len(files)}", param="file", code="invalid_form")
    filename, data = files[0]
    voice_id = _voice_id(fields, filename)
    store.check_free(voice_id)  # the 409 before the long work

    def make() -> Any:
        with tempfile.TemporaryDirectory(prefix="barkkit-voice-") as folder:
            tmp = Path(folder) / f"recording{_suffix(filename)}"
            tmp.write_bytes(data)
            try:
                weights: dict[str, Any] = {k: v for k, v in (("hubert", settings.hubert), ("quantizer", settings.quantizer)) if v}
                return make_voice(tmp, model=holder.model, plugins=holder.plugins,
                                  semantic_stage=settings.semantic_stage, **weights)
            except BarkkitError as exc:
                raise type(exc)(_one_line(exc, tmp, filename)) from None

    try:
        voice = await asyncio.to_thread(make)
    except Exception as exc:
        raise from_exception(exc, param="file") from None
    store.save(voice_id, voice)
    return {"object": "voice", "id": voice_id, "name": voice_id, "source": "uploaded",
            "semantic_tokens": len(voice.semantic), "codec_frames": len(voice.fine),
            "duration_s": round(len(voice.fine) / 75, 2)}
