"""Long recordings in bounded memory: HuBERT over overlapping windows, the quantizer's LSTM carried across them.

HuBERT's frames are 20 ms apart (320 samples at 16 kHz) and each reads 400 samples: a waveform of n samples has
T = 1 + (n - 400) // 320 frames, frame j reading samples [320 j, 320 j + 400). Its attention (and the group norm of
its first convolution) spans all the input it is given, so memory grows with the input's length squared.

- A recording of up to ``WINDOW_S`` (30 s) goes to HuBERT in one pass: exactly the recipe's features and tokens.
- A longer one goes in windows of at most 30 s: each window keeps ``KEEP_S`` (24 s) of frames and reads
  ``CONTEXT_S`` (3 s) of audio on each side of them (less at the recording's ends). A kept frame's features then
  come from a 30-s context instead of the whole recording; this is the one difference from a whole-file run (the
  recipe has no bound; HuBERT base was pre-trained on crops of at most 15.6 s).
- The quantizer's LSTM runs over every frame in order, its state carried from window to window, so the tokens are
  the ones a single LSTM pass over the windows' features gives (what the tests check).

Memory: one window of audio (30 s at 16 kHz, 1.9 MB) plus HuBERT's activations for it, whatever the recording's
length; the tokens (8 bytes a frame) are what grows.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from barkkit.errors import AudioError
from barkkit_hubert.hubert import SAMPLE_RATE
from barkkit_hubert.quantizer import Quantizer

__all__ = ["WINDOW_S", "KEEP_S", "CONTEXT_S", "HOP", "RECEPTIVE_FIELD", "frame_count", "SpeechMeter", "WindowedTokenizer"]

HOP = 320  # samples between HuBERT frames at 16 kHz (20 ms)
RECEPTIVE_FIELD = 400  # samples one frame reads
WINDOW_S = 30.0
CONTEXT_S = 3.0
KEEP_S = WINDOW_S - 2 * CONTEXT_S
_FRAMES_PER_S = SAMPLE_RATE // HOP  # 50
KEEP_FRAMES = int(KEEP_S * _FRAMES_PER_S)  # 1200
CONTEXT_FRAMES = int(CONTEXT_S * _FRAMES_PER_S)  # 150
WINDOW_SAMPLES = int(WINDOW_S * SAMPLE_RATE)

SPEECH_DBFS = -45.0  # a 20-ms frame louder than this (RMS) counts as sound that may be speech
MIN_SPEECH_S = 1.0


def frame_count(samples: int) -> int:
    """HuBERT frames for a waveform of ``samples`` samples at 16 kHz."""
    return 0 if samples < RECEPTIVE_FIELD else 1 + (samples - RECEPTIVE_FIELD) // HOP


class SpeechMeter:
    """Counts the 20-ms stretches of a 16 kHz stream whose RMS is above ``SPEECH_DBFS``.

    A level meter, not a speech detector: it refuses silence, digital zeros and near-silent noise; a loud hum or
    music passes it (and makes a poor voice).
    """

    def __init__(self) -> None:
        self.loud_frames = 0
        self.samples = 0
        self._rest = np.zeros(0, np.float32)
        self._threshold = float(10 ** (SPEECH_DBFS / 20)) ** 2  # on the mean square

    def feed(self, samples: np.ndarray) -> None:
        self.samples += samples.size
        data = np.concatenate([self._rest, samples]) if self._rest.size else samples
        whole = data.size - data.size % HOP
        frames = data[:whole].reshape(-1, HOP).astype(np.float64)
        self.loud_frames += int(np.count_nonzero((frames**2).mean(axis=1) > self._threshold))
        self._rest = np.array(data[whole:], dtype=np.float32)

    @property
    def speech_s(self) -> float:
        return self.loud_frames * HOP / SAMPLE_RATE

    def check(self) -> None:
        """``AudioError`` when the recording is shorter than 1 s or has under 1 s above the level."""
        seconds = self.samples / SAMPLE_RATE
        if seconds < MIN_SPEECH_S:
            raise AudioError(
                f"the recording is {seconds:.2f} s long; a voice needs at least {MIN_SPEECH_S:.0f} s of speech "
                "(5 to 10 s is best)"
            )
        if self.speech_s < MIN_SPEECH_S:
            what = "silent" if self.loud_frames == 0 else f"only {self.speech_s:.2f} s of it is"
            raise AudioError(
                f"the recording is {what} louder than {SPEECH_DBFS:.0f} dBFS; a voice needs at least "
                f"{MIN_SPEECH_S:.0f} s of speech: record closer to the microphone, or raise the level"
            )


class WindowedTokenizer:
    """Feed a 16 kHz mono waveform in blocks of any size; ``finish`` returns its semantic tokens (T,).

    ``features`` maps a waveform (1, n) to HuBERT features (1, T(n), hidden); ``quantizer`` turns them into tokens.
    """

    def __init__(self, features: Callable[[torch.Tensor], torch.Tensor], quantizer: Quantizer,
                 device: str | torch.device = "cpu", progress: Callable[[int, int], None] | None = None) -> None:
        self.features = features
        self.quantizer = quantizer
        self.device = device
        self.progress = progress
        self.meter = SpeechMeter()
        self._buffer = np.zeros(0, np.float32)
        self._base = 0  # global index of the buffer's first sample
        self._received = 0
        self._next_frame = 0  # first frame not yet tokenised
        self._state = None  # the LSTM's (h, c)
        self._tokens: list[torch.Tensor] = []

    def feed(self, samples: np.ndarray) -> None:
        samples = np.asarray(samples, dtype=np.float32)
        self.meter.feed(samples)
        self._buffer = np.concatenate([self._buffer, samples])
        self._received += samples.size
        if self._received <= WINDOW_SAMPLES:
            return  # may still be a one-pass recording
        while self._sample_end(self._next_frame + KEEP_FRAMES + CONTEXT_FRAMES) <= self._received:
            self._window(self._next_frame, self._next_frame + KEEP_FRAMES, frame_count(self._received), final=False)

    def finish(self) -> torch.Tensor:
        """The tokens of everything fed (int64, (T,)). ``AudioError`` for silence or under 1 s of sound."""
        self.meter.check()
        total = frame_count(self._received)
        if self._next_frame == 0 and self._received <= WINDOW_SAMPLES:
            self._window(0, total, total, final=True)  # one pass over every sample: the recipe exactly
        while self._next_frame < total:
            self._window(self._next_frame, min(self._next_frame + KEEP_FRAMES, total), total, final=True)
        return torch.cat(self._tokens) if self._tokens else torch.zeros(0, dtype=torch.int64)

    @staticmethod
    def _sample_end(frame_end: int) -> int:
        """Samples needed for frames [.., frame_end): up to the last one's receptive field."""
        return (frame_end - 1) * HOP + RECEPTIVE_FIELD

    def _window(self, keep_start: int, keep_end: int, total: int, *, final: bool) -> None:
        """Tokenise frames [keep_start, keep_end), HuBERT seeing up to CONTEXT_FRAMES more on each side.

        A window that reaches the last frame reads every sample to the end: the group norm of HuBERT's first
        convolution averages over all of its input, samples past the last frame's receptive field included.
        """
        first, last = max(0, keep_start - CONTEXT_FRAMES), min(total, keep_end + CONTEXT_FRAMES)
        start = first * HOP - self._base
        end = self._buffer.size if final and last == total else self._sample_end(last) - self._base
        waveform = torch.from_numpy(self._buffer[start:end].copy()).to(self.device)[None]  # (1, n)
        with torch.inference_mode():
            features = self.features(waveform)  # (1, last - first, hidden)
            kept = features[:, keep_start - first : keep_end - first]
            tokens, self._state = self.quantizer.tokens(kept, self._state)
        self._tokens.append(tokens.cpu())
        self._next_frame = keep_end
        drop = max(0, (keep_end - CONTEXT_FRAMES) * HOP - self._base)  # the next window reads from here on
        self._buffer, self._base = self._buffer[drop:], self._base + drop
        if self.progress is not None:
            self.progress(keep_end, max(total, keep_end))
