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

from barkkit.detection import AudioDetector
from barkkit.errors import WeightsError
from barkkit.files import atomic_output
from barkkit.tokens import Audio
from barkkit.weights import read_json

from barkkit_detect.features import FeatureSet, make_feature_set, prepare_audio

__all__ = ["Detector", "BUNDLED_MODEL", "TRUSTED_TYPES", "FORMAT", "metadata_path"]

BUNDLED_MODEL = Path(__file__).with_name("bark_detector.skops")
FORMAT = "barkkit-detector/1"

# Types skops does not trust by default that a detector pipeline may hold. Everything else is refused.
TRUSTED_TYPES: tuple[str, ...] = ()


def metadata_path(model_path: str | os.PathLike) -> Path:
    """The JSON sidecar of a model file: same name, ``.json``."""
    return Path(model_path).with_suffix(".json")


class Detector(AudioDetector):
    """Scores audio with the probability that Bark generated it (see ``features`` for what it looks at).

    >>> detector = Detector.load()            # the bundled model
    >>> detector.score("clip.mp3") >= detector.threshold
    """

    name = "bark-detector"

    def __init__(self, pipeline: Any, features: FeatureSet, threshold: float, metadata: dict[str, Any] | None = None) -> None:
        self.pipeline = pipeline
        self.features = features
        self.threshold = float(threshold)
        self.metadata = dict(metadata or {})

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
        pipeline = skops.io.load(path, trusted=list(untrusted) or None)
        if getattr(pipeline, "n_features_in_", features.dim) != features.dim:
            raise WeightsError(f"{path}: the model expects {pipeline.n_features_in_} features, '{features.name}' gives {features.dim}")
        return cls(pipeline, features, metadata["threshold"], metadata)

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
            skops.io.dump(self.pipeline, tmp)
        with atomic_output(metadata_path(path)) as tmp:
            tmp.write_text(json.dumps(metadata, indent=1, sort_keys=False) + "\n", encoding="utf-8")
        self.metadata = metadata
        return path

    def features_of(self, audio: Audio | str | os.PathLike) -> np.ndarray:
        """The feature vector (dim,) of one clip."""
        return self.features.extract(prepare_audio(audio))

    def score_features(self, features: np.ndarray) -> np.ndarray:
        """Bark probabilities (n,) of feature rows (n, dim)."""
        return self.pipeline.predict_proba(np.atleast_2d(features))[:, 1]

    def score(self, audio: Audio | str | os.PathLike) -> float:
        """Probability in [0, 1] that ``audio`` (an ``Audio`` or a file path) was generated by Bark."""
        return float(self.score_features(self.features_of(audio))[0])
