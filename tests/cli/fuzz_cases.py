"""A seeded generator of hostile command lines: every command, with one or two of its inputs made hostile.

Each case starts from a command line that works (tiny models, short generations) and replaces one or two of its
slots (the text, a token file, a voice, an audio file, an output path, an option, the model folder, the
environment) by a value from that slot's pool of bad and edge values. ``sweep`` first takes every pool value once,
each in a command that reads it; ``cases`` then adds random pairs. Paths hold ``{fix}`` (the fixtures folder) and
``{case}`` (the case's own empty folder, also its working directory), which the driver fills in.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3")


@dataclass
class Case:
    """One command line and what it may write."""

    name: str
    args: list[str]
    outputs: list[str] = field(default_factory=list)  # paths (globs) it may create or change, in the case folder
    setup: list[tuple[str, ...]] = field(default_factory=list)  # nodes to make in the case folder first
    stdin: bytes | None = None
    env: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "args": self.args, "outputs": self.outputs, "setup": [list(s) for s in self.setup],
                "stdin": None if self.stdin is None else self.stdin.hex(), "env": self.env}


TEXTS: list[tuple[str, bytes | None]] = [
    ("", None), ("   ", None), ("\n\t\r", None), ("Hi.", None), ("a" * 3000, None), ("word " * 400 + ".", None),
    ("word " * 200 + "end. And a second sentence.", None), ("\U0001F600\U0001F389", None), ("\x00abc", None),
    ("\u202e\u200b\u2060", None), ("Ünïcödé ✓ 中文。日本語！", None), ("[laughs] ♪ la la ♪", None), ("b" * 101, None),
    ("bad \udcff byte", None), ("-", b""), ("-", b"\xff\xfe\xfa"), ("-", b"Hi there."), ("-", b"\x00\x00"),
    ("--", None),
]
TOKENS = ["semantic", "coarse", "fine", "voice", "zero_frames", "out_of_range", "floats", "bools", "transposed",
          "scalar", "mismatched", "other_keys", "objects", "raw_member", "bad_header", "short_data", "bomb",
          "bomb_wide", "truncated", "empty", "random", "text", "npy_named"]
NODES = ["folder", "folder.npz", "fifo", "socket", "device", "dangling", "loop", "missing"]
AUDIO = ["tone.wav", "one_sample.wav", "silence.wav", "nan.wav", "loud.wav", "stereo_8k.wav", "rate_1hz.wav",
         "empty.wav", "truncated.wav", "random.wav", "random.mp3", "huge_header.wav", "text.wav"]
BATCHES = ["lines", "binary", "latin1", "long_line", "huge_line", "blank", "empty", "emoji", "crlf"]
SPECS = ["good", "broken", "scalar", "unknown_key", "unknown_stage", "bad_step", "stages", "binary"]
MODELS = ["good", "swapped", "fine_as_coarse", "truncated", "random_codec", "no_codec", "empty_vocab",
          "vocab_without_unk", "binary_vocab", "pickled", "million_layers", "odd_heads", "small_block",
          "text_size_words", "broken_config", "config_list", "config_missing_sizes", "bad_json", "empty_folder"]
OTHER_MODELS = ["nobody/nothing", "bark", "", "../..", "{fix}/nodes/fifo", "{fix}/tokens/voice.npz", "a/b/c"]
OPTIONS: list[list[str]] = [
    ["--seed", "-5"], ["--seed", str(2**64)], ["--seed", "abc"], ["--seed", str(2**64 - 1)], ["--text-temp", "0"],
    ["--text-temp", "-1"], ["--text-temp", "nan"], ["--text-temp", "inf"], ["--waveform-temp", "1e309"],
    ["--fine-temp", "none"], ["--fine-temp", "x"], ["--fine-temp", "-2"], ["--top-k", "0"], ["--top-k", "-3"],
    ["--top-k", "99999999"], ["--top-p", "0"], ["--top-p", "1.5"], ["--top-p", "nan"], ["--min-eos-p", "2"],
    ["--min-eos-p", "0"], ["--max-gen-duration-s", "0"], ["--max-gen-duration-s", "-1"],
    ["--max-gen-duration-s", "nan"], ["--max-gen-duration-s", "1e-9"], ["--max-coarse-history", "5"],
    ["--max-coarse-history", "700"], ["--sliding-window-len", "0"], ["--sliding-window-len", "100000"],
    ["--option", "garbage"], ["--option", "=3"], ["--option", 'text_temp="hot"'], ["--option", "nope=1"],
    ["--option", "top_k=[1,2]"], ["--mode", "turbo"], ["--mode", "fast"], ["--device", "gpu"],
    ["--device", "cuda:99"], ["--device", "meta"], ["--device", "cpu:0"], ["--no-allow-early-stop"],
    ["--peak", "keep"], ["--peak", "loud"], ["--pcm16"], ["--decoder", "nobody"], ["--decoder", "vocos"],
    ["--stage", "bark.fine"], ["--stage", "nobody.stage"], ["--voice", "v2/en_speaker_6"], ["--voice", "nobody"],
    ["--voice", "../../../etc/passwd"], ["--voice", ""], ["--unknown-flag"], ["-q"], ["--help"],
]
ENVS: list[dict[str, str]] = [
    {"BARKKIT_PLUGINS": "nonexistent"}, {"BARKKIT_PLUGINS": ""}, {"BARKKIT_PLUGINS": "bark"},
    {"BARKKIT_PLUGINS": "bark, nonexistent"}, {"BARKKIT_BLOCK_PLUGINS": "bark,encodec,vocos,detect"},
    {"BARKKIT_BLOCK_PLUGINS": "nonexistent"}, {"BARKKIT_VOICE_PATH": "{fix}/tokens"},
    {"BARKKIT_VOICE_PATH": "{fix}/nodes"},
]


def token_path(name: str) -> str:
    return f"{{fix}}/nodes/{name}" if name in NODES else f"{{fix}}/tokens/{name}.npz"


def audio_path(name: str) -> str:
    return f"{{fix}}/nodes/{name}" if name in NODES else f"{{fix}}/audio/{name}"


# --- outputs -----------------------------------------------------------------------------------------------------
OUTPUT_KINDS = ["new", "existing", "fifo", "device", "folder", "socket", "link_to_file", "dangling_link", "link_loop",
                "link_to_folder", "missing_folder", "wrong_extension", "no_extension", "long_name", "newline_name",
                "unicode_name", "dash", "model_file", "input"]


def output(kind: str, extension: str, case: dict[str, Any]) -> tuple[str, list[str], list[tuple[str, ...]]]:
    """(the path to pass, the paths that may change, setup steps) for an output of ``kind``."""
    name = f"out{extension}"
    simple = {"new": [], "existing": [("file", name)], "fifo": [("fifo", name)], "device": [("device", name)],
              "folder": [("dir", name)], "socket": [("socket", name)],
              "link_to_file": [("file", "target" + extension), ("link", name, "target" + extension)],
              "dangling_link": [("link", name, "made" + extension)], "link_loop": [("link", name, name)],
              "link_to_folder": [("dir", "sub"), ("link", name, "sub")]}
    if kind in simple:
        return name, [name, "target" + extension, "made" + extension], simple[kind]
    if kind == "missing_folder":
        return f"nodir/{name}", [], []
    if kind == "wrong_extension":
        return "out.txt", ["out.txt"], []
    if kind == "no_extension":
        return "out", ["out"], []
    if kind == "long_name":
        return "x" * 300 + extension, [], []
    if kind == "newline_name":
        return f"a\nb{extension}", [f"a\nb{extension}"], []
    if kind == "unicode_name":
        return f"ünï ✓{extension}", [f"ünï ✓{extension}"], []
    if kind == "dash":
        return "-", ["-"], []
    if kind == "model_file":
        return f"{{fix}}/models/{case['model']}/vocab.txt", [], []
    # "input": the command's own input, copied into the case folder (a stage command may rewrite its token file)
    if case.get("tokens"):
        source, copy = token_path(case["tokens"]), "input.npz"
    elif case["command"] == "voices_make":
        source, copy = audio_path(case["audio"]), "input.wav"
    else:  # commands that read no file of their own: the model's
        return f"{{fix}}/models/{case['model']}/text.pt", [], []
    case["input_copy"] = copy
    return copy, [copy] if case["command"] in ("coarse", "fine") else [], [("copy", copy, source)]


# --- commands ----------------------------------------------------------------------------------------------------
COMMANDS = ["generate", "batch", "semantic", "coarse", "fine", "decode", "voices_show", "voices_make", "voices_list",
            "detect", "plugins", "detector_evaluate", "detector_train", "info", "help"]
SLOTS = {
    "generate": ["text", "output", "save_tokens", "options", "model", "env"],
    "batch": ["batch", "output", "save_tokens", "options", "model", "env"],
    "semantic": ["text", "output", "options", "model", "env"],
    "coarse": ["tokens", "output", "options", "model", "env"],
    "fine": ["tokens", "output", "options", "model", "env"],
    "decode": ["tokens", "output", "options", "model", "env"],
    "voices_show": ["voice", "env"],
    "voices_make": ["audio", "output", "model", "env"],
    "voices_list": ["env"],
    "detect": ["audio", "env"],
    "plugins": ["env"],
    "detector_evaluate": ["data", "output", "env"],
    "detector_train": ["data", "output", "env"],
    "info": ["model", "env"],
    "help": ["env"],
}
DEFAULT_TOKENS = {"coarse": "semantic", "fine": "coarse", "decode": "fine"}


def _slots(command: str) -> dict[str, Any]:
    """The working values of ``command``'s slots."""
    return {"command": command, "text": ("Hi.", None), "batch": "lines", "tokens": DEFAULT_TOKENS.get(command),
            "voice": "voice", "audio": "tone.wav", "model": "good", "options": [], "env": {}, "output": "new",
            "save_tokens": None, "data": "folder"}


