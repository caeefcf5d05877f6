"""Audio to bytes in the formats HTTP clients ask for, whole or piece by piece as it is generated.

``barkkit.audio`` writes files through libsndfile (wav, flac, ogg, opus, mp3); a server needs bytes, and needs to
send the first sentence before the last is made. ``AudioStreamEncoder`` takes samples in pieces and returns the
bytes each piece completes:

- ``pcm``: raw 16-bit signed little-endian mono samples (OpenAI's ``pcm``), no header;
- ``wav``: a 16-bit PCM WAV header, then the same samples. A stream cannot know its length, so its header says
  "unknown" (0xFFFFFFFF, as streaming servers do); ``encode_audio`` writes the exact sizes;
- ``mp3`` (LAME), ``opus`` (Opus in Ogg), ``aac`` (AAC-LC in ADTS) and ``flac``: FFmpeg's encoders through PyAV
  (``pip install 'barkkit[serve]'``; its wheels carry the encoders, libsndfile has no AAC). A stream goes to a
  sink that cannot seek, so no header is rewritten at the end, and Ogg's serial number is fixed (bit-exact
  muxing): for mp3, opus and aac the bytes of a stream are the bytes of the whole. A whole FLAC file is written
  seekable, so that its header states its length (libsndfile refuses a FLAC of unknown length); its frames, and so
  its samples, are those of the stream.

Samples beyond [-1, 1] are clipped, sample by sample, so that a piece encodes the same whether it is sent alone
or with the rest (a whole-clip rescale would need the whole clip first).
"""

from __future__ import annotations

import io
import struct
from typing import Any

import numpy as np

from barkkit.errors import AudioError

__all__ = ["STREAM_FORMATS", "MEDIA_TYPES", "AudioStreamEncoder", "encode_audio", "to_pcm16", "wav_header"]

STREAM_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
MEDIA_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg; codecs=opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
# format -> (PyAV container format, encoder)
_FFMPEG = {"mp3": ("mp3", "libmp3lame"), "opus": ("ogg", "libopus"), "aac": ("adts", "aac"), "flac": ("flac", "flac")}
# Ogg: a page at least every 100 ms (FFmpeg's default is 1 s), so a sentence's audio leaves with the sentence
_MUXER_OPTIONS = {"ogg": {"page_duration": "100000"}}
_UNKNOWN_SIZE = 0xFFFF_FFFF


def to_pcm16(samples: np.ndarray) -> bytes:
    """Float samples (n,) as 16-bit little-endian PCM bytes (2n), clipped to [-1, 1]."""
    clipped = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    return np.round(clipped * 32767.0).astype("<i2").tobytes()


def wav_header(sample_rate: int, n_samples: int | None = None) -> bytes:
    """The 44-byte header of a mono 16-bit PCM WAV; ``n_samples`` None writes the streaming "unknown" sizes."""
    data_bytes = _UNKNOWN_SIZE if n_samples is None else 2 * n_samples
    riff_bytes = _UNKNOWN_SIZE if n_samples is None else 36 + data_bytes
    return (b"RIFF" + struct.pack("<I", riff_bytes) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, 2 * sample_rate, 2, 16)
            + b"data" + struct.pack("<I", data_bytes))


class _Sink:
    """A write-only file for PyAV: having no ``seek``, it makes the muxers write straight through."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def _require_av() -> Any:
    try:
        import av
    except ImportError:
        raise AudioError("mp3, opus, aac and flac bytes need PyAV: pip install 'barkkit[serve]' (or pip install av)") from None
    return av


class AudioStreamEncoder:
    """Encodes mono float audio arriving in pieces; ``feed`` and ``finish`` return the bytes ready so far.

    >>> encoder = AudioStreamEncoder("mp3", 24_000)
    >>> body = encoder.feed(first_sentence) + encoder.feed(second_sentence) + encoder.finish()
    """

    def __init__(self, fmt: str, sample_rate: int, *, seekable: bool = False) -> None:
        if fmt not in STREAM_FORMATS:
            raise AudioError(f"unknown audio format '{fmt}'; use one of {', '.join(STREAM_FORMATS)}")
        self.format = fmt
        self.sample_rate = int(sample_rate)
        self._started = False
        self._samples = 0
        self._container: Any = None
        if fmt in _FFMPEG:
            av = _require_av()
            container_format, codec = _FFMPEG[fmt]
            self._sink: Any = io.BytesIO() if seekable else _Sink()
            options = {"fflags": "+bitexact", **_MUXER_OPTIONS.get(container_format, {})}
            try:
                self._container = av.open(self._sink, mode="w", format=container_format, options=options)
                self._stream = self._container.add_stream(codec, rate=self.sample_rate)
                self._stream.layout = "mono"
            except (av.FFmpegError, ValueError) as exc:
                raise AudioError(f"cannot encode {fmt} at {self.sample_rate} Hz ({exc})") from None

    def feed(self, samples: np.ndarray) -> bytes:
        """Encode the next piece of samples (n,); returns whatever bytes the format has ready."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        head = b""
        if not self._started and self.format == "wav":
            head = wav_header(self.sample_rate)
        self._started = True
        if self._container is None:
            self._samples += samples.size
            return head + to_pcm16(samples)
        if samples.size == 0:
            return b""
        av = _require_av()
        if self.format == "flac":  # lossless: exactly the 16-bit samples of pcm and wav (FFmpeg would round otherwise)
            frame = av.AudioFrame.from_ndarray(np.frombuffer(to_pcm16(samples), "<i2")[None, :], format="s16", layout="mono")
        else:
            frame = av.AudioFrame.from_ndarray(np.clip(samples, -1.0, 1.0)[None, :], format="flt", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = self._samples
        self._samples += samples.size
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        return self._take()

    def _take(self) -> bytes:
        # a seekable sink may still rewrite its header: it hands everything over at the end only
        return self._sink.take() if isinstance(self._sink, _Sink) else b""

    def finish(self) -> bytes:
        """Flush the encoder and close the container; the last bytes of the stream."""
        if self._container is None:
            # a stream that never got a sample still is a valid (empty) file of its format
            return wav_header(self.sample_rate) if self.format == "wav" and not self._started else b""
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        self._container = None
        return self._sink.take() if isinstance(self._sink, _Sink) else self._sink.getvalue()


def encode_audio(pieces: list[np.ndarray] | np.ndarray, fmt: str, sample_rate: int) -> bytes:
    """A whole file's bytes from one array or a list of pieces (encoded piece by piece, as a stream would be).

    For ``wav`` the header holds the exact sizes; every other format gives exactly the bytes of the stream.
    """
    pieces = [pieces] if isinstance(pieces, np.ndarray) else list(pieces)
    if fmt == "wav":
        body = b"".join(to_pcm16(piece) for piece in pieces)
        return wav_header(sample_rate, len(body) // 2) + body
    encoder = AudioStreamEncoder(fmt, sample_rate, seekable=fmt == "flac")
    return b"".join(encoder.feed(piece) for piece in pieces) + encoder.finish()
