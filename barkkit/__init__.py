"""barkkit: a plugin-based toolkit for Suno's Bark text-to-audio model.

    >>> import barkkit
    >>> pipeline = barkkit.load_pipeline("bark-small")
    >>> generation = pipeline.generate("Hello there.", voice="v2/en_speaker_6", seed=0)
    >>> generation.audio, generation.sample_rate
"""

from barkkit.constants import SAMPLE_RATE
from barkkit.detection import AudioDetector
from barkkit.errors import BarkkitError
from barkkit.hookspecs import hookimpl
from barkkit.pipeline import Generation, Pipeline, load_pipeline
from barkkit.plugins import Plugins, load_plugins
from barkkit.stage import Decoder, Stage
from barkkit.tokens import Audio, CoarseTokens, FineTokens, SemanticTokens, Text
from barkkit.voice import Voice, VoiceSource

__version__ = "0.1.0"

__all__ = [
    "SAMPLE_RATE",
    "Audio",
    "AudioDetector",
    "BarkkitError",
    "CoarseTokens",
    "Decoder",
    "FineTokens",
    "Generation",
    "Pipeline",
    "Plugins",
    "SemanticTokens",
    "Stage",
    "Text",
    "Voice",
    "VoiceSource",
    "hookimpl",
    "load_pipeline",
    "load_plugins",
]