def build(name: str, slots: dict[str, Any]) -> Case:
    """The case for ``slots`` (a command and the value of each of its slots)."""
    command = slots["command"]
    audio_out = command in ("generate", "batch", "decode")
    extension = {"detector_evaluate": ".png", "detector_train": ".skops"}.get(command, ".wav" if audio_out else ".npz")
    if audio_out and slots.get("extension"):
        extension = slots["extension"]
    out, outputs, setup = output(slots["output"], extension, slots)
    model = slots["model"] if slots["model"] not in MODELS else f"{{fix}}/models/{slots['model']}"
    model_args = ["-m", model]
    text, stdin = slots["text"]
    tokens = token_path(slots["tokens"]) if slots.get("tokens") else None
    if slots.get("input_copy") and tokens:
        tokens = slots["input_copy"]
    quick = ["--seed", "1", "--max-gen-duration-s", "0.1"]  # 5 semantic tokens at most
    argmax = ["--fine-temp", "none"]  # the fine stage's sampling over 1024 padded frames is most of a tiny run
    args: list[str]
    if command == "generate":
        args = ["generate", text, "-o", out, *model_args, *quick, *argmax]
    elif command == "batch":
        batch = slots["batch"]
        batch_path = f"{{fix}}/nodes/{batch}" if batch in NODES else f"{{fix}}/texts/{batch}.txt"
        pattern = out if "{n}" in out or slots["output"] != "new" else "clip_{n}.wav"
        outputs = [*outputs, "clip_*.wav", "out_*.wav"]
        args = ["generate", "--batch", batch_path, "-o", pattern, *model_args, *quick, *argmax]
    elif command == "semantic":
        args = ["semantic", text, "-o", out, *model_args, *quick]
    elif command in ("coarse", "fine"):
        args = [command, tokens, "-o", out, *model_args, "--seed", "1", *(argmax if command == "fine" else [])]
    elif command == "decode":
        args = ["decode", tokens, "-o", out, *model_args]
    elif command == "voices_show":
        voice = slots["voice"]
        args = ["voices", "show", token_path(voice) if voice in TOKENS or voice in NODES else voice]
    elif command == "voices_make":
        source = slots["input_copy"] if slots.get("input_copy") else audio_path(slots["audio"])
        args = ["voices", "make", source, "-o", out, "--codes-only", *model_args]
    elif command == "voices_list":
        args = ["voices", "list"]
    elif command == "detect":
        args = ["detect", audio_path(slots["audio"]), "--json"]
    elif command == "plugins":
        args = ["plugins"]
    elif command == "detector_evaluate":
        args = ["detector", "evaluate", "--data", f"{{fix}}/nodes/{slots['data']}", "--plot", out]
    elif command == "info":
        args = ["info", "--model", model, "--mode", "exact"]
    elif command == "detector_train":
        args = ["detector", "train", "--data", f"{{fix}}/nodes/{slots['data']}", "--out", out]
    else:
        args = [*slots.get("help_path", []), "--help"]
    if slots.get("save_tokens") and command in ("generate", "batch"):
        second, more, steps = output(slots["save_tokens"], ".npz", slots)
        if slots["save_tokens"] == "same":
            second = out
        args += ["--save-tokens", second]
        outputs, setup = [*outputs, *more, "*_*.npz"], [*setup, *steps]
    if command in ("generate", "batch", "semantic", "coarse", "fine", "decode"):
        args += slots["options"]
    if command == "generate" and "--voice" not in slots["options"] and slots.get("with_voice"):
        voice = slots["voice"]
        args += ["--voice", token_path(voice) if voice in TOKENS or voice in NODES else voice]
    return Case(name, args, outputs, setup, stdin, dict(slots["env"]))


