"""Voices: Bark's "history prompts", the three token arrays a generation continues from.

A voice comes from a preset name (resolved by the registered voice sources), an ``.npz`` file, a dict, or a
finished generation; ``Voice.save`` writes the same three keys Bark uses, so every barkkit output is a voice.
"""

from __future__ import annotations

import json
import math
import os
import threading
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from barkkit.constants import MAX_TOKEN_FRAMES, N_FINE_CODEBOOKS
from barkkit.errors import TokenError, VoiceError
from barkkit.files import check_input_file
from barkkit.tokens import CoarseTokens, FineTokens, SemanticTokens, Tokens

if TYPE_CHECKING:
    from barkkit.pipeline import Generation
    from barkkit.plugins import Plugins

__all__ = [
    "Voice",
    "VoiceSource",
    "FolderVoiceSource",
    "VoiceLike",
    "SupportsToVoice",
    "TOKEN_KEYS",
    "SOURCE_NOTE_KEY",
    "load_token_file",
    "load_token_array",
    "save_token_file",
    "read_source_note",
]

TOKEN_KEYS: dict[str, type[Tokens]] = {
    "semantic_prompt": SemanticTokens,
    "coarse_prompt": CoarseTokens,
    "fine_prompt": FineTokens,
}
"""The keys of Bark's voice files, and the token type each holds."""

SOURCE_NOTE_KEY = "source_note"
"""An optional extra array of a voice file: a JSON object (one string) saying where each part came from, e.g.
``{"semantic": "hubert.semantic (...) over all 12.0 s of me.wav", "coarse": ..., "fine": ...}``. Bark and older
barkkit ignore it; voices without it load as before."""

# numpy parses every .npy header with ast.literal_eval, and CPython 3.11's AST constructor is not safe across threads
# (concurrent parses raise "SystemError: AST constructor recursion depth mismatch", python/cpython#106905): a server
# loading voices on several threads reads them one at a time (a few KB each).
_NPY_READS = threading.Lock()


def load_token_file(path: str | os.PathLike, *, require: Iterable[str] = ()) -> dict[str, Tokens]:
    """Read the token arrays of an ``.npz`` file (any of ``TOKEN_KEYS``), validated.

    Each array's shape and dtype are read from its ``.npy`` header inside the archive before the array is: an array
    longer than ``MAX_TOKEN_FRAMES`` steps is refused without being decompressed. Other members are never read.
    Raises ``VoiceError`` naming the file when it is missing or not a regular file, empty, not an npz, lacks a
    required key or holds bad tokens.
    """
    path = check_input_file(path, "token file", VoiceError)
    if path.stat().st_size == 0:
        raise VoiceError(f"{path}: is empty (0 bytes), not an .npz token file; write it again (barkkit semantic, "
                         "coarse, fine or voices make)")
    # np.load reads .npy files and (not here) pickles too: anything but a zip archive is refused up front, so that
    # numpy's advice to unpickle the file never reaches a user
    if not zipfile.is_zipfile(path):
        raise VoiceError(f"{path}: not an .npz token file (not a zip archive); save tokens with numpy.savez")
    try:
        with _NPY_READS, zipfile.ZipFile(path) as archive:
            held = _check_headers(path, archive)
            with np.load(path, allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files if key in TOKEN_KEYS}
    except VoiceError:
        raise
    except ValueError as exc:
        raise VoiceError(f"{path}: not a readable .npz token file ({exc})") from None
    except (OSError, zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError) as exc:
        raise VoiceError(f"{path}: not a readable .npz token file ({exc})") from None
    missing = [key for key in require if key not in arrays]
    if missing:
        raise VoiceError(f"{path}: missing key(s) {', '.join(missing)} (it holds {', '.join(held) or 'no arrays'})")
    tokens: dict[str, Tokens] = {}
    for key, array in arrays.items():
        try:
            tokens[key] = TOKEN_KEYS[key](array, source=f"{path}: {key}")
        except TokenError as exc:
            raise VoiceError(str(exc)) from None
    if not tokens:
        raise VoiceError(f"{path}: holds none of the token keys {', '.join(TOKEN_KEYS)}")
    return tokens


