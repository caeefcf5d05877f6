"""Text to audio file through the real command line, the built-in plugins and real-format weights.

The model folder is what a user would have from Suno's release: ``text.pt``, ``coarse.pt``, ``fine.pt`` (tiny random
models in Suno's checkpoint format), the tokenizer's ``vocab.txt`` and EnCodec's ``encodec_24khz-d7cc33bc.th`` (a
random-weight codec of the real architecture).
"""

from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from barkkit import Voice, load_pipeline
from barkkit.cli import cli
from barkkit.errors import WeightsError
from barkkit_bark.checkpoints import save_suno_checkpoint
from barkkit_encodec.checkpoints import write_encodec_checkpoint
from tests.plugins.barkkit_bark.conftest import tiny_models, write_vocab


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bark-small-tiny")
    text, coarse, fine = tiny_models(seed=3)
    for name, model in (("text.pt", text), ("coarse.pt", coarse), ("fine.pt", fine)):
        save_suno_checkpoint(folder / name, model)
    write_vocab(folder)
    write_encodec_checkpoint(folder)
    return folder


def _run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def test_generate_writes_a_wav_and_a_voice(model_folder, tmp_path, prompts_dir):
    out, tokens = tmp_path / "out.wav", tmp_path / "t.npz"
    _run("generate", "Hello from barkkit.", "--model", model_folder, "--seed", 0, "--save-tokens", tokens, "-o", out,
         "--max-gen-duration-s", 1.5, "--voice", prompts_dir / "v2" / "en_speaker_6.npz")
    samples, rate = soundfile.read(out, dtype="float32")
    voice = Voice.from_npz(tokens)
    assert rate == 24_000 and len(samples) == 320 * len(voice.fine) > 0
    assert np.isfinite(samples).all() and np.abs(samples).max() > 0
    # The same seed through the Python API gives the same tokens as the command line.
    again = load_pipeline(model_folder).generate("Hello from barkkit.", voice=prompts_dir / "v2" / "en_speaker_6.npz",
                                                 seed=0, max_gen_duration_s=1.5)
    assert again.fine == voice.fine and again.semantic == voice.semantic
    # The token file is a voice: generate again from it, and decode it on its own.
    _run("generate", "And again.", "--model", model_folder, "--seed", 1, "--voice", tokens, "-o", tmp_path / "next.flac",
         "--max-gen-duration-s", 1, "-q")
    assert soundfile.info(tmp_path / "next.flac").samplerate == 24_000
    _run("decode", tokens, "-o", tmp_path / "decoded.wav", "--model", model_folder)
    decoded, _ = soundfile.read(tmp_path / "decoded.wav", dtype="float32")
    assert np.allclose(decoded, samples, atol=1e-6)


def test_stage_commands_reproduce_generate(model_folder, tmp_path):
    _run("generate", "Stage by stage.", "--model", model_folder, "--seed", 5, "--save-tokens", tmp_path / "all.npz",
         "-o", tmp_path / "all.wav", "--max-gen-duration-s", 1)
    staged = tmp_path / "staged.npz"
    # One generator runs through all stages in a full run, so only the first stage alone matches it token for
    # token; each later command starts its own generator from the seed.
    _run("semantic", "Stage by stage.", "--model", model_folder, "--seed", 5, "-o", staged, "--max-gen-duration-s", 1)
    full = np.load(tmp_path / "all.npz")
    assert np.array_equal(np.load(staged)["semantic_prompt"], full["semantic_prompt"])
    _run("coarse", staged, "--model", model_folder, "-o", staged, "--seed", 5)
    _run("fine", staged, "--model", model_folder, "-o", staged, "--fine-temp", "none")
    assert Voice.from_npz(staged).coarse.shape == Voice.from_npz(tmp_path / "all.npz").coarse.shape


def test_plugins_lists_the_built_in_stages_and_decoder():
    listing = _run("plugins").output.splitlines()
    rows = {tuple(line.split()[:2]): line.split()[-1] for line in listing if line.strip()}
    assert rows[("stage", "bark.semantic")] == "bark"
    assert rows[("stage", "bark.coarse")] == "bark"
    assert rows[("stage", "bark.fine")] == "bark"
    assert rows[("decoder", "encodec")] == "encodec"


def test_warnings_are_one_line_each(model_folder, tmp_path):
    result = _run("generate", "Hello ꙮ there.", "--model", model_folder, "--seed", 0, "-q",
                  "--max-gen-duration-s", 0.2, "-o", tmp_path / "x.wav")
    assert result.stderr == "Warning: Bark's tokenizer does not know 1 word(s) of the text and reads each as [UNK]: 'ꙮ'\n"


def test_a_folder_without_codec_weights_still_makes_tokens(model_folder, tmp_path):
    folder = tmp_path / "stages-only"
    folder.mkdir()
    for name in ("text.pt", "coarse.pt", "fine.pt", "vocab.txt"):
        (folder / name).symlink_to(model_folder / name)
    with pytest.warns(UserWarning, match="no audio decoder.*encodec_24khz-d7cc33bc.th.*stops at fine tokens"):
        pipeline = load_pipeline(folder)
    generation = pipeline.generate("Tokens only.", seed=2, max_gen_duration_s=0.5)
    assert generation.audio is None and generation.fine is not None
    assert generation.fine == load_pipeline(model_folder).generate("Tokens only.", seed=2, max_gen_duration_s=0.5).fine
    # Named, the decoder is required; and a command that writes audio fails before generating anything.
    with pytest.raises(WeightsError, match="encodec_24khz-d7cc33bc.th"):
        load_pipeline(folder, decoder="encodec")
    result = CliRunner().invoke(cli, ["generate", "Hi.", "--model", str(folder), "-o", str(tmp_path / "x.wav")])
    assert result.exit_code == 1 and "encodec_24khz-d7cc33bc.th" in result.stderr
    assert not (tmp_path / "x.wav").exists()


def test_fast_mode_batch_file_gives_each_line_its_single_run(model_folder, tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("First line to speak.\n\nA second, longer line to speak.\n", encoding="utf-8")
    _run("generate", "--batch", lines, "--model", model_folder, "--mode", "fast", "--seed", 4, "-q",
         "--max-gen-duration-s", 0.8, "-o", tmp_path / "clip_{n}.wav", "--save-tokens", tmp_path / "clip_{n}.npz")
    pipeline = load_pipeline(model_folder, mode="fast")
    for n, text in enumerate(["First line to speak.", "A second, longer line to speak."], start=1):  # {n} from 1
        saved = Voice.from_npz(tmp_path / f"clip_{n}.npz")
        alone = pipeline.generate(text, seed=4 + n - 1, max_gen_duration_s=0.8)
        assert saved.semantic == alone.semantic and saved.fine == alone.fine  # each line keeps its own seed
        samples, rate = soundfile.read(tmp_path / f"clip_{n}.wav", dtype="float32")
        assert rate == 24_000 and len(samples) == 320 * len(saved.fine) > 0
