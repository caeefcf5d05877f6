"""barkkit_detect: how likely it is that Bark generated a piece of audio.

    >>> from barkkit_detect import Detector
    >>> detector = Detector.load()               # the bundled model (or Detector.load("model.skops"))
    >>> detector.score("clip.mp3")               # probability in [0, 1]
    >>> detector.score("clip.mp3") >= detector.threshold

See ``features`` for what it looks at, ``training`` for how the bundled model was made
(``barkkit detector train``), and model-card.md for its data, metrics and limits.
"""

from barkkit_detect.features import SAMPLE_RATE, CombFeatures, FeatureSet, HubertFeatures
from barkkit_detect.model import BUNDLED_MODEL, Detector

__all__ = ["Detector", "BUNDLED_MODEL", "FeatureSet", "CombFeatures", "HubertFeatures", "SAMPLE_RATE"]