def _check_headers(path: Path, archive: zipfile.ZipFile) -> list[str]:
    """Check the shape and dtype of every token array from its ``.npy`` header; return the names of all arrays.

    Reading a header decompresses a few hundred bytes, whatever the array's size.
    """
    names = []
    for info in archive.infolist():
        key = info.filename.removesuffix(".npy")
        names.append(key)
        if key not in TOKEN_KEYS:
            continue
        if info.filename == key:  # numpy would hand out the raw bytes of a member not named .npy
            raise VoiceError(f"{path}: member {key} is not an .npy array; save tokens with numpy.savez")
        try:
            with archive.open(info) as member:
                _check_header(path, key, member)
        except (OSError, EOFError, zipfile.BadZipFile, NotImplementedError) as exc:
            raise VoiceError(f"{path}: {key} is not a readable .npy array ({exc})") from None
    return sorted(set(names))


def _check_header(path: Path, key: str, stream: Any) -> None:
    """Read an ``.npy`` header from ``stream`` and refuse what no token array can be: an object or non-integer
    dtype, more than ``MAX_TOKEN_FRAMES`` steps. ``VoiceError`` naming ``path`` and ``key``."""
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f".npy format version {version[0]}.{version[1]}")
    except ValueError as exc:
        raise VoiceError(f"{path}: {key} is not a readable .npy array ({exc})") from None
    if dtype.hasobject:
        raise VoiceError(f"{path}: holds object arrays, which would have to be unpickled; token files hold "
                         "plain integer arrays")
    if dtype.kind not in "iu":
        raise VoiceError(f"{path}: {key}: {key.removesuffix('_prompt')} tokens must be integers, got dtype "
                         f"{dtype}; convert with .astype(np.int64)")
    steps = shape[-1] if shape else 1
    if steps > MAX_TOKEN_FRAMES or math.prod(shape) > N_FINE_CODEBOOKS * MAX_TOKEN_FRAMES:
        raise VoiceError(f"{path}: {key} has shape {shape}, more than the {MAX_TOKEN_FRAMES:,} steps (one hour "
                         "of audio) barkkit reads from a token file; cut it to the part you need")


def load_token_array(path: str | os.PathLike, key: str) -> np.ndarray:
    """One token array from an ``.npy`` file (a hub preset's part), checked from its header before it is read.

    ``key`` is the voice key it is read for (for messages and its checks); ``VoiceError`` when the file is not a
    plain integer array of at most ``MAX_TOKEN_FRAMES`` steps.
    """
    path = check_input_file(path, "token array file", VoiceError)
    try:
        with _NPY_READS:
            with open(path, "rb") as stream:
                _check_header(path, key, stream)
            return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise VoiceError(f"{path}: not a readable .npy array for {key} ({exc})") from None


def save_token_file(path: str | os.PathLike, tokens: Mapping[str, Tokens | np.ndarray | None], *,
                    note: Mapping[str, str] | None = None) -> Path:
    """Write token arrays under their voice keys to ``path`` (.npz), atomically. Returns the path written.

    ``note`` (part -> where it came from) is stored as the file's ``source_note`` (see ``SOURCE_NOTE_KEY``)."""
    from barkkit.files import atomic_output

    arrays = {key: np.asarray(value) for key, value in tokens.items() if value is not None}
    if note:
        arrays[SOURCE_NOTE_KEY] = np.array(json.dumps(dict(note), ensure_ascii=False))  # a 0-d unicode array: no pickle
    with atomic_output(path, suffix=".npz") as tmp:
        np.savez(tmp, allow_pickle=False, **arrays)  # read with allow_pickle=False: write nothing that would need it
    return Path(path)


MAX_NOTE_CHARACTERS = 16_384
"""The longest ``source_note`` read; a longer one is ignored, unread (checked from its ``.npy`` header)."""


