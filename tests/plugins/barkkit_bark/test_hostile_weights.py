"""Wrong weights and vocabularies are one-line errors that name the file and the fault (not IndexError or
ValueError half-way through a run), and text the tokenizer knows nothing of is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from barkkit.errors import TextError, WeightsError
from barkkit.pipeline import load_pipeline
from barkkit.weights import load_torch_file
from barkkit_bark.checkpoints import load_model
from barkkit_bark.text import TextTokenizer


def _folder(tmp_path: Path, suno_folder: Path, **files: Path | bytes) -> Path:
    """A copy of the tiny Suno folder with some files replaced (a path: that file's contents)."""
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("text.pt", "coarse.pt", "fine.pt", "vocab.txt"):
        source = files.get(name, suno_folder / name)
        (folder / name).write_bytes(source.read_bytes() if isinstance(source, Path) else source)
    return folder


def test_swapped_text_and_coarse_checkpoints_say_so(tmp_path: Path, suno_folder: Path) -> None:
    folder = _folder(tmp_path, suno_folder, **{"text.pt": suno_folder / "coarse.pt", "coarse.pt": suno_folder / "text.pt"})
    with pytest.raises(WeightsError, match=r"model/text.pt: vocabularies of 12,096 in and 12,096 out, but Bark's text "
                                           r"model needs at least 129,600 and 10,001; these are the sizes of Bark's coarse"):
        load_model(folder, "text")
    with pytest.raises(WeightsError, match="model/coarse.pt: .*sizes of Bark's text \\(semantic\\) model"):
        load_model(folder, "coarse")
    with pytest.raises(WeightsError, match="text.pt"):  # the whole pipeline: before any generation
        load_pipeline(folder, decoder=False)


def test_a_config_whose_sizes_do_not_fit_names_the_file_and_the_fault(tmp_path: Path, transformers_folder: Path) -> None:
    folder = tmp_path / "hf"
    shutil.copytree(transformers_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    config["semantic_config"]["num_heads"] = 3
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match=r"hf/config.json: n_embd 32 is not a multiple of n_head 3"):
        load_model(folder, "text")
    config["semantic_config"].update(num_heads=2, block_size=64)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match=r"hf/config.json: block_size 64 is less than the 1024 positions"):
        load_model(folder, "text")


def test_a_config_claiming_a_million_layers_is_refused_before_building_them(tmp_path: Path, suno_folder: Path) -> None:
    checkpoint = load_torch_file(suno_folder / "fine.pt", allow_numpy_scalars=True, mmap=False)
    checkpoint["model_args"]["n_layer"] = 1_000_000
    torch.save(checkpoint, tmp_path / "fine.pt")
    with pytest.raises(WeightsError, match="fine.pt: the config says 1000000 layers but the file holds weights of 2"):
        load_model(tmp_path, "fine")


@pytest.mark.parametrize("contents, message", [
    (b"", "the vocabulary is empty"),
    (b"\n\n", "the vocabulary is empty"),
    (b"hello\nworld\n", "the vocabulary has no \\[UNK\\] entry"),
    (b"[UNK]\n\xff\xfe\n", "not a UTF-8 text vocabulary"),
])
def test_an_empty_or_broken_vocabulary_is_refused(tmp_path: Path, contents: bytes, message: str) -> None:
    (tmp_path / "vocab.txt").write_bytes(contents)
    with pytest.raises(WeightsError, match=f"vocab.txt: {message}"):
        TextTokenizer(tmp_path / "vocab.txt")


def test_a_vocabulary_too_big_for_the_text_model_is_refused(tmp_path: Path) -> None:
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n" + "".join(f"w{i}\n" for i in range(119_546)))
    with pytest.raises(WeightsError, match="holds 119,548 entries, more than the 119,547"):
        TextTokenizer(tmp_path / "vocab.txt")


def test_text_the_tokenizer_knows_nothing_of_is_refused(vocab_file: Path) -> None:
    tokenizer = TextTokenizer(vocab_file)
    for text in ("\U0001F600\U0001F389 \U0001F44D", "\u200b\u2060", "x" * 150):
        with pytest.raises(TextError, match="Bark's tokenizer knows nothing in the text") as error:
            tokenizer.pieces(text)
        assert error.value.text == text
    assert tokenizer.pieces("Hello \U0001F600")  # one known word is enough (the rest is read as [UNK], with a warning)
    with pytest.raises(TextError, match="sentence 1 of 1 is") as error:
        tokenizer.pieces("word " * 300)
    assert error.value.text == "word " * 300


def test_a_hub_preset_too_long_to_be_a_voice_is_refused_from_its_header(hub_cache: Path, tmp_path: Path,
                                                                         voice_file: Path) -> None:
    """A hub repository's .npy parts are checked before they are read, like an .npz's members."""
    import io
    import tracemalloc

    import numpy as np

    from barkkit.errors import VoiceError
    from barkkit_bark.voices import HubVoiceSource
    from tests.hub_cache import add_to_hub_cache
    from tests.plugins.barkkit_bark.test_voices import PRESET, _hub_files

    snapshot = add_to_hub_cache(hub_cache, "suno/bark", _hub_files(voice_file, tmp_path, names=(PRESET,)))
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<i8", "fortran_order": False, "shape": (8, 50_000_000)})
    with open(snapshot / f"speaker_embeddings/{PRESET}_fine_prompt.npy", "wb") as file:  # sparse: 3.2 GB, no disk
        file.write(header.getvalue())
        file.truncate(len(header.getvalue()) + 8 * 50_000_000 * 8)
    tracemalloc.start()
    try:
        with pytest.raises(VoiceError, match=r"fine_prompt has shape \(8, 50000000\), more than the 270,000 steps"):
            HubVoiceSource().find(PRESET)
        assert tracemalloc.get_traced_memory()[1] < 50_000_000  # of the 3.2 GB it declares
    finally:
        tracemalloc.stop()
