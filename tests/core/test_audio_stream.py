"""Reading recordings in blocks: the same samples as reading them whole, and the tail kept as blocks pass."""

import numpy as np
import pytest
import soundfile

from barkkit.audio import load_audio
from barkkit.audio_stream import AudioStream, TailKeeper
from barkkit.errors import AudioError


@pytest.mark.parametrize("channels, rate", [(1, 16_000), (2, 44_100), (3, 22_050)])
def test_blocks_are_the_whole_files_samples(tmp_path, channels, rate):
    path = tmp_path / "x.flac"
    data = np.random.default_rng(channels).uniform(-0.5, 0.5, (int(2.3 * rate), channels)).astype(np.float32)
    soundfile.write(path, data, rate)
    stream = AudioStream(path, block_s=0.37)
    blocks = list(stream.blocks())
    assert len(blocks) == 7 and stream.sample_rate == rate and stream.frames == data.shape[0]
    whole = load_audio(path)
    assert np.array_equal(np.concatenate(blocks), whole.samples)


def test_the_tail_keeper_keeps_the_last_seconds(tmp_path):
    samples = np.arange(10_000, dtype=np.float32) / 10_000
    keeper = TailKeeper(0.25, 1_000)  # 250 samples
    passed = list(keeper.through(samples[i : i + 97] for i in range(0, samples.size, 97)))
    assert np.array_equal(np.concatenate(passed), samples) and keeper.total == 10_000
    assert np.array_equal(keeper.audio().samples, samples[-250:]) and sum(b.size for b in keeper._blocks) < 250 + 97
    short = TailKeeper(5.0, 1_000)
    list(short.through([samples[:300]]))
    assert np.array_equal(short.audio().samples, samples[:300])


def test_unreadable_files_are_one_line(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        AudioStream(tmp_path / "gone.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really")
    with pytest.raises(AudioError, match="bad.wav: not a readable audio file"):
        AudioStream(bad)
