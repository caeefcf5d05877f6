"""Feature sets for the Bark-audio detector: audio in, one fixed-length float vector out.

Feature extraction stays outside the persisted scikit-learn pipeline and is versioned with it: a model file
records the feature set's ``name`` and ``version``, and loading refuses a model whose pair does not match.

Two sets:

- ``encodec-comb`` (the default, numpy only). Bark turns its tokens into sound with EnCodec's 24 kHz decoder,
  whose first transposed convolution upsamples the 75 Hz code frames eightfold, to 600 Hz. It leaves a faint
  periodic pattern with a period of 1/600 s in everything Bark outputs, seen as narrow spectral lines at every
  multiple of 600 Hz in the long-term spectrum. The lines are the same for every speaker, language, text and
  loudness, survive resampling (they sit at fixed frequencies in Hz, not bins) and lossy codecs (MP3, Vorbis, Opus at
  usual qualities), and human speech has no reason to carry them. The features are the prominences of those lines
  over the local spectral floor, plus control prominences off the comb where any other sound with a period that
  divides 1/600 s (mains hum at 50/60 Hz, codec frames, a buzz) would also put lines, so such a sound is not read as
  Bark. Everything is computed on 16 kHz audio (the lowest rate in the training data) below 7 kHz, so sample rate and
  bandwidth cannot leak the label, and from log-spectrum differences, so loudness cannot either.
- ``hubert-l6`` (optional; Suno's recipe). HuBERT-base layer-6 hidden states averaged over time (768 values). Needs
  ``facebook/hubert-base-ls960`` weights in a local folder or the Hugging Face cache, and torch + transformers.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from barkkit.audio import load_audio, resample
from barkkit.errors import AudioError, BarkkitError, WeightsError
from barkkit.tokens import Audio

__all__ = [
    "SAMPLE_RATE",
    "FeatureSet",
    "CombFeatures",
    "HubertFeatures",
    "FEATURE_SETS",
    "prepare_audio",
    "make_feature_set",
]

SAMPLE_RATE = 16_000
"""Every clip is scored at this rate: at or below the lowest rate of the training sources, so all look alike."""


def prepare_audio(audio: Audio | str | os.PathLike) -> np.ndarray:
    """Read (when a path) and bring audio to the detector's common form.

    Returns float32 samples (n,) at ``SAMPLE_RATE``, DC removed, scaled to an RMS of 0.05 (about -26 dBFS) so that
    loudness never reaches the features. Silent audio stays silent.
    """
    if isinstance(audio, np.ndarray):  # samples without a rate: the comb's frequencies would be unknown
        raise AudioError("got a bare array of samples; give Audio(samples, sample_rate) (barkkit.Audio) or a file path")
    if not isinstance(audio, Audio):
        audio = load_audio(audio)
    samples = np.asarray(resample(audio, SAMPLE_RATE).samples, dtype=np.float32)
    samples = samples - samples.mean()
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0
    if rms > 1e-7:
        samples = samples * np.float32(0.05 / rms)
    return samples


class FeatureSet(ABC):
    """Turns prepared audio (``prepare_audio``: float32 (n,) at 16 kHz) into a feature vector (dim,)."""

    name: ClassVar[str]
    version: ClassVar[int]
    dim: int

    @abstractmethod
    def extract(self, samples: np.ndarray) -> np.ndarray:
        """Features of one clip: float64 (dim,)."""

    def feature_names(self) -> list[str]:
        return [f"{self.name}_{i}" for i in range(self.dim)]

    def params(self) -> dict[str, Any]:
        """What a model file records besides name and version to rebuild this feature set."""
        return {}

    def __call__(self, audio: Audio | str | os.PathLike) -> np.ndarray:
        return self.extract(prepare_audio(audio))


class CombFeatures(FeatureSet):
    """Prominence of EnCodec's 600 Hz line comb in the long-term spectrum, with hum and tonality controls.

    The long-term spectrum is the mean power of Hann-windowed frames of ``N_FFT`` samples (2 s; shorter clips are
    zero-padded), 0.5 Hz per bin so that every multiple of 600 Hz (and of 50, 60 and 75 Hz) falls exactly on a bin.
    Its log, minus a running median over ``FLOOR_BINS`` (about 100 Hz), is the "residual": how far each bin stands
    above its neighbourhood. A line's prominence is the largest residual within +-1 bin (0.5 Hz) of its frequency.
    Long frames matter: a line keeps its power in one bin while speech spreads over many, so its prominence grows
    with the frame (leave-one-source-out EER 3.1% with 0.4 s frames, 0.3% with 2 s frames).
    """

    name = "encodec-comb"
    version = 2  # 2: clips shorter than one frame are windowed at their own length

    N_FFT = 32_000  # 16000 / 32000 = 0.5 Hz bins; 600 Hz = bin 1200
    HOP = 8_000
    FLOOR_BINS = 201
    TOLERANCE_BINS = 1
    MAX_HZ = 7000.0  # below every source's band edge (16 kHz audio ends at 8 kHz)
    COMB_HZ = 600.0
    N_TEETH = 11  # 600 ... 6600 Hz
    SUB_COMBS_HZ = (50.0, 60.0, 75.0, 100.0, 120.0, 150.0, 200.0, 300.0)

    def __init__(self) -> None:
        self.bin_hz = SAMPLE_RATE / self.N_FFT
        self.window = np.hanning(self.N_FFT).astype(np.float32)
        comb = [self.COMB_HZ * k for k in range(1, self.N_TEETH + 1)]
        self._comb = self._bins(comb)

        def off_comb(step: float, start: float) -> np.ndarray:
            # harmonics of `step` that stay clear of every comb tooth, so they measure something else
            freqs = np.arange(start, self.MAX_HZ, step)
            distance = np.abs(freqs - self.COMB_HZ * np.round(freqs / self.COMB_HZ))
            return self._bins(freqs[distance > 5.0])

        self._half = self._bins([self.COMB_HZ * (k + 0.5) for k in range(0, self.N_TEETH)])
        # Any sound that repeats every 1/f s, with f dividing 600 Hz, also has lines at every multiple of 600 Hz:
        # mains hum (50, 60 Hz), codec frames (Opus 20 ms = 50 Hz, speech-codec 5 ms subframes = 200 Hz), EnCodec's
        # own 75 Hz frames. Their harmonics *off* the comb tell such sounds apart from a pure 600 Hz period.
        self._sub_combs = {int(f): off_comb(f, 2 * f) for f in self.SUB_COMBS_HZ}
        self.dim = len(self.feature_names())

    def _bins(self, freqs: Any) -> np.ndarray:
        return np.round(np.asarray(freqs, dtype=np.float64) / self.bin_hz).astype(np.int64)

    def feature_names(self) -> list[str]:
        teeth = [f"comb_{int(self.COMB_HZ * k)}hz" for k in range(1, self.N_TEETH + 1)]
        subs = [f"off_comb_{int(f)}hz_mean" for f in self.SUB_COMBS_HZ]
        summary = ["comb_mean", "comb_median", "comb_low_mean", "comb_high_mean", "half_comb_mean"]
        return teeth + summary + subs + ["comb_excess"]

    def long_term_residual(self, samples: np.ndarray) -> np.ndarray:
        """Log long-term spectrum minus its running median: (N_FFT // 2 + 1,) float64."""
        from scipy.ndimage import median_filter

        if samples.shape[0] < self.N_FFT:
            # one frame: the clip under a window of its own length, zero-padded to keep the bins on whole Hz
            windowed = samples * np.hanning(samples.shape[0]).astype(np.float32)
            spectrum = np.fft.rfft(windowed, n=self.N_FFT)
            log_power = np.log(spectrum.real**2 + spectrum.imag**2 + 1e-12)
            return log_power - median_filter(log_power, size=self.FLOOR_BINS, mode="nearest")
        n_frames = 1 + (samples.shape[0] - self.N_FFT) // self.HOP
        frames = np.lib.stride_tricks.sliding_window_view(samples, self.N_FFT)[:: self.HOP][:n_frames]  # (F, N_FFT)
        power = np.zeros(self.N_FFT // 2 + 1, dtype=np.float64)
        for start in range(0, n_frames, 64):  # chunks bound the memory of long files
            spectrum = np.fft.rfft(frames[start : start + 64] * self.window, axis=1)  # (f, N_FFT/2+1)
            power += np.sum(spectrum.real**2 + spectrum.imag**2, axis=0)
        log_power = np.log(power / n_frames + 1e-12)
        return log_power - median_filter(log_power, size=self.FLOOR_BINS, mode="nearest")

    def _prominence(self, residual: np.ndarray, bins: np.ndarray) -> np.ndarray:
        offsets = np.arange(-self.TOLERANCE_BINS, self.TOLERANCE_BINS + 1)
        return residual[bins[:, None] + offsets[None, :]].max(axis=1)

    def extract(self, samples: np.ndarray) -> np.ndarray:
        residual = self.long_term_residual(samples)
        teeth = self._prominence(residual, self._comb)  # (N_TEETH,)
        half = self._prominence(residual, self._half).mean()
        subs = {f: self._prominence(residual, bins).mean() for f, bins in self._sub_combs.items()}
        # how far the comb stands above the strongest rival explanation (EnCodec's own 75 Hz lines excluded)
        excess = teeth.mean() - max(half, *(v for f, v in subs.items() if f != 75))
        return np.array(
            [*teeth, teeth.mean(), np.median(teeth), teeth[:5].mean(), teeth[5:].mean(), half, *subs.values(), excess],
            dtype=np.float64,
        )


class HubertFeatures(FeatureSet):
    """HuBERT hidden states of one layer, averaged over time (Suno's recipe: HuBERT-base, layer 6).

    Args:
        model: a local folder holding a transformers ``HubertModel`` (config.json + weights), or a hub id found in
            the local Hugging Face cache (nothing is downloaded).
        layer: which hidden state (0 = the convolutional features' projection, 1..L = transformer layers); clamped
            to the model's depth so tiny test models work.
    """

    name = "hubert-l6"
    version = 1
    DEFAULT_MODEL = "facebook/hubert-base-ls960"

    def __init__(self, model: str | os.PathLike | None = None, layer: int = 6) -> None:
        try:
            import torch
            from transformers import HubertModel
        except ImportError as exc:
            raise BarkkitError(f"HuBERT features need torch and transformers ({exc}); install them or use encodec-comb") from None
        self.model_name = str(model or self.DEFAULT_MODEL)
        try:
            self.model = HubertModel.from_pretrained(self.model_name, local_files_only=True).eval()
        except Exception as exc:
            raise WeightsError(
                f"cannot load HuBERT from '{self.model_name}' ({type(exc).__name__}); give a local folder holding "
                f"{self.DEFAULT_MODEL} (config.json + model.safetensors) or put it in the Hugging Face cache"
            ) from None
        self.layer = min(int(layer), self.model.config.num_hidden_layers)
        self.dim = int(self.model.config.hidden_size)
        self._torch = torch

    def params(self) -> dict[str, Any]:
        return {"model": self.model_name if not Path(self.model_name).exists() else str(Path(self.model_name).resolve()), "layer": self.layer}

    def extract(self, samples: np.ndarray) -> np.ndarray:
        torch = self._torch
        # HuBERT-base was trained on zero-mean, unit-variance input
        x = torch.from_numpy(np.asarray(samples, dtype=np.float32))
        x = (x - x.mean()) / (x.std() + 1e-7)
        minimum = 400  # the convolutional front end needs at least one 25 ms frame
        if x.shape[0] < minimum:
            x = torch.nn.functional.pad(x, (0, minimum - x.shape[0]))
        with torch.inference_mode():
            out = self.model(x[None], output_hidden_states=True)
        hidden = out.hidden_states[self.layer][0]  # (T, hidden_size)
        return hidden.mean(dim=0).double().numpy()


FEATURE_SETS: dict[str, type[FeatureSet]] = {CombFeatures.name: CombFeatures, HubertFeatures.name: HubertFeatures}


def make_feature_set(name: str, version: int | None = None, **params: Any) -> FeatureSet:
    """Build a feature set by name; refuses a version this code does not compute (a model trained elsewhere)."""
    if name not in FEATURE_SETS:
        raise BarkkitError(f"unknown feature set '{name}'; known: {', '.join(FEATURE_SETS)}")
    cls = FEATURE_SETS[name]
    if version is not None and int(version) != cls.version:
        raise BarkkitError(
            f"the model needs feature set '{name}' version {version}, but this barkkit computes version {cls.version}; "
            f"retrain it with 'barkkit detector train' or use a matching barkkit"
        )
    if cls is HubertFeatures:
        return HubertFeatures(model=params.get("model"), layer=int(params.get("layer", 6)))
    return cls()
