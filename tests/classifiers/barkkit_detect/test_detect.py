"""The Bark-audio detector: features, the model file, the bundled model, training, and the CLI, run for real.

Synthetic clips stand in for audio where the shared data is not needed: a speech-like signal (a gliding harmonic
voice in syllable bursts over noise) and the same with EnCodec's trace added (a faint waveform repeating every
1/600 s, which is what Bark's decoder leaves). Tests that need real Bark and human clips skip without ../shared/data.
"""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from barkkit import Audio, AudioDetector, hookimpl, load_plugins
from barkkit.audio import load_audio, resample
from barkkit.cli import cli
from barkkit.errors import BarkkitError, WeightsError

from barkkit_detect import BUNDLED_MODEL, CombFeatures, Detector
from barkkit_detect.features import HubertFeatures, make_feature_set, prepare_audio
from barkkit_detect.model import TRUSTED_TYPES, metadata_path


def speech_like(seconds: float, rate: int, seed: int, *, comb_db: float | None = None) -> np.ndarray:
    """A voice-like test signal (n,) at ``rate``; with ``comb_db``, plus a 600 Hz-periodic pattern that many dB down."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    f0 = rng.uniform(90, 220) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 30) if k * f0.max() < 0.45 * rate)
    envelope = np.clip(np.sin(2 * np.pi * rng.uniform(2, 5) * t + rng.uniform(0, 6)), 0, None) ** 2
    signal = voice * envelope + 0.05 * rng.standard_normal(n)
    if comb_db is not None:
        # a fixed random waveform repeated every 1/600 s (40 samples at 24 kHz): lines at every multiple of 600 Hz
        base_rate = 24_000
        period = rng.standard_normal(base_rate // 600)
        pattern = np.tile(period, int(seconds * 600) + 2)[: int(seconds * base_rate)]
        if rate != base_rate:
            import librosa

            pattern = librosa.resample(pattern, orig_sr=base_rate, target_sr=rate)[:n]
        pattern = np.pad(pattern, (0, max(0, n - pattern.size)))
        pattern *= np.sqrt(np.mean(signal**2) / np.mean(pattern**2)) * 10 ** (-comb_db / 20)
        signal = signal + pattern
    return (0.3 * signal / np.max(np.abs(signal))).astype(np.float32)


# ---------------------------------------------------------------------------------------------------- features


def test_comb_features_see_the_600hz_trace_at_any_rate_and_loudness():
    features = CombFeatures()
    assert len(features.feature_names()) == features.dim
    plain = features(Audio(speech_like(3.0, 24_000, 1), 24_000))
    traced_audio = Audio(speech_like(3.0, 24_000, 1, comb_db=25), 24_000)
    traced = features(traced_audio)
    assert plain.shape == traced.shape == (features.dim,) and np.all(np.isfinite(traced))
    mean = features.feature_names().index("comb_mean")
    assert traced[mean] > plain[mean] + 1.0  # the lines stand out of the floor by far more than chance
    # the same clip 20 dB quieter at 44.1 kHz gives the same picture
    quiet_44k = features(Audio(0.1 * resample(traced_audio, 44_100).samples, 44_100))
    assert abs(quiet_44k[mean] - traced[mean]) < 0.5
    assert quiet_44k[mean] > plain[mean] + 1.0


def test_prepare_audio_reads_any_file_to_16khz_mono_at_a_fixed_loudness(tmp_path):
    stereo = np.stack([speech_like(1.5, 44_100, 2), 0.5 * speech_like(1.5, 44_100, 3)], axis=1)
    path = tmp_path / "stereo.ogg"
    soundfile.write(path, stereo, 44_100, format="OGG", subtype="VORBIS")
    samples = prepare_audio(path)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(samples.shape[0] - 1.5 * 16_000) < 200
    assert np.sqrt(np.mean(samples.astype(np.float64) ** 2)) == pytest.approx(0.05, rel=1e-3)
    silent = prepare_audio(Audio(np.zeros(8000, np.float32), 16_000))
    assert not silent.any()
    assert np.all(np.isfinite(CombFeatures().extract(silent)))
    with pytest.raises(BarkkitError, match=r"bare array of samples; give Audio\(samples, sample_rate\)"):
        prepare_audio(stereo[:, 0])  # no rate: refused, not guessed


def _tiny_hubert(folder):
    from transformers import HubertConfig, HubertModel

    config = HubertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        conv_dim=(16, 16, 16, 16, 16, 16, 16), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    )  # fmt: skip
    HubertModel(config).eval().save_pretrained(folder)
    return folder


def test_hubert_features_from_a_local_folder(tmp_path):
    folder = _tiny_hubert(tmp_path / "hubert")
    features = HubertFeatures(folder)  # layer 6 asked, the tiny model has 2
    assert features.layer == 2 and features.dim == 32
    vector = features(Audio(speech_like(1.0, 22_050, 4), 22_050))
    assert vector.shape == (32,) and np.all(np.isfinite(vector))
    other = features(Audio(speech_like(1.0, 22_050, 5, comb_db=10), 22_050))
    assert not np.allclose(vector, other)
    assert make_feature_set("hubert-l6", 1, **features.params()).layer == 2
    with pytest.raises(WeightsError, match="cannot load HuBERT"):
        HubertFeatures(tmp_path / "missing")


def test_hubert_features_from_the_hub_cache_by_id(hub_cache, tmp_path):
    from tests.hub_cache import add_to_hub_cache

    folder = _tiny_hubert(tmp_path / "hubert")
    add_to_hub_cache(hub_cache, HubertFeatures.DEFAULT_MODEL, {p.name: p for p in folder.iterdir()})
    features = HubertFeatures()  # facebook/hubert-base-ls960, found offline in the cache
    assert features.dim == 32 and features.params()["model"] == HubertFeatures.DEFAULT_MODEL


def test_unknown_or_newer_feature_sets_are_refused():
    with pytest.raises(BarkkitError, match="unknown feature set"):
        make_feature_set("mfcc")
    with pytest.raises(BarkkitError, match="version 99"):
        make_feature_set("encodec-comb", 99)


# ---------------------------------------------------------------------------------------------------- model file


def test_bundled_model_holds_no_untrusted_types_and_matches_its_features():
    import skops.io

    assert BUNDLED_MODEL.is_file() and metadata_path(BUNDLED_MODEL).is_file()
    untrusted = skops.io.get_untrusted_types(file=BUNDLED_MODEL)
    assert set(untrusted) <= set(TRUSTED_TYPES)
    assert all(name.split(".")[0] in ("sklearn", "numpy", "builtins") for name in TRUSTED_TYPES)
    metadata = json.loads(metadata_path(BUNDLED_MODEL).read_text())
    assert metadata["feature_set"] == CombFeatures.name and metadata["feature_version"] == CombFeatures.version
    assert 0.0 < metadata["threshold"] < 1.0
    detector = Detector.load()
    assert detector.threshold == metadata["threshold"] and detector.pipeline.n_features_in_ == CombFeatures().dim


def test_a_model_with_another_feature_version_or_untrusted_types_is_refused(tmp_path):
    import skops.io
    from pathlib import PurePosixPath

    from sklearn.preprocessing import FunctionTransformer

    model = tmp_path / "m.skops"
    shutil.copy(BUNDLED_MODEL, model)
    metadata = json.loads(metadata_path(BUNDLED_MODEL).read_text())
    metadata_path(model).write_text(json.dumps({**metadata, "feature_version": metadata["feature_version"] + 1}))
    with pytest.raises(BarkkitError, match="retrain"):
        Detector.load(model)
    metadata_path(model).write_text(json.dumps(metadata))
    skops.io.dump(FunctionTransformer(func=PurePosixPath), model)  # a type nobody vetted
    with pytest.raises(WeightsError, match="not trusted"):
        Detector.load(model)
    metadata_path(model).unlink()
    with pytest.raises(WeightsError, match=r"\.json"):
        Detector.load(model)
    other = tmp_path / "notes.txt"
    other.write_text("not a model")
    with pytest.raises(WeightsError, match=r"notes.txt: not a detector model; give the \.skops file"):
        Detector.load(other)


def test_bundled_model_separates_shared_bark_and_human_clips(detector_data):
    rows = list(csv.DictReader(open(detector_data / "manifest.csv", newline="")))
    picked = {
        "bark": [r for r in rows if r["source"] == "Ydoit/bark"][::20][:6],
        "real": [r for r in rows if r["source"] == "resemble-ai/Resemblyzer"][::25][:4] + [r for r in rows if r["source"] == "coqui-ai/TTS"][:2],
        "other_tts": [r for r in rows if r["label"] == "other_tts"][:3],
    }
    detector = Detector.load()
    scores = {label: [detector.score(detector_data / r["path"]) for r in chosen] for label, chosen in picked.items()}
    assert all(0.0 <= s <= 1.0 for group in scores.values() for s in group)
    assert min(scores["bark"]) > max(scores["real"] + scores["other_tts"])
    assert sum(s >= detector.threshold for s in scores["bark"]) >= 5
    assert not any(s >= detector.threshold for s in scores["real"] + scores["other_tts"])
    # the same Bark clip as a 44.1 kHz MP3 is still Bark
    audio = load_audio(detector_data / picked["bark"][0]["path"], sample_rate=44_100)
    assert detector.score(audio) >= detector.threshold


# ---------------------------------------------------------------------------------------------------- training


def _synthetic_data(folder, n=4):
    """bark/<source>/ clips carry the 600 Hz trace; real/ and other_tts/ clips do not. Rates and lengths vary."""
    for label, comb, sources in (("bark", 22, ("gen_a", "gen_b")), ("real", None, ("reader_a", "reader_b")), ("other_tts", None, ("tts_x",))):
        for s, source in enumerate(sources):
            (folder / label / source).mkdir(parents=True)
            for i in range(n):
                rate = (16_000, 22_050, 24_000)[(i + s) % 3]
                seed = hash((label, source, i)) % 10_000
                soundfile.write(folder / label / source / f"{i}.flac", speech_like(2.0 + i % 2, rate, seed, comb_db=comb), rate)
    return folder


@pytest.fixture
def run():
    cli.use_plugins(load_plugins())
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(cli, [str(a) for a in args])

    yield invoke
    cli.use_plugins(None)


def test_train_then_evaluate_a_tiny_model(run, tmp_path):
    data = _synthetic_data(tmp_path / "data")
    out = tmp_path / "tiny.skops"
    result = run("-q", "detector", "train", "--data", data, "--out", out, "--augment", 1, "--jobs", 1)
    assert result.exit_code == 0, result.output
    assert "leave-one-source-out" in result.output and "ROC-AUC" in result.output
    metadata = json.loads(out.with_suffix(".json").read_text())
    assert metadata["training"]["clips"]["bark"] == {"gen_a": 4, "gen_b": 4}
    assert metadata["leave_one_source_out"]["clean"]["roc_auc"] > 0.9
    detector = Detector.load(out)
    traced = detector.score(Audio(speech_like(2.5, 24_000, 777, comb_db=22), 24_000))
    plain = detector.score(Audio(speech_like(2.5, 24_000, 777), 24_000))
    assert traced > detector.threshold > plain

    plot = tmp_path / "curves.png"
    result = run("detector", "evaluate", "--data", data, "--model", out, "--plot", plot, "--jobs", 1)
    assert result.exit_code == 0, result.output
    assert "ROC-AUC 1.000" in result.output and "label other_tts" in result.output and "gen_b [bark]" in result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # barkkit detect with this model instead of the bundled one
    clip = tmp_path / "traced.wav"
    soundfile.write(clip, speech_like(2.5, 32_000, 778, comb_db=22), 32_000)
    line = json.loads(run("detect", clip, "--model", out, "--json").stdout)
    assert line["is_bark"] is True and line["bark_probability"] == pytest.approx(detector.score(clip), abs=1e-5)


def test_train_on_hubert_features(tmp_path):
    from barkkit_detect.dataset import read_clips
    from barkkit_detect.training import train

    hubert = _tiny_hubert(tmp_path / "hubert")
    clips = read_clips(_synthetic_data(tmp_path / "data", n=2))
    features = HubertFeatures(hubert)
    pipeline, threshold, metadata = train(clips, features, n_augment=0)
    model = Detector(pipeline, features, threshold, metadata).save(tmp_path / "h.skops")
    loaded = Detector.load(model)
    assert loaded.features.name == "hubert-l6" and loaded.features.dim == 32
    assert 0.0 <= loaded.score(clips[0].path) <= 1.0


def test_evaluate_plot_without_matplotlib_is_one_clear_error(run, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    data = _synthetic_data(tmp_path / "data", n=1)
    result = run("detector", "evaluate", "--data", data, "--plot", tmp_path / "x.png")
    assert result.exit_code == 1 and "needs matplotlib" in result.stderr


# ---------------------------------------------------------------------------------------------------- barkkit detect


@pytest.fixture
def clips_folder(tmp_path):
    """Files of several formats, rates and channel counts, one nested two folders down, and one broken file."""
    folder = tmp_path / "clips"
    (folder / "deeper" / "still").mkdir(parents=True)
    traced = speech_like(3.0, 44_100, 11, comb_db=20)
    soundfile.write(folder / "stereo.ogg", np.stack([traced, traced], axis=1), 44_100, format="OGG", subtype="VORBIS")
    soundfile.write(folder / "deeper" / "voice.mp3", speech_like(3.0, 22_050, 12), 22_050, format="MP3")
    soundfile.write(folder / "deeper" / "still" / "low.wav", speech_like(2.0, 16_000, 13), 16_000, subtype="PCM_16")
    (folder / "deeper" / "broken.wav").write_bytes(b"RIFF this is not audio")
    (folder / "notes.txt").write_text("not audio, not picked up from a folder")
    return folder


def test_detect_json_lines_with_an_unreadable_file(run, clips_folder):
    result = run("detect", clips_folder, "--json")
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    by_name = {line["path"].split("/")[-1]: line for line in lines}
    assert set(by_name) == {"stereo.ogg", "voice.mp3", "low.wav", "broken.wav"}
    assert set(by_name["broken.wav"]) == {"path", "error"} and "broken.wav" in by_name["broken.wav"]["error"]
    threshold = Detector.load().threshold
    for name in ("stereo.ogg", "voice.mp3", "low.wav"):
        line = by_name[name]
        assert set(line) == {"path", "bark_probability", "is_bark"}
        assert 0.0 <= line["bark_probability"] <= 1.0
        assert line["is_bark"] == (line["bark_probability"] >= threshold)

    good = run("detect", clips_folder / "stereo.ogg", clips_folder / "deeper" / "voice.mp3", "--json")
    assert good.exit_code == 0 and len(good.stdout.splitlines()) == 2


def test_detect_threshold_overrides_the_models(run, clips_folder):
    files = [clips_folder / "stereo.ogg", clips_folder / "deeper" / "still" / "low.wav"]
    everything = [json.loads(line) for line in run("detect", *files, "--json", "--threshold", 0).stdout.splitlines()]
    assert [line["is_bark"] for line in everything] == [True, True]
    cut = (everything[0]["bark_probability"] + everything[1]["bark_probability"]) / 2
    split = [json.loads(line)["is_bark"] for line in run("detect", *files, "--json", "--threshold", cut).stdout.splitlines()]
    assert split[0] != split[1]


def test_detect_table(run, clips_folder):
    result = run("detect", clips_folder)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert "bark_probability" in lines[0] and "path" in lines[0]
    assert any("low.wav" in line and ("BARK" in line or "not bark" in line) for line in lines)
    assert any("broken.wav" in line and "error" in line for line in lines)
    assert "4 file(s)" in result.stderr and "1 unreadable" in result.stderr
    assert run("detect", clips_folder / "nothing-here").exit_code == 1


class PeakDetector(AudioDetector):
    """A toy detector from a test plugin: the 'probability' is the clip's peak amplitude."""

    name = "peak"
    threshold = 0.25

    @classmethod
    def load(cls, path=None):
        return cls()

    def score(self, audio):
        audio = audio if isinstance(audio, Audio) else load_audio(audio)
        return float(min(1.0, np.max(np.abs(audio.samples))))


class PeakPlugin:
    @hookimpl
    def register_detectors(self, register):
        register(PeakDetector)


def test_a_plugin_detector_is_picked_by_name(tmp_path):
    plugins = load_plugins(extra=[PeakPlugin()])
    assert {"bark-detector", "peak"} <= set(plugins.detectors)
    assert plugins.detectors.get("bark-detector") is Detector
    soundfile.write(tmp_path / "quiet.wav", 0.2 * np.sin(np.arange(8000) / 5.0), 16_000)
    cli.use_plugins(plugins)
    try:
        result = CliRunner().invoke(cli, ["detect", str(tmp_path / "quiet.wav"), "--json", "--detector", "peak"])
        missing = CliRunner().invoke(cli, ["detect", str(tmp_path / "quiet.wav"), "--detector", "nope"])
    finally:
        cli.use_plugins(None)
    line = json.loads(result.stdout)
    assert result.exit_code == 0 and line["bark_probability"] == pytest.approx(0.2, abs=1e-3) and line["is_bark"] is False
    assert missing.exit_code == 1 and "unknown detector 'nope'" in missing.stderr and "peak" in missing.stderr