def read_source_note(path: str | os.PathLike) -> dict[str, str]:
    """The ``source_note`` of a token file (part -> where it came from); empty when it has none or it is unreadable
    (a note is information only: a voice never fails to load because of it)."""
    try:
        path = check_input_file(path, "token file", VoiceError)
        with _NPY_READS:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                if f"{SOURCE_NOTE_KEY}.npy" not in names:
                    return {}
                with archive.open(f"{SOURCE_NOTE_KEY}.npy") as member:  # a 0-d unicode array, and a short one
                    version = np.lib.format.read_magic(member)
                    if version != (1, 0):
                        return {}
                    shape, _, dtype = np.lib.format.read_array_header_1_0(member)
            if shape != () or dtype.kind != "U" or dtype.itemsize > 4 * MAX_NOTE_CHARACTERS:
                return {}
            with np.load(path, allow_pickle=False) as npz:
                raw = npz[SOURCE_NOTE_KEY]
        note = json.loads(str(raw[()]))
    except (VoiceError, OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError):
        return {}
    if not isinstance(note, dict):
        return {}
    return {str(key): str(value) for key, value in note.items()}


@dataclass(frozen=True)
class Voice:
    """A history prompt: ``semantic`` (S,), ``coarse`` (2, C) and ``fine`` (8, C) tokens."""

    semantic: SemanticTokens
    coarse: CoarseTokens
    fine: FineTokens
    source: str | None = None  # where it came from, for messages
    note: Mapping[str, str] | None = field(default=None, compare=False)  # part -> its origin (SOURCE_NOTE_KEY)

    def __post_init__(self) -> None:
        where = f"{self.source}: " if self.source else ""
        for attribute, kind in (("semantic", SemanticTokens), ("coarse", CoarseTokens), ("fine", FineTokens)):
            value = getattr(self, attribute)
            if not isinstance(value, kind):
                try:
                    object.__setattr__(self, attribute, kind(value, source=f"{self.source or 'voice'}: {attribute}"))
                except TokenError as exc:
                    raise VoiceError(str(exc)) from None
        if len(self.coarse) != len(self.fine):
            raise VoiceError(
                f"{where}coarse_prompt has {len(self.coarse)} frames but fine_prompt has {len(self.fine)}; "
                "they must cover the same audio"
            )

    # constructors --------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> "Voice":
        """From a mapping with Bark's keys (``semantic_prompt``, ``coarse_prompt``, ``fine_prompt``)."""
        missing = [key for key in TOKEN_KEYS if key not in data]
        if missing:
            where = f"{source}: " if source else ""
            raise VoiceError(f"{where}voice is missing {', '.join(missing)}; a voice needs {', '.join(TOKEN_KEYS)}")
        return cls(data["semantic_prompt"], data["coarse_prompt"], data["fine_prompt"], source=source)

    @classmethod
    def from_npz(cls, path: str | os.PathLike) -> "Voice":
        tokens = load_token_file(path, require=TOKEN_KEYS)
        voice = cls.from_dict(tokens, source=str(path))
        note = read_source_note(path)
        return cls(voice.semantic, voice.coarse, voice.fine, source=voice.source, note=note) if note else voice

    @classmethod
    def from_generation(cls, generation: "Generation") -> "Voice":
        semantic, coarse, fine = generation.semantic, generation.coarse, generation.fine
        if semantic is None or coarse is None or fine is None:
            missing = "semantic" if semantic is None else "coarse" if coarse is None else "fine"
            raise VoiceError(f"a voice needs semantic, coarse and fine tokens; this generation has no {missing}")
        return cls(semantic, coarse, fine, source="generation")

    @classmethod
    def load(cls, spec: "VoiceLike", *, plugins: "Plugins | None" = None) -> "Voice":
        """Resolve any voice-like value: a Voice, a Generation (anything with ``to_voice()``), a dict, an ``.npz``
        path or a preset name."""
        if isinstance(spec, Voice):
            return spec
        if isinstance(spec, SupportsToVoice) and callable(spec.to_voice):  # a Generation, without importing pipeline
            return spec.to_voice()
        if isinstance(spec, Mapping):
            return cls.from_dict(spec)
        # any path that exists (a FIFO, a broken link...) is read as a file, so that its error says what it is
        is_path = isinstance(spec, str) and (spec.endswith(".npz") or (os.path.lexists(spec) and not os.path.isdir(spec)))
        if isinstance(spec, os.PathLike) or is_path:
            return cls.from_npz(spec)
        if isinstance(spec, str):
            if not spec.strip():
                raise VoiceError("the voice name is empty; give a preset name (see `barkkit voices list`) or an .npz file")
            try:
                return find_preset(spec, plugins=plugins)
            except VoiceError:
                if os.path.isdir(spec):  # not a preset either: say what the path is
                    raise VoiceError(f"{spec}: is a folder, not a voice; give an .npz file or a preset name") from None
                raise
        raise VoiceError(f"cannot make a voice from {type(spec).__name__}; give a preset name, an .npz path or a dict")

    # output --------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, np.ndarray]:
        return {"semantic_prompt": self.semantic.array, "coarse_prompt": self.coarse.array, "fine_prompt": self.fine.array}

    def save(self, path: str | os.PathLike) -> Path:
        """Write Bark's three keys to ``path`` (.npz), atomically, with the voice's ``note`` when it has one."""
        return save_token_file(path, self.to_dict(), note=self.note)

    @property
    def duration_s(self) -> float:
        return self.semantic.duration_s


