"""Reading and writing audio files.

Reading accepts whatever soundfile (libsndfile: wav, flac, ogg, mp3, ...) or librosa reads, at any rate and channel
count; channels are averaged to mono. Writing picks the format from the extension (``.wav``, ``.flac``, ``.ogg``,
``.opus``, ``.mp3``) and is atomic.

Peaks: Bark's decoder output is not bounded and can exceed 1.0 (the reference hands back the raw array; its
examples write it with scipy as float WAV, where players then clip). Integer formats cannot hold that, so by default
(``peak="scale"``) a clip whose peak exceeds 1.0 is scaled down as a whole to a peak of 0.999, which keeps its
shape and is the same for every format; a clip within [-1, 1] is written unchanged. ``peak="clip"`` clips instead,
and ``peak="keep"`` writes the raw values (float WAV only).

Formats: ``.wav`` 32-bit float (``pcm16=True``: 16-bit integer), ``.flac`` 24-bit (``pcm16``: 16-bit), and lossy
``.ogg`` (Vorbis), ``.opus`` (Opus in Ogg) and ``.mp3`` (libsndfile 1.1 or newer, as soundfile's wheels ship); ``.aac`` (AAC-LC in
ADTS, which libsndfile lacks) through FFmpeg's encoder in PyAV (``barkkit.audio_encoding``, extra ``serve``). A
write that fails (disk full, an unsupported rate) is an ``AudioError`` and leaves no file; an existing file at the
path is replaced only by a complete one. A float WAV's PEAK chunk carries no write time (libsndfile's is zeroed),
so equal samples make equal files.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np

from barkkit.errors import AudioError
from barkkit.files import atomic_output, check_input_file
from barkkit.tokens import Audio

__all__ = ["load_audio", "save_audio", "resample", "mpeg_notes_silenced", "AUDIO_EXTENSIONS", "WRITE_FORMATS"]

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aiff", ".aif", ".au")
WRITE_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".opus": "OGG", ".mp3": "MP3", ".aac": "AAC"}
_LOSSY_SUBTYPES = {".ogg": "VORBIS", ".opus": "OPUS", ".mp3": "MPEG_LAYER_III"}
PeakPolicy = Literal["scale", "clip", "keep"]


def resample(audio: Audio, sample_rate: int) -> Audio:
    """The same audio at ``sample_rate`` (soxr, high quality). Returns ``audio`` itself when the rate matches."""
    if audio.sample_rate == sample_rate:
        return audio
    import librosa

    samples = librosa.resample(np.asarray(audio.samples), orig_sr=audio.sample_rate, target_sr=sample_rate, res_type="soxr_hq")
    return Audio(samples, sample_rate)


def load_audio(path: str | os.PathLike, *, sample_rate: int | None = None) -> Audio:
    """Read an audio file as mono float32, resampled to ``sample_rate`` when given.

    Raises ``AudioError`` naming the file when it is missing, empty or not audio.
    """
    path = check_input_file(path, "audio file", AudioError)
    with mpeg_notes_silenced(path):
        samples, rate = _decode(path)
    if samples.size == 0:
        raise AudioError(f"{path}: holds no audio samples")
    if not np.all(np.isfinite(samples)):
        raise AudioError(f"{path}: holds NaN or infinite samples")
    audio = Audio(samples, int(rate))
    return resample(audio, sample_rate) if sample_rate else audio


def _decode(path: Path) -> tuple[np.ndarray, int]:
    """(mono samples, rate) through soundfile, else librosa; ``AudioError`` with the decoders' reason."""
    try:
        import soundfile

        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        return samples.mean(axis=1), rate
    except Exception as soundfile_error:
        try:  # formats libsndfile lacks (aac, m4a, ...): FFmpeg through PyAV where installed, else librosa's audioread
            decoded = _read_with_pyav(path, soundfile_error)
            if decoded is not None:
                return decoded
            import librosa

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                samples, rate = librosa.load(str(path), sr=None, mono=True)  # sr=None: the file's own rate, whole Hz
            return samples, int(rate)
        except Exception as exc:
            # audioread's "no backend" error says nothing; libsndfile's own reason then does
            reason = str(exc).strip() or str(soundfile_error).strip().replace(f"'{path}'", "file")
            if "does not exist" in reason:  # libsndfile's words for an MP3 it cannot decode; the file is there
                reason = "neither libsndfile nor librosa can decode it"
            raise AudioError(f"{path}: not a readable audio file ({reason})") from None


@contextmanager
def mpeg_notes_silenced(path: Path) -> Iterator[None]:
    """While an .mp3 decodes, file descriptor 2 goes to /dev/null: libmpg123 (inside libsndfile) prints "Note: ..."
    lines straight to it for a damaged file, which would bury the one line an error is. Other threads' direct
    writes to it are lost for that time too, which is why only MP3s get this."""
    try:
        descriptor = sys.stderr.fileno() if path.suffix.lower() == ".mp3" else None
    except (AttributeError, OSError, ValueError):  # a stream without a descriptor (a test's capture)
        descriptor = None
    if descriptor is None:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(descriptor)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, descriptor)
    os.close(null)
    try:
        yield
    finally:
        os.dup2(saved, descriptor)
        os.close(saved)


