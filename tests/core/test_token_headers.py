"""Token files are checked from their .npy headers before any array is read: a stated maximum length, and a
compressed bomb refused at the cost of reading its header."""

import io
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

from barkkit import Voice
from barkkit.constants import MAX_TOKEN_FRAMES
from barkkit.errors import VoiceError
from barkkit.voice import load_token_file


def _bomb(path, shape, key="fine_prompt", extra=None):
    """An .npz whose ``key`` declares ``shape`` (int16 zeros, deflated: ~1/1000 of its size on disk)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<i2", "fortran_order": False, "shape": shape})
    chunk = bytes(1 << 20)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
            member.write(header.getvalue())
            left = int(np.prod(shape)) * 2
            while left > 0:
                member.write(chunk[: min(left, len(chunk))])
                left -= len(chunk)
        for name, array in (extra or {}).items():
            buffer = io.BytesIO()
            np.save(buffer, array)
            archive.writestr(f"{name}.npy", buffer.getvalue())
    return path


def _cost(function):
    """(seconds, peak bytes numpy and Python allocated) of calling ``function``, which must raise VoiceError."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(VoiceError) as error:
            function()
        return time.perf_counter() - start, tracemalloc.get_traced_memory()[1], str(error.value)
    finally:
        tracemalloc.stop()


def test_a_compressed_bomb_is_refused_from_its_header_at_no_cost(tmp_path):
    path = _bomb(tmp_path / "bomb.npz", (8, 10_000_000), extra={"semantic_prompt": np.zeros(10, np.int64),
                                                                "coarse_prompt": np.zeros((2, 10), np.int64)})
    assert path.stat().st_size < 1_000_000  # 160 MB of int16, 640 MB as the int64 tokens it would become
    seconds, peak, message = _cost(lambda: Voice.from_npz(path))
    assert "fine_prompt has shape (8, 10000000), more than the 270,000 steps (one hour of audio)" in message
    assert peak < 2_000_000 and seconds < 1.0, (peak, seconds)  # numpy's allocations are traced too


def test_the_stated_maximum_length_holds_exactly(tmp_path):
    assert MAX_TOKEN_FRAMES == 270_000
    at = tmp_path / "at.npz"
    np.savez_compressed(at, semantic_prompt=np.zeros(MAX_TOKEN_FRAMES, np.int16))
    assert len(load_token_file(at)["semantic_prompt"]) == MAX_TOKEN_FRAMES
    over = tmp_path / "over.npz"
    np.savez_compressed(over, coarse_prompt=np.zeros((2, MAX_TOKEN_FRAMES + 1), np.int16))
    with pytest.raises(VoiceError, match=r"over.npz: coarse_prompt has shape \(2, 270001\)"):
        load_token_file(over)
    wide = _bomb(tmp_path / "wide.npz", (MAX_TOKEN_FRAMES, 9))  # the long axis first: refused by its size
    with pytest.raises(VoiceError, match=r"fine_prompt has shape \(270000, 9\)"):
        load_token_file(wide)


def test_arrays_that_are_not_tokens_are_never_read(tmp_path):
    path = _bomb(tmp_path / "with_audio.npz", (20_000_000,), key="audio",
                 extra={"semantic_prompt": np.arange(7)})
    tracemalloc.start()
    try:
        tokens = load_token_file(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert list(tokens) == ["semantic_prompt"] and peak < 2_000_000


def test_a_header_that_lies_or_a_member_that_is_not_npy_is_refused(tmp_path):
    raw = tmp_path / "raw.npz"
    with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("fine_prompt", bytes(10_000_000))  # numpy would hand out these bytes whole
    with pytest.raises(VoiceError, match="raw.npz: member fine_prompt is not an .npy array"):
        load_token_file(raw)
    floats = tmp_path / "floats.npz"
    np.savez(floats, semantic_prompt=np.zeros(5, np.float64))
    with pytest.raises(VoiceError, match="semantic tokens must be integers, got dtype float64"):
        load_token_file(floats)
    short = tmp_path / "short.npz"
    buffer = io.BytesIO()
    np.save(buffer, np.arange(100))
    with zipfile.ZipFile(short, "w") as archive:
        archive.writestr("semantic_prompt.npy", buffer.getvalue()[:-300])
    with pytest.raises(VoiceError, match="short.npz: not a readable .npz token file"):
        load_token_file(short)


def test_an_empty_file_says_it_is_empty(tmp_path):
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(VoiceError, match=r"empty.npz: is empty \(0 bytes\)"):
        load_token_file(tmp_path / "empty.npz")
