"""barkkit.audio: the formats `-o` can write, round trips, peaks, and failed writes leaving nothing behind."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from barkkit.audio import load_audio, resample, save_audio
from barkkit.errors import AudioError
from barkkit.tokens import Audio


def tone(peak: float = 0.5, seconds: float = 0.5, rate: int = 24_000) -> Audio:
    t = np.arange(int(seconds * rate)) / rate
    return Audio((peak * np.sin(2 * np.pi * 220 * t) * np.hanning(t.size) ** 0.1).astype(np.float32), rate)


@pytest.mark.parametrize(
    "name, options, subtype, tolerance",
    [
        ("out.wav", {}, "FLOAT", 0.0),
        ("out.wav", {"pcm16": True}, "PCM_16", 1 / 32_767),
        ("out.flac", {}, "PCM_24", 1 / 2**23),
        ("out.flac", {"pcm16": True}, "PCM_16", 1 / 32_767),
    ],
)
def test_lossless_formats_round_trip(tmp_path, name, options, subtype, tolerance):
    audio = tone()
    path = save_audio(tmp_path / name, audio, **options)
    info = soundfile.info(str(path))
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (24_000, 1, subtype, len(audio))
    back = load_audio(path)
    assert back.sample_rate == 24_000 and len(back) == len(audio)
    assert np.abs(back.samples - audio.samples).max() <= tolerance


@pytest.mark.parametrize("name, subtype", [("out.ogg", "VORBIS"), ("out.opus", "OPUS"), ("out.mp3", "MPEG_LAYER_III")])
def test_lossy_formats_are_written_and_readable(tmp_path, name, subtype):
    audio = tone(seconds=1.0)
    path = save_audio(tmp_path / name, audio)
    assert soundfile.info(str(path)).subtype == subtype
    back = load_audio(path)
    assert back.sample_rate == 24_000 and abs(len(back) - len(audio)) < 2_000
    n = min(len(back), len(audio))
    assert np.corrcoef(back.samples[:n], audio.samples[:n])[0, 1] > 0.9  # lossy, but the same sound


def test_loud_audio_is_scaled_clipped_or_kept(tmp_path):
    audio = tone(peak=1.7)  # Bark's raw output can exceed 1.0
    scaled = load_audio(save_audio(tmp_path / "scaled.flac", audio)).samples
    assert abs(np.abs(scaled).max() - 0.999) < 1e-3
    assert np.allclose(scaled, audio.samples * (0.999 / np.abs(audio.samples).max()), atol=1e-5)  # same shape
    clipped = load_audio(save_audio(tmp_path / "clipped.wav", audio, peak="clip")).samples
    assert np.abs(clipped).max() == 1.0 and np.array_equal(clipped, np.clip(audio.samples, -1, 1))
    kept = load_audio(save_audio(tmp_path / "kept.wav", audio, peak="keep")).samples
    assert np.array_equal(kept, audio.samples)
    with pytest.raises(AudioError, match="float WAV"):
        save_audio(tmp_path / "kept.flac", audio, peak="keep")
    assert not (tmp_path / "kept.flac").exists()


def test_quiet_audio_is_written_unchanged(tmp_path):
    audio = tone(peak=0.25)
    assert np.array_equal(load_audio(save_audio(tmp_path / "q.wav", audio)).samples, audio.samples)


def test_unknown_extension_is_a_clear_error(tmp_path):
    with pytest.raises(AudioError, match=r"cannot write '\.mp4'.*\.wav, \.flac"):
        save_audio(tmp_path / "out.mp4", tone())
    assert not list(tmp_path.iterdir())


def test_a_failing_write_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    out = tmp_path / "out.wav"
    out.write_bytes(b"previous take")
    real_write = soundfile.write

    def write_half_then_fail(file, data, *args, **kwargs):  # a full disk, half-way through
        real_write(file, data[: len(data) // 2], *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(soundfile, "write", write_half_then_fail)
    with pytest.raises(AudioError, match="out.wav: could not write WAV audio.*No space left"):
        save_audio(out, tone())
    assert out.read_bytes() == b"previous take"
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]  # no temporary file left


def test_a_rate_the_format_cannot_hold_is_a_clear_error(tmp_path):
    with pytest.raises(AudioError, match="out.flac: could not write FLAC audio at 1000000 Hz"):
        save_audio(tmp_path / "out.flac", Audio(np.zeros(100, np.float32), 1_000_000))
    assert not list(tmp_path.iterdir())


def test_reading_mixes_channels_and_resamples(tmp_path):
    t = np.arange(22_050) / 22_050
    left, right = np.sin(2 * np.pi * 200 * t), 0.5 * np.sin(2 * np.pi * 200 * t)
    soundfile.write(tmp_path / "s.flac", np.stack([left, right], 1), 22_050)
    audio = load_audio(tmp_path / "s.flac")
    assert audio.sample_rate == 22_050 and np.allclose(audio.samples, 0.75 * left, atol=1e-4)
    at_24k = load_audio(tmp_path / "s.flac", sample_rate=24_000)
    assert at_24k.sample_rate == 24_000 and abs(len(at_24k) - 24_000) <= 1
    assert resample(audio, 22_050) is audio


@pytest.mark.parametrize("content, message", [(b"", "not a readable audio file"), (b"RIFF1234WAVEjunk", "not a readable")])
def test_unreadable_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError, match=message):
        load_audio(path)
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "missing.wav")
