"""Hostile inputs for the command-line fuzz suite, written once per run in real file formats.

Every file here is an input: the fuzz suite checks that no command changes any of them. Names say what each is.
Tiny random models (2 layers, width 32, Bark's real vocabularies) make the commands that do run finish in well
under a second.
"""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import struct
import wave
import zipfile
from pathlib import Path

import numpy as np

GOOD_MODEL = "models/good"


def _npz(path: Path, **arrays: np.ndarray) -> None:
    np.savez(path, **arrays)


def _bomb(path: Path, shape: tuple[int, ...]) -> None:
    """An .npz whose fine_prompt header declares ``shape`` (int16 zeros): a few hundred KB compressed, hundreds
    of MB once read. Written member by member, so building it costs no more memory than a 1 MB buffer."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<i2", "fortran_order": False, "shape": shape})
    zeros = bytes(1 << 20)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("fine_prompt.npy", "w", force_zip64=True) as member:
            member.write(header.getvalue())
            left = int(np.prod(shape)) * 2
            while left > 0:
                member.write(zeros[: min(left, len(zeros))])
                left -= len(zeros)
        archive.writestr("semantic_prompt.npy", _npy(np.zeros(10, np.int64)))
        archive.writestr("coarse_prompt.npy", _npy(np.zeros((2, 10), np.int64)))


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _wav(path: Path, samples: np.ndarray, rate: int = 24_000) -> None:
    import soundfile

    soundfile.write(path, samples, rate, subtype="FLOAT" if samples.dtype == np.float32 else "PCM_16")


def write_tokens(folder: Path) -> None:
    """Token files and voices: good ones, and each way one can be bad."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    semantic, coarse, fine = rng.integers(0, 10_000, 5), rng.integers(0, 1024, (2, 8)), rng.integers(0, 1024, (8, 8))
    _npz(folder / "semantic.npz", semantic_prompt=semantic)
    _npz(folder / "coarse.npz", semantic_prompt=semantic, coarse_prompt=coarse)
    _npz(folder / "fine.npz", semantic_prompt=semantic, coarse_prompt=coarse, fine_prompt=fine)
    voice = dict(semantic_prompt=rng.integers(0, 10_000, 20), coarse_prompt=rng.integers(0, 1024, (2, 30)),
                 fine_prompt=rng.integers(0, 1024, (8, 30)))
    _npz(folder / "voice.npz", **voice)
    _npz(folder / "zero_frames.npz", semantic_prompt=np.zeros(0, np.int64), coarse_prompt=np.zeros((2, 0), np.int64),
         fine_prompt=np.zeros((8, 0), np.int64))
    _npz(folder / "out_of_range.npz", semantic_prompt=np.array([10_000, 5]), coarse_prompt=np.full((2, 8), 1024),
         fine_prompt=np.full((8, 8), -1))
    _npz(folder / "floats.npz", **{key: value.astype(np.float32) for key, value in voice.items()})
    _npz(folder / "bools.npz", semantic_prompt=np.ones(5, bool), coarse_prompt=np.ones((2, 5), bool),
         fine_prompt=np.ones((8, 5), bool))
    _npz(folder / "transposed.npz", semantic_prompt=voice["semantic_prompt"][None], coarse_prompt=voice["coarse_prompt"].T,
         fine_prompt=voice["fine_prompt"].T)
    _npz(folder / "scalar.npz", semantic_prompt=np.int64(3), coarse_prompt=np.int64(3), fine_prompt=np.int64(3))
    _npz(folder / "mismatched.npz", semantic_prompt=voice["semantic_prompt"], coarse_prompt=voice["coarse_prompt"],
         fine_prompt=voice["fine_prompt"][:, :10])
    _npz(folder / "other_keys.npz", tokens=semantic, audio=np.zeros(100, np.float32))
    with zipfile.ZipFile(folder / "objects.npz", "w") as archive:  # what np.savez of an object array writes
        buffer = io.BytesIO()
        np.save(buffer, np.array([[1], [1, 2]], dtype=object), allow_pickle=True)
        archive.writestr("semantic_prompt.npy", buffer.getvalue())
    with zipfile.ZipFile(folder / "raw_member.npz", "w") as archive:
        archive.writestr("fine_prompt", b"\0" * 1000)
    with zipfile.ZipFile(folder / "bad_header.npz", "w") as archive:
        archive.writestr("semantic_prompt.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': <<<<}\n")
    with zipfile.ZipFile(folder / "short_data.npz", "w") as archive:
        archive.writestr("semantic_prompt.npy", _npy(np.arange(100))[:-300])
    _bomb(folder / "bomb.npz", (8, 10_000_000))
    _bomb(folder / "bomb_wide.npz", (1_000_000, 8))
    good = (folder / "voice.npz").read_bytes()
    (folder / "truncated.npz").write_bytes(good[: len(good) // 2])
    (folder / "empty.npz").write_bytes(b"")
    (folder / "random.npz").write_bytes(rng.bytes(3000))
    (folder / "text.npz").write_text("semantic_prompt = [1, 2, 3]\n")
    with open(folder / "plain.npy", "wb") as file:
        np.save(file, semantic)
    (folder / "npy_named.npz").write_bytes((folder / "plain.npy").read_bytes())


def write_audio(folder: Path) -> None:
    """Audio files for `voices make` and `detect`: fine, tiny, empty, silent, NaN, odd rates, not audio."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    t = np.arange(12_000) / 24_000
    _wav(folder / "tone.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))
    _wav(folder / "one_sample.wav", np.array([0.1], np.float32))
    _wav(folder / "silence.wav", np.zeros(24_000, np.float32))
    _wav(folder / "nan.wav", np.array([0.1, np.nan, 0.2] * 100, np.float32))
    _wav(folder / "loud.wav", (50 * rng.standard_normal(6000)).astype(np.float32))
    _wav(folder / "stereo_8k.wav", rng.standard_normal((4000, 2)).astype(np.float32) * 0.1, rate=8000)
    _wav(folder / "rate_1hz.wav", np.zeros(3, np.float32), rate=1)
    with wave.open(str(folder / "empty.wav"), "wb") as file:
        file.setnchannels(1), file.setsampwidth(2), file.setframerate(24_000)
    tone = (folder / "tone.wav").read_bytes()
    (folder / "truncated.wav").write_bytes(tone[:60])
    (folder / "random.wav").write_bytes(rng.bytes(5000))
    (folder / "random.mp3").write_bytes(rng.bytes(5000))
    lying = bytearray(tone)  # a RIFF header that claims 4 GB of samples
    lying[40:44] = struct.pack("<I", 0xFFFF_FFF0)
    (folder / "huge_header.wav").write_bytes(bytes(lying))
    (folder / "text.wav").write_text("not audio at all\n")


def write_texts(folder: Path) -> None:
    """Batch files and specs."""
    folder.mkdir(parents=True)
    (folder / "lines.txt").write_text("First line.\n\n  Second line.  \n")
    (folder / "binary.txt").write_bytes(bytes(range(256)) * 4)
    (folder / "latin1.txt").write_bytes("Gr\xfc\xdfe, caf\xe9.\n".encode("latin-1"))
    (folder / "long_line.txt").write_text("Fine.\n" + "word " * 2000 + "\n")
    (folder / "huge_line.txt").write_text("a" * 200_000 + "\n")
    (folder / "blank.txt").write_text("\n \n\t\n")
    (folder / "empty.txt").write_bytes(b"")
    (folder / "emoji.txt").write_text("Hello.\n\U0001F600\U0001F600\n")
    (folder / "crlf.txt").write_bytes(b"One.\r\nTwo.\r\n")
    specs = {
        "good.toml": '[pipeline]\nmodel = "{model}"\n',
        "broken.toml": "[pipeline\nmodel = 3",
        "scalar.toml": "pipeline = 3\n",
        "unknown_key.toml": "[pipeline]\nmodle = 'x'\n",
        "unknown_stage.toml": "[pipeline]\nfine = 'nobody.fine'\n",
        "bad_step.toml": "[pipeline]\nfine = 3\n",
        "stages.toml": "[pipeline]\nstages = ['bark.semantic']\n",
        "binary.toml": "",
    }
    for name, text in specs.items():
        (folder / name).write_text(text.format(model=folder.parent / GOOD_MODEL))
    (folder / "binary.toml").write_bytes(b"\xff\xfe\x00\x01")


def write_models(folder: Path) -> None:
    """Model folders: a good one, and each way one can be bad (broken files, wrong files, wrong config)."""
    import torch

    from barkkit_bark.checkpoints import save_suno_checkpoint
    from barkkit_encodec.checkpoints import write_encodec_checkpoint
    from tests.plugins.barkkit_bark.conftest import tiny_models

    good = folder / "good"
    good.mkdir(parents=True)
    for name, model in zip(("text.pt", "coarse.pt", "fine.pt"), tiny_models()):
        save_suno_checkpoint(good / name, model)
    # a small WordPiece vocabulary: Bark's 119,547 entries take a second to load, for every command that runs
    letters = [chr(c) for c in range(33, 127)] + ["é", "ü", "中"]
    words = ["Hi", "Hello", "there", "word", "end", "And", "second", "sentence", "First", "line", "Second"]
    (good / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *letters,
                                               *("##" + c for c in letters)]) + "\n")
    codec = write_encodec_checkpoint(good)
    names = ["text.pt", "coarse.pt", "fine.pt", "vocab.txt", codec.name]

    def variant(name: str, **replaced: object) -> Path:
        target = folder / name
        target.mkdir()
        for file in names:
            if file in replaced:
                value = replaced[file]
                if isinstance(value, Path):
                    (target / file).symlink_to(value)
                elif value is not None:
                    (target / file).write_bytes(value)  # type: ignore[arg-type]
            else:
                (target / file).symlink_to(good / file)
        return target

    variant("swapped", **{"text.pt": good / "coarse.pt", "coarse.pt": good / "text.pt"})
    variant("fine_as_coarse", **{"coarse.pt": good / "fine.pt"})
    variant("truncated", **{"text.pt": (good / "text.pt").read_bytes()[:5000]})
    variant("random_codec", **{codec.name: os.urandom(4000)})
    variant("no_codec", **{codec.name: None})
    variant("empty_vocab", **{"vocab.txt": b""})
    variant("vocab_without_unk", **{"vocab.txt": b"a\nb\nc\n"})
    variant("binary_vocab", **{"vocab.txt": b"\xff\xfe[UNK]\n"})
    buffer = io.BytesIO()
    from fractions import Fraction

    torch.save({"model_args": {}, "model": Fraction(1, 3)}, buffer)  # a pickled object weights_only refuses
    variant("pickled", **{"text.pt": buffer.getvalue()})
    checkpoint = torch.load(good / "text.pt", weights_only=False)
    for label, args in {"million_layers": {"n_layer": 1_000_000}, "odd_heads": {"n_head": 3},
                        "small_block": {"block_size": 16}, "text_size_words": {"n_embd": "wide"}}.items():
        changed = dict(checkpoint, model_args={**checkpoint["model_args"], **args})
        buffer = io.BytesIO()
        torch.save(changed, buffer)
        variant(label, **{"text.pt": buffer.getvalue()})
    configs = {"broken_config": {"semantic_config": {"num_heads": 3, "hidden_size": 32, "num_layers": 2,
                                                     "input_vocab_size": 129_600, "output_vocab_size": 10_048}},
               "config_list": [1, 2], "config_missing_sizes": {"semantic_config": {"num_heads": 2}}}
    for label, config in configs.items():
        target = folder / label
        target.mkdir()
        (target / "config.json").write_text(json.dumps(config))
        (target / "model.safetensors").write_bytes(b"")
        (target / "vocab.txt").symlink_to(good / "vocab.txt")
    bad_json = folder / "bad_json"
    bad_json.mkdir()
    (bad_json / "config.json").write_text("{not json")
    (bad_json / "model.safetensors").write_bytes(b"")
    (folder / "empty_folder").mkdir()


def write_nodes(folder: Path) -> dict[str, bool]:
    """Paths that exist but are not regular files: a folder, a FIFO, a socket, and (as root) a character device.
    Returns which kinds this machine could make."""
    folder.mkdir(parents=True)
    (folder / "folder").mkdir()
    (folder / "folder.npz").mkdir()
    os.mkfifo(folder / "fifo")
    made = {"device": False}
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(folder / "socket"))
    except OSError:  # a temporary folder too deep for a socket's path (108 bytes): a plain file stands in
        (folder / "socket").write_bytes(b"")
    server.close()
    try:  # a node like /dev/null: reading it gives nothing, writing it swallows everything
        os.mknod(folder / "device", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        made["device"] = True
    except (PermissionError, OSError):
        pass
    (folder / "dangling").symlink_to(folder / "gone")
    (folder / "loop").symlink_to(folder / "loop")
    return made


def build(root: Path) -> dict[str, bool]:
    """Write every fixture under ``root``; returns what of the machine-dependent ones could be made."""
    write_models(root / "models")
    write_tokens(root / "tokens")
    write_audio(root / "audio")
    write_texts(root / "texts")
    return write_nodes(root / "nodes")
