"""Is an output file already there, complete? What a resumed job skips and what it makes again."""

from __future__ import annotations

import os
import struct
from pathlib import Path

__all__ = ["is_complete_audio"]


def _wav_sizes_match(path: Path) -> bool:
    """A RIFF header's size field names the whole file: a WAV cut short (copied in part) disagrees with it.

    libsndfile reads such a file without complaint (fewer frames), so the header is the only sign.
    """
    with open(path, "rb") as handle:
        header = handle.read(8)
    if len(header) < 8 or header[:4] != b"RIFF":
        return header[:4] in (b"RF64", b"BW64")  # 64-bit sizes live elsewhere; libsndfile's own read decides
    return struct.unpack("<I", header[4:8])[0] + 8 == os.path.getsize(path)


def is_complete_audio(path: str | os.PathLike) -> bool:
    """True when ``path`` is an audio file that reads whole: every frame its header announces, at least one.

    A missing, empty, truncated or corrupt file is False (a job then makes it again). The whole file is decoded,
    which for a clip of seconds takes milliseconds.
    """
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return False
    try:
        import soundfile

        info = soundfile.info(str(path))
        samples, _ = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception:  # soundfile raises LibsndfileError (RuntimeError), TypeError or ValueError on bad files
        return False
    if info.frames <= 0 or samples.shape[0] != info.frames:
        return False
    return _wav_sizes_match(path) if path.suffix.lower() == ".wav" else True
