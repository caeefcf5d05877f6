"""The detector: a feature set (outside the model file) plus a scikit-learn pipeline persisted with skops.

A model is two files side by side: ``NAME.skops`` (the scikit-learn pipeline, loaded without pickle) and
``NAME.json`` (the feature set's name, version and parameters, the calibrated threshold, how it was trained and
its leave-one-source-out metrics). Loading refuses a model whose feature version this code does not compute, and a
skops file holding any type beyond the scikit-learn and numpy ones listed in ``TRUSTED_TYPES``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from barkkit.audio import load_audio, resample
from barkkit.detection import AudioDetector
from barkkit.errors import AudioError, WeightsError
from barkkit.files import atomic_output
from barkkit.tokens import Audio
from barkkit.weights import read_json
from barkkit_detect.features import SAMPLE_RATE, FeatureSet, make_feature_set, prepare_audio

__all__ = ["Detector", "BUNDLED_MODEL", "TRUSTED_TYPES", "FORMAT", "metadata_path", "unjudgeable"]

BUNDLED_MODEL = Path(__file__).with_name("bark_detector.skops")
FORMAT = "barkkit-detector/1"  # the skops file holds one pipeline or {"trace": ..., "bark": ...}

# Types skops does not trust by default that a detector pipeline may hold. Everything else is refused.
TRUSTED_TYPES: tuple[str, ...] = (
    # the trees of the veto stage (HistGradientBoostingClassifier): node arrays, loaded by skops without pickle
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
)


def metadata_path(model_path: str | os.PathLike) -> Path:
    """The JSON sidecar of a model file: same name, ``.json``."""
    return Path(model_path).with_suffix(".json")


class Detector(AudioDetector):
    """Scores audio with the probability that Bark generated it, and with the EnCodec trace that probability rests on.

    >>> detector = Detector.load()            # the bundled model
    >>> detector.detect("clip.mp3")           # {"bark_probability", "encodec_trace", "is_bark", "comb_spacing_hz"}
    >>> detector.score("clip.mp3") >= detector.threshold

    ``encodec_trace`` is the probability that the audio went through EnCodec 24 kHz's decoder, which is what the
    features see: **other EnCodec-decoded audio (VALL-E-family TTS, human speech re-synthesised by EnCodec) carries the
    same trace**. ``bark_probability`` is ``encodec_trace`` times the chance that such audio is Bark rather than
    another EnCodec source, as far as the second stage could tell them apart out of source (its leave-one-source-out
    ROC-AUC shrinks it towards even odds: a second stage no better than chance gives 0.5). A model trained without
    other EnCodec sources has no second stage, and its ``bark_probability`` is the trace itself.

    Args:
        models: ``{"trace": pipeline}`` plus optionally ``"veto"`` (its minimum with the trace's probability is the
            ``encodec_trace``) and ``"bark"`` (the second stage), or one pipeline (the trace).
        threshold: flags ``bark_probability >= threshold``.
        metadata: the sidecar; ``bark_weight`` (0..1) is how far the second stage is trusted.
    """

    name = "bark-detector"
    MIN_SECONDS = 1.0  # shorter clips hold too few spectral frames for a verdict
    SILENCE_RMS = 1e-5  # about -100 dBFS: digital silence or dither, nothing to judge

    def __init__(self, models: Any, features: FeatureSet, threshold: float, metadata: dict[str, Any] | None = None) -> None:
        self.models = dict(models) if isinstance(models, dict) else {"trace": models}
        self.pipeline = self.models["trace"]
        self.features = features
        self.threshold = float(threshold)
        self.metadata = dict(metadata or {})
        self.trace_threshold = float(self.metadata.get("trace_threshold", 0.5))
        self.bark_weight = float(self.metadata.get("bark_weight", 0.0)) if "bark" in self.models else 0.0

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, *, hubert: str | os.PathLike | None = None) -> "Detector":
        """Load a model file (``.skops`` with its ``.json`` sidecar); the bundled model when ``path`` is None.

        Args:
            hubert: for a model on HuBERT features, the HuBERT folder or hub id to use instead of the recorded one.
        """
        import skops.io

        path = Path(path) if path is not None else BUNDLED_MODEL
        sidecar = metadata_path(path)
        if not path.is_file():
            raise WeightsError(f"{path}: no such detector model; train one with 'barkkit detector train'")
        if path.suffix != ".skops":
            raise WeightsError(f"{path}: not a detector model; give the .skops file that 'barkkit detector train' wrote")
        if not sidecar.is_file():
            raise WeightsError(f"{sidecar}: missing; a detector model needs its .json beside the .skops file")
        metadata = read_json(sidecar)
        if metadata.get("format") != FORMAT:
            raise WeightsError(f"{sidecar}: not a barkkit detector model (format {metadata.get('format')!r}, expected {FORMAT!r})")
        params = dict(metadata.get("feature_params") or {})
        if hubert is not None:
            params["model"] = str(hubert)
        features = make_feature_set(metadata["feature_set"], metadata["feature_version"], **params)
        try:
            untrusted = skops.io.get_untrusted_types(file=path)
        except Exception as exc:
            raise WeightsError(f"{path}: not a readable skops file ({type(exc).__name__}: {exc})") from None
        refused = [name for name in untrusted if name not in TRUSTED_TYPES]
        if refused:
            raise WeightsError(f"{path}: refusing to load types that are not trusted: {', '.join(refused)}")
        models = skops.io.load(path, trusted=list(untrusted) or None)
        stages = models if isinstance(models, dict) else {"trace": models}
        if "trace" not in stages or set(stages) - {"trace", "veto", "bark"}:
            raise WeightsError(f"{path}: expected the stages 'trace' (and 'veto', 'bark'), found {', '.join(map(str, stages))}")
        for stage in stages.values():
            if getattr(stage, "n_features_in_", features.dim) != features.dim:
                raise WeightsError(f"{path}: the model expects {stage.n_features_in_} features, '{features.name}' gives {features.dim}")
        return cls(stages, features, metadata["threshold"], metadata)

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path`` (.skops) and its ``.json`` sidecar atomically."""
        import skops.io

        path = Path(path)
        if path.suffix != ".skops":
            raise WeightsError(f"{path}: a detector model file must end in .skops")
        metadata = {
            **self.metadata,
            "format": FORMAT,
            "detector": self.name,
            "feature_set": self.features.name,
            "feature_version": self.features.version,
            "feature_params": self.features.params(),
            "feature_names": self.features.feature_names(),
            "threshold": self.threshold,
        }
        with atomic_output(path) as tmp:
            skops.io.dump(self.models, tmp)
        with atomic_output(metadata_path(path)) as tmp:
            tmp.write_text(json.dumps(metadata, indent=1, sort_keys=False) + "\n", encoding="utf-8")
        self.metadata = metadata
        return path

    def features_of(self, audio: Audio | str | os.PathLike) -> np.ndarray:
        """The feature vector (dim,) of one clip."""
        return self.features.extract(prepare_audio(audio))

    def stage_scores(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(encodec_trace, bark_probability), each (n,), of feature rows (n, dim)."""
        X = np.atleast_2d(features)
        trace = self.models["trace"].predict_proba(X)[:, 1]
        if "veto" in self.models:
            trace = np.minimum(trace, self.models["veto"].predict_proba(X)[:, 1])
        if "bark" not in self.models:  # trained without other EnCodec sources: nothing to tell Bark from
            return trace, trace
        given_trace = 0.5 + self.bark_weight * (self.models["bark"].predict_proba(X)[:, 1] - 0.5)
        return trace, trace * given_trace

    def score_features(self, features: np.ndarray) -> np.ndarray:
        """Bark probabilities (n,) of feature rows (n, dim)."""
        return self.stage_scores(features)[1]

    def score(self, audio: Audio | str | os.PathLike) -> float:
        """Probability in [0, 1] that ``audio`` (an ``Audio`` or a file path) was generated by Bark.

        Raises ``AudioError`` for audio too short or too silent to judge (``detect`` returns a warning instead).
        """
        result = self.detect(audio)
        if result["bark_probability"] is None:
            raise AudioError(result["warning"])
        return float(result["bark_probability"])

    def detect(self, audio: Audio | str | os.PathLike, threshold: float | None = None) -> dict[str, Any]:
        """The verdict on one clip: ``bark_probability``, ``encodec_trace``, ``is_bark``, ``comb_spacing_hz``.

        Audio shorter than ``MIN_SECONDS`` or digitally silent gets ``None`` for all four and a ``warning``
        saying why no verdict is given. Bad files raise ``AudioError``.
        """
        audio = audio if isinstance(audio, Audio) else load_audio(audio)
        reason = unjudgeable(audio, self.MIN_SECONDS, self.SILENCE_RMS)
        if reason is not None:
            return {"bark_probability": None, "encodec_trace": None, "is_bark": None, "comb_spacing_hz": None, "warning": reason}
        return self.verdict(self.features_of(audio), threshold)

    def windows(self, audio: Audio, window: float = 4.0, hop: float = 1.0) -> list[dict[str, Any]]:
        """``AudioDetector.windows`` on the audio brought to ``SAMPLE_RATE`` once (not once per window)."""
        return super().windows(resample(audio, SAMPLE_RATE), window, hop)

    def segments(self, audio: Audio, windows: list[dict[str, Any]], threshold: float, window: float, hop: float) -> list[dict[str, Any]]:
        """The flagged time ranges of ``audio`` (scored as ``windows``), each edge refined with shorter pieces
        (``segments.refine_segments``)."""
        from barkkit_detect.segments import refine_segments

        audio = resample(audio, SAMPLE_RATE)

        def score(piece: np.ndarray) -> float | None:
            return self.detect(Audio(piece, SAMPLE_RATE), threshold)["bark_probability"]

        return refine_segments(np.asarray(audio.samples), SAMPLE_RATE, windows, threshold, window, hop, score)

    def verdict(self, features: np.ndarray, threshold: float | None = None) -> dict[str, Any]:
        """``detect``'s dict from one feature vector (dim,)."""
        trace, bark = (float(v[0]) for v in self.stage_scores(features))
        names = self.features.feature_names()
        spacing = float(features[names.index("comb_spacing_hz")]) if "comb_spacing_hz" in names else None
        cut = self.threshold if threshold is None else float(threshold)
        return {"bark_probability": bark, "encodec_trace": trace, "is_bark": bark >= cut, "comb_spacing_hz": spacing}


def unjudgeable(audio: Audio, min_seconds: float, silence_rms: float) -> str | None:
    """Why no verdict can be given on ``audio`` (too short, digitally silent), or None."""
    samples = np.asarray(audio.samples, dtype=np.float64)
    seconds = samples.shape[0] / audio.sample_rate
    if seconds < min_seconds:
        return f"too short to judge: {seconds:.3g} s of audio, the detector needs at least {min_seconds:g} s; no verdict"
    rms = float(np.sqrt(np.mean(np.square(samples - samples.mean()))))
    if rms < silence_rms:
        level = "digital silence" if rms == 0.0 else f"{20 * np.log10(rms):.0f} dBFS"
        return f"too silent to judge ({level}): nothing to look for a codec trace in; no verdict"
    return None
