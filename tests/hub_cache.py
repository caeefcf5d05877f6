"""Build a huggingface_hub cache folder by hand, in the real layout, so download code runs offline.

    <cache>/models--<owner>--<name>/refs/main            -> the commit hash
    <cache>/models--<owner>--<name>/snapshots/<hash>/...  -> the files
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def add_to_hub_cache(cache: Path, repo_id: str, files: Mapping[str, bytes | str | Path]) -> Path:
    """Put ``files`` (repo path -> bytes, text, or a file to copy) into ``cache`` as if downloaded from ``repo_id``.

    Returns the snapshot folder.
    """
    repo_folder = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_folder / "snapshots" / COMMIT
    (repo_folder / "refs").mkdir(parents=True, exist_ok=True)
    (repo_folder / "refs" / "main").write_text(COMMIT)
    for name, content in files.items():
        target = snapshot / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            shutil.copyfile(content, target)
        elif isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    return snapshot
