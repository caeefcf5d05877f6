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
from barkkit_detect.comb import COMB_FEATURE_NAMES, comb_features
from barkkit_detect.spectra import long_term_spectra
from barkkit_detect.teeth import TEETH_FEATURE_NAMES, teeth_features

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
    """EnCodec's line comb (spacing searched around 600 Hz) in four long-term spectra, with its rivals.

    See ``spectra`` for the views (mean and log-mean power, frame-to-frame phase coherence, the squared signal's
    power, a multitaper estimate; 2 s frames, 0.5 Hz bins), ``comb`` for what is measured on them, and ``teeth`` for the band-aware
    statistics (only the teeth where the audio has sound; 2 s and 1 s frames; over 4 s stretches). Long frames matter: a line keeps its
    power in one bin while speech spreads over many. The vector's last value is the comb spacing found (Hz), which
    results report as ``comb_spacing_hz``.
    """

    name = "encodec-comb"
    version = 8  # 3: spacing searched, log-mean, coherence and squared-signal views; 4: band-aware teeth at 2 s and 1 s frames and over time; 5: multitaper view (search + T_ teeth); 6: spacing searched on the joint evidence of seven views; 7: the search weights EnCodec's tall teeth (3, 4, 6) three times; 8: odd 75 Hz lines against even ones (frame_odd_excess), the search's margin over the known spacings

    def __init__(self) -> None:
        self.dim = len(COMB_FEATURE_NAMES) + len(TEETH_FEATURE_NAMES)

    def feature_names(self) -> list[str]:
        return list(COMB_FEATURE_NAMES) + list(TEETH_FEATURE_NAMES)

    def extract(self, samples: np.ndarray) -> np.ndarray:
        spectra = long_term_spectra(samples)
        return np.concatenate([comb_features(spectra), teeth_features(samples, spectra)])


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
