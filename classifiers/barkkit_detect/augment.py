"""Random degradations applied at training time, so the detector learns Bark's traces and not the recording chain.

Each call draws one chain: a speed change of up to +-5%, crop, resampling through a random rate, a lossy codec (MP3, Vorbis, Opus), noise, a
band limit, clipping, and for human speech mains hum, buzz or another periodic interference (whose harmonics
include every multiple of 600 Hz, the frequencies of EnCodec's comb). All labels get the same chains except hum,
so none of them can tell the labels apart.
"""

from __future__ import annotations

import io

import numpy as np

__all__ = ["augment", "CODEC_RATES", "SPEED"]

RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
CODEC_RATES = {"MP3": (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000), "VORBIS": RATES, "OPUS": (8000, 12000, 16000, 24000, 48000)}


def _resample(samples: np.ndarray, rate: int, target: int, rng: np.random.Generator) -> np.ndarray:
    import librosa

    if rate == target:
        return samples
    res_type = str(rng.choice(["soxr_hq", "soxr_mq", "soxr_lq", "polyphase", "fft"]))
    return librosa.resample(samples, orig_sr=rate, target_sr=target, res_type=res_type).astype(np.float32)


def _codec(samples: np.ndarray, rate: int, codec: str, quality: float) -> np.ndarray:
    import soundfile

    buffer = io.BytesIO()
    if codec == "MP3":
        soundfile.write(buffer, samples, rate, format="MP3", subtype="MPEG_LAYER_III", compression_level=quality)
    else:
        soundfile.write(buffer, samples, rate, format="OGG", subtype=codec, compression_level=quality)
    buffer.seek(0)
    decoded, _ = soundfile.read(buffer, dtype="float32")
    return decoded.reshape(decoded.shape[0], -1).mean(axis=1) if decoded.ndim > 1 else decoded


def _hum(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Mains hum (a few harmonics), buzz (many, from a clipped or rectified sine), or another periodic interference
    (frame-rate artifacts of codecs and vocoders, device whine): (n,) with unit RMS."""
    t = np.arange(n) / rate
    mains = float(rng.choice([50.0, 60.0])) * (1 + rng.uniform(-0.002, 0.002))
    if rng.random() < 0.3:
        # a fundamental that divides 600 Hz (every line of the comb lit) or any other (some of its lines lit)
        f0 = float(rng.choice([100.0, 120.0, 150.0, 200.0, 300.0])) if rng.random() < 0.5 else float(rng.uniform(35.0, 580.0))
        tilt = rng.uniform(0.0, 1.5)
        signal = sum(rng.uniform(0, 1) * k**-tilt * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3)) for k in range(1, int(min(7000.0, 0.45 * rate) / f0)))
    elif rng.random() < 0.5:
        signal = sum(rng.uniform(0.1, 1.0) / k * np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 6.3)) for k in range(1, 8))
    else:
        base = np.sin(2 * np.pi * mains * t)
        signal = np.clip(base * rng.uniform(2, 20), -1, 1) if rng.random() < 0.5 else np.abs(base) - 0.63
    signal = np.asarray(signal, dtype=np.float64)
    return (signal / (np.sqrt(np.mean(signal**2)) + 1e-9)).astype(np.float32)


SPEED = 0.05  # played up to 5% fast or slow (or written with a rate that far off): every line moves by that factor


def augment(samples: np.ndarray, rate: int, rng: np.random.Generator, *, human: bool, crop_s: tuple[float, float] = (1.0, 12.0), speed_p: float = 0.5) -> tuple[np.ndarray, int]:
    """One random degradation of ``samples`` (float32 (n,) at ``rate``). Returns (samples, rate).

    With probability ``speed_p`` the audio is first played at a random speed within +-``SPEED`` (its samples read
    at a rate that far off, as a wrong header or a sped-up copy would), then degraded as usual.
    """
    if rng.random() < speed_p:
        rate = int(round(rate * (1.0 + rng.uniform(-SPEED, SPEED))))
    from scipy.signal import butter, sosfilt

    samples = np.asarray(samples, dtype=np.float32)
    length = int(rng.uniform(*crop_s) * rate)
    if samples.shape[0] > length:
        start = int(rng.integers(0, samples.shape[0] - length))
        samples = samples[start : start + length]
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) + 1e-9
    if rng.random() < 0.5:  # a resampling chain before anything else happens to it
        middle = int(rng.choice(RATES))
        samples, rate = _resample(samples, rate, middle, rng), middle
    if rng.random() < 0.25:  # a band limit from a cheap microphone, a telephone line or a codec
        cutoff = rng.uniform(3400.0, min(7800.0, 0.45 * rate))
        samples = sosfilt(butter(6, cutoff, fs=rate, output="sos"), samples).astype(np.float32)
    if rng.random() < 0.15:
        samples = sosfilt(butter(2, rng.uniform(60.0, 300.0), btype="highpass", fs=rate, output="sos"), samples).astype(np.float32)
    if human and rng.random() < 0.35:
        samples = samples + _hum(samples.shape[0], rate, rng) * np.float32(rms * 10 ** (-rng.uniform(20, 50) / 20))
    if rng.random() < 0.3:  # white or brown-ish background noise at 15-50 dB SNR
        noise = rng.standard_normal(samples.shape[0]).astype(np.float32)
        if rng.random() < 0.5:
            noise = sosfilt(butter(1, 500.0, fs=rate, output="sos"), noise).astype(np.float32)
            noise /= np.sqrt(np.mean(noise**2)) + 1e-9
        samples = samples + noise * np.float32(rms * 10 ** (-rng.uniform(15, 50) / 20))
    peak = float(np.max(np.abs(samples))) + 1e-9
    samples = samples * np.float32(rng.uniform(0.05, 0.99) / peak)  # loudness is arbitrary
    if rng.random() < 0.1:
        samples = np.clip(samples * np.float32(rng.uniform(1.5, 4.0)), -1.0, 1.0)
    if rng.random() < 0.6:
        codec = str(rng.choice(list(CODEC_RATES)))
        rates = CODEC_RATES[codec]
        if rate not in rates:
            target = int(rng.choice(rates))
            samples, rate = _resample(samples, rate, target, rng), target
        samples = _codec(np.clip(samples, -1.0, 1.0), rate, codec, float(rng.uniform(0.0, 0.95)))
    return samples.astype(np.float32), rate