POOLS: dict[str, list[Any]] = {
    "text": TEXTS, "tokens": TOKENS + NODES, "voice": TOKENS + NODES + ["v2/en_speaker_6", "nobody", ""],
    "audio": AUDIO + NODES, "output": OUTPUT_KINDS, "save_tokens": [*OUTPUT_KINDS, "same"], "options": OPTIONS,
    "model": MODELS + OTHER_MODELS, "env": ENVS, "batch": BATCHES + NODES, "data": NODES,
}
READERS = {"text": ["generate", "semantic"], "tokens": ["coarse", "fine", "decode"], "voice": ["voices_show", "generate"],
           "audio": ["voices_make", "detect"], "output": ["generate", "semantic", "coarse", "decode", "voices_make",
                                                           "detector_evaluate"],
           "save_tokens": ["generate"], "options": ["generate", "semantic", "coarse", "fine", "decode"],
           "model": ["generate", "semantic", "coarse", "fine", "decode", "voices_make", "info"],
           "env": ["plugins", "generate", "voices_list", "voices_show", "help"], "batch": ["batch"],
           "data": ["detector_evaluate", "detector_train"]}


def _mutate(slots: dict[str, Any], slot: str, value: Any) -> None:
    if slot == "voice" and slots["command"] == "generate":
        slots["voice"], slots["with_voice"] = value, True
    elif slot == "options":
        slots["options"] = [*slots["options"], *value]
    else:
        slots[slot] = value


