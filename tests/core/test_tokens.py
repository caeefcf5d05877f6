import numpy as np
import pytest

from barkkit import Audio, CoarseTokens, FineTokens, SemanticTokens
from barkkit.errors import TokenError


def test_semantic_tokens_behave_like_an_int64_array():
    tokens = SemanticTokens(np.array([1, 2, 9_999], dtype=np.uint16))
    array = np.asarray(tokens)
    assert array.dtype == np.int64 and array.tolist() == [1, 2, 9_999]
    assert len(tokens) == 3 and tokens.shape == (3,)
    assert tokens == SemanticTokens([1, 2, 9_999])
    with pytest.raises(ValueError):
        array[0] = 5  # read-only: a validated value cannot be changed behind the type's back


@pytest.mark.parametrize(
    ("kind", "data", "message"),
    [
        (SemanticTokens, [[1, 2]], r"shape \(T,\)"),
        (SemanticTokens, [10_000], "out of range"),
        (SemanticTokens, [-1], "out of range"),
        (SemanticTokens, [1.0, 2.0], "must be integers"),
        (SemanticTokens, [True, False], "must be integers"),
        (CoarseTokens, np.zeros((3, 4), dtype=int), r"shape \(2, T\)"),
        (CoarseTokens, np.full((2, 4), 1024), "out of range"),
        (FineTokens, np.zeros((2, 4), dtype=int), r"shape \(8, T\)"),
        (FineTokens, np.zeros(8, dtype=int), r"shape \(8, T\)"),
    ],
)
def test_token_types_reject_bad_arrays(kind, data, message):
    with pytest.raises(TokenError, match=message):
        kind(data)


def test_token_error_names_its_source():
    with pytest.raises(TokenError, match="voice.npz: coarse tokens"):
        CoarseTokens(np.zeros((3, 2), dtype=int), source="voice.npz")


def test_audio_is_mono_float32_with_a_rate():
    audio = Audio(np.zeros(480, dtype=np.float64), 24_000)
    assert audio.samples.dtype == np.float32 and audio.duration_s == pytest.approx(0.02)
    assert np.asarray(audio).shape == (480,)
    with pytest.raises(TokenError, match="mono"):
        Audio(np.zeros((2, 10), dtype=np.float32), 24_000)
    with pytest.raises(TokenError, match="floating point"):
        Audio(np.zeros(10, dtype=np.int16), 24_000)
    with pytest.raises(TokenError, match="NaN"):
        Audio(np.array([0.0, np.nan]), 24_000)
    with pytest.raises(TokenError, match="sample rate"):
        Audio(np.zeros(10, dtype=np.float32), 0)