@runtime_checkable
class SupportsToVoice(Protocol):
    """Anything that gives a voice through ``to_voice()``, as a ``barkkit.pipeline.Generation`` does (a protocol,
    so that this module need not import the pipeline)."""

    def to_voice(self) -> Voice: ...


VoiceLike = Voice | SupportsToVoice | Mapping[str, Any] | str | os.PathLike
"""Anything ``Voice.load`` accepts: a ``Voice``, a ``Generation`` (or anything with ``to_voice()``), a dict with
Bark's keys, an ``.npz`` path or a preset name."""


class VoiceSource(ABC):
    """Resolves preset names to voices. Plugins register instances through ``register_voices``."""

    name: str

    @abstractmethod
    def names(self) -> list[str]:
        """The preset names this source can offer now; ``VoiceError`` saying why when it cannot list them (offline
        and not cached, say)."""

    @abstractmethod
    def find(self, name: str) -> Voice | None:
        """The voice called ``name``, or None when this source does not have it."""


class FolderVoiceSource(VoiceSource):
    """Presets stored as ``.npz`` files under folders: ``v2/en_speaker_6`` is ``<folder>/v2/en_speaker_6.npz``."""

    def __init__(self, folders: Iterable[str | os.PathLike], name: str = "folders") -> None:
        self.folders = [Path(folder) for folder in folders]
        self.name = name

    @classmethod
    def from_env(cls, variable: str = "BARKKIT_VOICE_PATH") -> "FolderVoiceSource":
        """Folders listed in an environment variable, separated by ``os.pathsep``."""
        value = os.environ.get(variable, "")
        return cls([part for part in value.split(os.pathsep) if part], name=f"${variable}")

    def names(self) -> list[str]:
        found: set[str] = set()
        for folder in self.folders:
            if folder.is_dir():
                found.update(path.relative_to(folder).with_suffix("").as_posix() for path in folder.rglob("*.npz"))
        return sorted(found)

    def find(self, name: str) -> Voice | None:
        relative = Path(*name.replace("\\", "/").split("/")).with_suffix(".npz")
        if relative.is_absolute() or ".." in relative.parts:
            return None
        for folder in self.folders:
            candidate = folder / relative
            if candidate.is_file():
                return Voice.from_npz(candidate)
        return None


def find_preset(name: str, *, plugins: "Plugins | None" = None) -> Voice:
    """Ask every registered voice source for ``name``; a clear error when none has it."""
    from barkkit.plugins import load_plugins

    plugins = plugins or load_plugins()
    errors: list[str] = []
    for source_name in plugins.voice_sources:
        source = plugins.voice_sources.get(source_name)
        try:
            voice = source.find(name)
        except VoiceError as exc:
            errors.append(str(exc))
            continue
        if voice is not None:
            return voice
    hint = f" ({'; '.join(errors)})" if errors else ""
    raise VoiceError(
        f"unknown voice '{name}'{hint}; give an .npz path, or a preset name from `barkkit voices list`"
    )