def sweep(can_make_device: bool) -> list[Case]:
    """Every pool value once, in turn in each command that reads that slot."""
    out = []
    for slot, pool in POOLS.items():
        for i, value in enumerate(pool):
            if not can_make_device and (value == "device"):
                continue
            command = READERS[slot][i % len(READERS[slot])]
            slots = _slots(command)
            _mutate(slots, slot, value)
            out.append(build(f"sweep:{slot}[{i}]:{command}", slots))
    for command in ("generate", "semantic", "coarse", "fine", "decode", "voices_make", "batch"):  # and each works
        out.append(build(f"sweep:baseline:{command}", _slots(command)))
    for extension in AUDIO_EXTENSIONS:
        slots = _slots("decode")
        slots["extension"] = extension
        out.append(build(f"sweep:extension{extension}", slots))
    return out


def cases(seed: int, count: int, can_make_device: bool) -> list[Case]:
    """``count`` random cases: a command, and two of its slots made hostile (or one, and a working run)."""
    rng = random.Random(seed)
    out = []
    while len(out) < count:
        command = rng.choice(COMMANDS)
        slots = _slots(command)
        if command == "help":
            slots["help_path"] = rng.choice([[], ["generate"], ["voices", "make"], ["detect"], ["detector"], ["nope"]])
        for slot in rng.sample(SLOTS[command], k=min(2, len(SLOTS[command]))):
            value = rng.choice(POOLS[slot])
            if value == "device" and not can_make_device:
                continue
            _mutate(slots, slot, value)
        out.append(build(f"random:{seed}:{len(out)}:{command}", slots))
    return out
