"""Batch files, complete outputs, one actor call's clips, and the --ray options' errors: no cluster needed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from barkkit import Audio, Pipeline, load_plugins
from barkkit.audio import save_audio
from barkkit.cli import cli
from barkkit.errors import BarkkitError
from barkkit.scale import BatchRow, is_complete_audio, read_batch_file
from barkkit.scale.generation import make_clips
from tests.core import toy_plugin
from tests.core.toy_plugin import TOY_SPEC

TOY = ["--semantic-stage", "toy.semantic", "--coarse-stage", "toy.coarse", "--fine-stage", "toy.fine", "--decoder", "toy.decoder"]


def test_a_text_file_numbers_its_rows_and_seeds_them_as_generate_batch_does(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines = tmp_path / "lines.txt"
    lines.write_text("  first  \n\nsecond\n{not json\n")
    rows = read_batch_file(lines, Path("out/clip_{n}.wav"), seed=10, voice="v2/en_speaker_1")
    assert [(r.n, r.text, r.seed, r.voice) for r in rows] == [
        (1, "first", 10, "v2/en_speaker_1"), (2, "second", 11, "v2/en_speaker_1"), (3, "{not json", 12, "v2/en_speaker_1")]
    assert [r.path for r in rows] == [str(tmp_path / "out" / f"clip_{n}.wav") for n in (1, 2, 3)]
    plain = read_batch_file(lines, Path("clip.flac"), seed=0, voice=None)
    assert Path(plain[1].path).name == "clip_2.flac"


def test_jsonl_rows_carry_their_own_voice_seed_and_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "me.npz", semantic_prompt=np.zeros(3, dtype=np.int64))
    rows_file = tmp_path / "rows.txt"  # JSONL recognised by its first line, whatever the extension
    rows_file.write_text('{"text": "a"}\n{"text": "b", "seed": 99, "voice": "me.npz", "out": "x/b.wav"}\n'
                         '{"text": "c", "voice": null}\n')
    rows = read_batch_file(rows_file, Path("clip_{n}.wav"), seed=5, voice="v2/en_speaker_6")
    assert [(r.text, r.seed) for r in rows] == [("a", 5), ("b", 99), ("c", 7)]
    assert [r.voice for r in rows] == ["v2/en_speaker_6", str(tmp_path / "me.npz"), None]  # a file made absolute
    assert rows[1].path == str(tmp_path / "x" / "b.wav")


@pytest.mark.parametrize(("content", "message"), [
    ("", "holds no text lines"),
    ('{"text": "a"}\nnot json\n', "line 2 is not JSON"),
    ('{"text": "a", "speed": 2}\n', "unknown key(s) speed"),
    ('{"voice": "x"}\n', 'needs a "text" string'),
    ('{"text": "a", "seed": "3"}\n', "seed must be a whole number"),
    ('{"text": "a", "out": "o.wav"}\n{"text": "b", "out": "o.wav"}\n', "rows 1 and 2 both write"),
])
def test_a_bad_batch_file_is_one_clear_error(tmp_path, content, message):
    path = tmp_path / "rows.jsonl"
    path.write_text(content)
    with pytest.raises(BarkkitError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_batch_file(path, tmp_path / "clip_{n}.wav", seed=0, voice=None)


def test_only_a_whole_audio_file_counts_as_complete(tmp_path):
    audio = Audio(np.sin(np.arange(4800) / 10).astype(np.float32) * 0.5, 24_000)
    wav, flac = save_audio(tmp_path / "a.wav", audio), save_audio(tmp_path / "a.flac", audio)
    assert is_complete_audio(wav) and is_complete_audio(flac)
    data = wav.read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    assert soundfile.info(str(tmp_path / "cut.wav")).frames > 0  # libsndfile still reads it: the header tells
    (tmp_path / "cut.flac").write_bytes(flac.read_bytes()[:-300])
    (tmp_path / "junk.wav").write_bytes(b"junk")
    (tmp_path / "empty.wav").write_bytes(b"")
    for name in ("cut.wav", "cut.flac", "junk.wav", "empty.wav", "missing.wav"):
        assert not is_complete_audio(tmp_path / name), name


def test_a_float_wav_of_the_same_samples_is_the_same_bytes(tmp_path):
    audio = Audio(np.linspace(-0.5, 0.5, 2400, dtype=np.float32), 24_000)
    first = save_audio(tmp_path / "one.wav", audio).read_bytes()
    second = save_audio(tmp_path / "two.wav", audio).read_bytes()
    assert first == second and b"PEAK" in first  # the chunk stays; its write time is zeroed
    np.testing.assert_array_equal(soundfile.read(str(tmp_path / "one.wav"), dtype="float32")[0], audio.samples)


def test_one_call_makes_each_rows_clip_and_a_bad_row_fails_alone(tmp_path):
    pipeline = Pipeline.from_spec(TOY_SPEC, plugins=load_plugins(entry_points_group=None, extra=[toy_plugin]))
    rows = [BatchRow(1, "hello", None, 3, str(tmp_path / "1.wav")),
            BatchRow(2, "who?", "no/such_voice", 4, str(tmp_path / "2.wav")),
            BatchRow(3, "  ", None, 5, str(tmp_path / "3.wav")),
            BatchRow(4, "there", None, 6, str(tmp_path / "4.wav"))]
    results = make_clips(pipeline, rows, {}, node_id="node-a")
    assert [r["status"] for r in results] == ["done", "failed", "failed", "done"]
    assert "no/such_voice" in results[1]["error"] and "empty" in results[2]["error"]
    assert all(r["node_id"] == "node-a" for r in results)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.wav", "4.wav"]
    alone = pipeline.generate("there", seed=6)
    np.testing.assert_array_equal(soundfile.read(str(tmp_path / "4.wav"), dtype="float32")[0], alone.audio.samples)


@pytest.fixture
def run():
    cli.use_plugins(load_plugins(extra=[toy_plugin]))
    yield lambda *args: CliRunner().invoke(cli, [str(a) for a in args])
    cli.use_plugins(None)


def test_a_local_jsonl_batch_gives_each_row_its_seed_and_output(run, tmp_path):
    batch = tmp_path / "rows.jsonl"
    batch.write_text(json.dumps({"text": "one"}) + "\n" + json.dumps({"text": "two", "seed": 40, "out": str(tmp_path / "b.wav")}) + "\n")
    result = run("generate", "--batch", batch, "-o", tmp_path / "c_{n}.wav", "--seed", 9, "--threads", 1, "-q", *TOY)
    assert result.exit_code == 0, result.output
    pipeline = Pipeline.from_spec(TOY_SPEC, plugins=load_plugins(entry_points_group=None, extra=[toy_plugin]))
    for path, text, seed in ((tmp_path / "c_1.wav", "one", 9), (tmp_path / "b.wav", "two", 40)):
        samples = soundfile.read(str(path), dtype="float32")[0]
        np.testing.assert_array_equal(samples, pipeline.generate(text, seed=seed).audio.samples)


@pytest.mark.parametrize(("args", "message"), [
    (["generate", "--batch", "{batch}", "-o", "{tmp}/c.wav", "--actors", "2"], "--actors only work(s) with --ray"),
    (["generate", "--batch", "{batch}", "-o", "{tmp}/c.wav", "--manifest", "{tmp}/m.jsonl"], "--manifest only work(s) with --ray"),
    (["generate", "hello", "-o", "{tmp}/c.wav", "--ray", "local"], "--ray runs a batch: give --batch FILE"),
    (["generate", "--batch", "{batch}", "-o", "{tmp}/c.wav", "--save-tokens", "{tmp}/t.npz", "--ray", "local"],
     "--save-tokens is not available with --ray"),
    (["generate", "--batch", "{batch}", "-o", "{tmp}/c.wav", "--threads", "0"], "--threads"),
    (["detect", "{tmp}", "--actors", "2"], "--actors only works with --ray"),
    (["detect", "s3://bucket/clips"], "files named by URL (s3://...) are read by --ray jobs"),
    (["detect", "{tmp}", "--segments", "--ray", "local"], "--segments is not available with --ray"),
    (["serve", "--replicas", "2"], "--replicas only works with --ray"),
])
def test_cluster_options_in_the_wrong_place_are_one_error_line(run, tmp_path, args, message):
    batch = tmp_path / "lines.txt"
    batch.write_text("hello\n")
    result = run(*[a.format(batch=batch, tmp=tmp_path) for a in args])
    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.stderr


def test_an_actor_whose_pipeline_cannot_load_answers_every_row_with_that_one_line(tmp_path):
    from barkkit.scale.generation import GenerationWorker

    worker = GenerationWorker(spec={"model": str(tmp_path / "missing")}, options={}, threads=1, pcm16=False, peak="scale")
    assert "missing" in worker.setup_error and "\n" not in worker.setup_error
    rows = [json.dumps(BatchRow(n, "hi", None, n, str(tmp_path / f"{n}.wav")).as_dict()) for n in (1, 2)]
    answered = [json.loads(item) for item in worker({"row": np.array(rows, dtype=object)})["result"]]
    assert [a["n"] for a in answered] == [1, 2] and all(a["setup_error"] == worker.setup_error for a in answered)


def test_the_row_bar_shows_on_a_terminal_only(capsys):
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    script = ("from barkkit.scale.report import RowProgress\n"
              "with RowProgress(3, quiet=False) as bar:\n"
              "    bar.add('done'); bar.add('skipped'); bar.add('failed')\n")
    main, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal 100 columns wide
    on_terminal = subprocess.run([sys.executable, "-c", script], stdin=subprocess.DEVNULL, stdout=secondary,
                                 stderr=secondary, timeout=60)
    os.close(secondary)
    shown = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(main)
    assert on_terminal.returncode == 0
    assert b"3/3" in shown and b"done=1" in shown and b"skipped=1" in shown and b"failed=1" in shown
    from barkkit.scale.report import RowProgress

    with RowProgress(3, quiet=False) as bar:  # here stderr is captured, not a terminal: no bar in logs or pipes
        bar.add("done")
    assert capsys.readouterr().err == ""
