"""Reading and writing only regular files (barkkit.files): nodes refused by kind, links written through,
outputs kept apart from each other and from inputs, temporary files a killed process left cleaned up."""

import os
import re
import socket
import stat
import subprocess
import sys

import numpy as np
import pytest

from barkkit.errors import AudioError, BarkkitError, VoiceError
from barkkit.files import (
    TEMP_MARK,
    atomic_output,
    check_distinct,
    check_input_file,
    check_writable,
    remove_stale_temporaries,
)
from barkkit.voice import load_token_file, save_token_file


def _nodes(tmp_path):
    """A folder, a FIFO and a socket; and, as root, a character device like /dev/null."""
    (tmp_path / "folder").mkdir()
    os.mkfifo(tmp_path / "fifo")
    kinds = {"folder": "a folder", "fifo": "a FIFO (named pipe)"}
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(tmp_path / "socket"))
        kinds["socket"] = "a socket"
    except OSError:  # a temporary folder too deep for a socket's path (108 bytes)
        pass
    server.close()
    try:
        os.mknod(tmp_path / "device", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        kinds["device"] = "a character device"
    except PermissionError:
        pass
    return kinds


def test_an_output_that_is_a_device_fifo_socket_or_folder_is_refused_and_left_as_it_was(tmp_path):
    kinds = _nodes(tmp_path)
    for name, kind in kinds.items():
        path = tmp_path / name
        before = os.lstat(path)
        with pytest.raises(BarkkitError, match=re.escape(f"{name}: is {kind}; barkkit writes only regular files")):
            save_token_file(path, {"semantic_prompt": np.arange(5)})
        after = os.lstat(path)
        assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)  # not replaced by a regular file
    assert sorted(os.listdir(tmp_path)) == sorted(kinds)  # and no temporary file stayed


def test_a_link_output_is_written_through_to_its_target_and_stays_a_link(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "voice.npz"
    target.write_bytes(b"old")
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    save_token_file(link, {"semantic_prompt": np.arange(5)})
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert list(load_token_file(target)) == ["semantic_prompt"]
    dangling = tmp_path / "new.npz"
    dangling.symlink_to(tmp_path / "real" / "made.npz")  # a link to a file yet to be made: writing makes it
    save_token_file(dangling, {"semantic_prompt": np.arange(3)})
    assert dangling.is_symlink() and (tmp_path / "real" / "made.npz").is_file()
    loop = tmp_path / "loop.npz"
    loop.symlink_to(loop)
    with pytest.raises(BarkkitError, match="loop.npz: cannot be written .*loop of symbolic links"):
        check_writable(loop)
    assert check_writable(link) == target


def test_a_link_to_a_device_is_refused(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "out.wav").symlink_to(tmp_path / "fifo")
    with pytest.raises(BarkkitError, match=r"out.wav \(a link to .*fifo\): is a FIFO"):
        check_writable(tmp_path / "out.wav")


def test_inputs_that_exist_but_are_not_regular_files_say_what_they_are(tmp_path):
    for name, kind in _nodes(tmp_path).items():
        with pytest.raises(VoiceError, match=re.escape(f"{name}: is {kind}, not a token file")):
            load_token_file(tmp_path / name)
    with pytest.raises(VoiceError, match="zero: is a character device, not a token file"):
        (tmp_path / "zero").symlink_to("/dev/zero")
        load_token_file(tmp_path / "zero")
    from barkkit.audio import load_audio

    with pytest.raises(AudioError, match="fifo: is a FIFO \\(named pipe\\), not an audio file"):
        load_audio(tmp_path / "fifo")
    with pytest.raises(BarkkitError, match="nothing: no such file"):
        check_input_file(tmp_path / "nothing")


def test_two_outputs_naming_one_file_or_an_output_that_is_an_input_are_refused(tmp_path):
    (tmp_path / "voice.npz").write_bytes(b"x")
    (tmp_path / "alias.npz").symlink_to(tmp_path / "voice.npz")
    with pytest.raises(BarkkitError, match="-o and --save-tokens name the same file"):
        check_distinct({"-o": tmp_path / "a.wav", "--save-tokens": tmp_path / "." / "a.wav"})
    with pytest.raises(BarkkitError, match="is the --voice file this command reads"):
        check_distinct({"-o": tmp_path / "alias.npz"}, {"--voice file": tmp_path / "voice.npz"})
    os.link(tmp_path / "voice.npz", tmp_path / "hard.npz")
    with pytest.raises(BarkkitError, match="is the --voice file"):
        check_distinct({"-o": tmp_path / "hard.npz"}, {"--voice file": tmp_path / "voice.npz"})
    check_distinct({"-o": tmp_path / "a.wav", "--save-tokens": tmp_path / "a.npz"}, {"--voice file": tmp_path / "voice.npz"})


def test_a_temporary_file_a_killed_process_left_is_removed_by_the_next_write(tmp_path):
    """A real SIGKILL in the middle of a write; the next write of the same file removes what it left."""
    out = tmp_path / "out.npz"
    script = ("import sys, time, numpy as np\n"
              "from barkkit.files import atomic_output\n"
              f"with atomic_output({str(out)!r}, suffix='.npz') as tmp:\n"
              "    tmp.write_bytes(b'half')\n"
              "    print('writing', flush=True)\n"
              "    time.sleep(60)\n")
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "writing\n"
    process.kill()
    process.wait(timeout=30)
    left = [p for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].name.startswith(f".out.npz{TEMP_MARK}{process.pid}-")
    live = tmp_path / f".out.npz{TEMP_MARK}{os.getpid()}-x.npz"  # a write still going on (this process): kept
    live.write_bytes(b"")
    other = tmp_path / f".other.npz{TEMP_MARK}{process.pid}-x.npz"  # another file's: not this write's business
    other.write_bytes(b"")
    save_token_file(out, {"semantic_prompt": np.arange(4)})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, live.name, other.name])
    assert remove_stale_temporaries(tmp_path / "other.npz") == [other]


def test_atomic_output_names_its_temporary_file_for_the_cleanup(tmp_path):
    with atomic_output(tmp_path / "clip.wav") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(f".clip.wav{TEMP_MARK}{os.getpid()}-")
        assert tmp.suffix == ".wav"
        tmp.write_bytes(b"RIFF")
    assert (tmp_path / "clip.wav").read_bytes() == b"RIFF"