def _read_with_pyav(path: Path, soundfile_error: Exception) -> tuple[np.ndarray, int] | None:
    """Mono float32 samples (n,) and rate of a file FFmpeg reads (PyAV, the ``serve`` extra); None without PyAV.

    A file FFmpeg cannot read either raises libsndfile's reason, which names the problem more plainly.
    """
    try:
        import av
    except ImportError:
        return None
    try:
        with av.open(str(path)) as container:
            rate = container.streams.audio[0].rate
            mono = av.AudioResampler(format="flt", layout="mono", rate=rate)
            pieces = [frame.to_ndarray().reshape(-1) for packet in container.decode(audio=0) for frame in mono.resample(packet)]
            pieces += [frame.to_ndarray().reshape(-1) for frame in mono.resample(None)]
    except (av.FFmpegError, IndexError, ValueError):  # IndexError: no audio stream
        raise soundfile_error from None
    return (np.concatenate(pieces) if pieces else np.zeros(0, np.float32)), int(rate)


def _apply_peak(samples: np.ndarray, peak: PeakPolicy, float_output: bool) -> np.ndarray:
    top = float(np.max(np.abs(samples))) if samples.size else 0.0
    if top <= 1.0 or (peak == "keep" and float_output):
        return samples
    if peak == "keep":
        raise AudioError("peak='keep' needs a float WAV output; integer formats cannot hold samples beyond 1.0")
    if peak == "clip":
        return np.clip(samples, -1.0, 1.0)
    return samples * (0.999 / top)


def save_audio(
    path: str | os.PathLike,
    audio: Audio,
    *,
    pcm16: bool = False,
    peak: PeakPolicy = "scale",
) -> Path:
    """Write ``audio`` to ``path``; the extension picks the format. Atomic: no partial file on failure.

    Args:
        pcm16: write 16-bit integer samples (WAV, FLAC); by default WAV is 32-bit float, FLAC 24-bit; .ogg is
            Vorbis, .opus Opus (in Ogg) and .mp3 MPEG layer III, where the libsndfile that soundfile uses has them.
        peak: what to do with samples beyond [-1, 1] (see the module docstring).
    """
    import soundfile

    path = Path(path)
    extension = path.suffix.lower()
    if extension not in WRITE_FORMATS:
        raise AudioError(f"{path}: cannot write '{extension or 'no extension'}'; use one of {', '.join(WRITE_FORMATS)}")
    if extension == ".wav":
        subtype = "PCM_16" if pcm16 else "FLOAT"
    elif extension == ".flac":
        subtype = "PCM_16" if pcm16 else "PCM_24"
    else:
        subtype = _LOSSY_SUBTYPES.get(extension, "")
    if peak not in ("scale", "clip", "keep"):
        raise AudioError(f"unknown peak policy '{peak}'; use scale, clip or keep")
    samples = _apply_peak(np.asarray(audio.samples, dtype=np.float32), peak, float_output=subtype == "FLOAT")
    if extension == ".aac":
        return _save_aac(path, samples, audio.sample_rate)
    try:
        with atomic_output(path) as tmp:
            soundfile.write(str(tmp), samples, audio.sample_rate, subtype=subtype, format=WRITE_FORMATS[extension])
            if subtype == "FLOAT":
                _clear_peak_timestamp(tmp)
    except (RuntimeError, OSError, ValueError, TypeError) as exc:  # soundfile.LibsndfileError is a RuntimeError
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AudioError(f"{path}: could not write {WRITE_FORMATS[extension]} audio at {audio.sample_rate} Hz ({detail})") from None
    return path


def _clear_peak_timestamp(path: Path) -> None:
    """Zero the timestamp libsndfile puts in a float WAV's PEAK chunk (the second it was written), so that the
    same samples always make the same bytes: a batch made twice, or on a cluster, can be compared file by file."""
    with open(path, "r+b") as handle:
        data = handle.read(4096)  # the PEAK chunk comes before the samples, right after fmt and fact
        offset = 12
        while offset + 8 <= len(data):
            chunk, size = data[offset : offset + 4], int.from_bytes(data[offset + 4 : offset + 8], "little")
            if chunk == b"PEAK":
                handle.seek(offset + 12)  # after the chunk's id, size and version
                handle.write(b"\0\0\0\0")
                return
            if chunk == b"data":
                return
            offset += 8 + size + (size & 1)

def _save_aac(path: Path, samples: np.ndarray, sample_rate: int) -> Path:
    from barkkit.audio_encoding import encode_audio

    data = encode_audio(samples, "aac", sample_rate)  # before the output exists: a failure leaves nothing
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return path
