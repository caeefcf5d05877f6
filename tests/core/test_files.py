import os
import stat

import pytest

from barkkit.files import atomic_output


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_file_gets_the_umask_mode_and_a_replaced_file_keeps_its_own(tmp_path):
    umask = os.umask(0o027)
    try:
        with atomic_output(tmp_path / "new.wav") as tmp:
            tmp.write_bytes(b"audio")
        assert _mode(tmp_path / "new.wav") == 0o640  # as open() would make it, not mkstemp's owner-only 0600
        existing = tmp_path / "old.wav"
        existing.write_bytes(b"old")
        existing.chmod(0o604)
        with atomic_output(existing) as tmp:
            tmp.write_bytes(b"new")
        assert existing.read_bytes() == b"new" and _mode(existing) == 0o604
    finally:
        os.umask(umask)


def test_a_failed_write_leaves_neither_the_file_nor_its_temporary(tmp_path):
    with pytest.raises(RuntimeError), atomic_output(tmp_path / "out.wav") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
