"""Audio to bytes: a stream's bytes are the whole file's (mp3, opus, aac) or decode to its samples (flac, wav)."""

import io

import av
import numpy as np
import pytest
import soundfile

from barkkit import Audio
from barkkit.audio import load_audio, save_audio
from barkkit.audio_encoding import STREAM_FORMATS, AudioStreamEncoder, encode_audio, to_pcm16
from barkkit.errors import AudioError

RATE = 24_000
TONE = (0.4 * np.sin(2 * np.pi * 330 * np.arange(RATE) / RATE)).astype(np.float32)
PIECES = [TONE[:9_000], TONE[9_000:9_001], TONE[9_001:]]  # uneven pieces, one of a single sample


def _decoded(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        return np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)])


@pytest.mark.parametrize("fmt", STREAM_FORMATS)
def test_a_stream_is_the_whole_file(fmt):
    encoder = AudioStreamEncoder(fmt, RATE)
    streamed = b"".join(encoder.feed(piece) for piece in PIECES) + encoder.finish()
    whole = encode_audio(PIECES, fmt, RATE)
    if fmt in ("pcm", "mp3", "opus", "aac"):
        assert streamed == whole
    else:  # wav and flac: the whole file's header states its length, a stream's cannot
        assert np.array_equal(_decoded(streamed), _decoded(whole))
    assert encode_audio(PIECES, fmt, RATE) == whole  # repeatable byte for byte


def test_lossless_formats_hold_exactly_the_pcm_samples():
    pcm = np.frombuffer(encode_audio(PIECES, "pcm", RATE), "<i2")
    assert np.array_equal(pcm, np.frombuffer(to_pcm16(TONE), "<i2"))
    for fmt in ("wav", "flac"):
        samples, rate = soundfile.read(io.BytesIO(encode_audio(PIECES, fmt, RATE)), dtype="int16")
        assert rate == RATE and np.array_equal(samples, pcm), fmt


def test_samples_beyond_one_are_clipped_piece_by_piece():
    loud = np.array([2.0, -3.0, 0.5], dtype=np.float32)
    assert np.array_equal(np.frombuffer(to_pcm16(loud), "<i2"), [32767, -32767, 16384])


def test_unknown_format_and_aac_files(tmp_path):
    with pytest.raises(AudioError, match="unknown audio format 'ogg'"):
        AudioStreamEncoder("ogg", RATE)
    path = save_audio(tmp_path / "tone.aac", Audio(TONE, RATE))
    read = load_audio(path)  # libsndfile has no AAC: read through FFmpeg (PyAV)
    assert read.sample_rate == RATE and abs(read.samples.size - TONE.size) < 3 * 1024  # AAC's priming and padding
    steady = read.samples[5_000:20_000]  # the tone's RMS, away from the codec's edges
    assert abs(np.sqrt(np.mean(steady**2)) - 0.4 / np.sqrt(2)) < 0.02
