"""Errors that reach users. Each message is one line: what was wrong and what to do."""


class BarkkitError(Exception):
    """Base class: the CLI prints these as one line on stderr and exits non-zero."""


class TokenError(BarkkitError, ValueError):
    """An array is not a valid token sequence (shape, dtype or range)."""


class VoiceError(BarkkitError):
    """A voice (history prompt) cannot be found or is malformed."""


class PluginError(BarkkitError):
    """A plugin, stage, decoder or detector is unknown, duplicated or incompatible."""


class PipelineError(BarkkitError):
    """Stages do not chain, or a run was asked for something the pipeline cannot do."""


class WeightsError(BarkkitError):
    """Model weights are missing, unreadable or do not match the model."""


class AudioError(BarkkitError):
    """An audio file cannot be read or written."""


class TextError(PipelineError):
    """Text a stage cannot speak (a sentence too long for its window, no word its tokenizer knows).

    ``text`` is the text the stage was given, so that a caller running many texts can say which one it was.
    """

    def __init__(self, message: str, text: str | None = None) -> None:
        super().__init__(message)
        self.text = text
