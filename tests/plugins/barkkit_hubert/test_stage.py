"""hubert.semantic: exactly the recipe's tokens (HubertModel hidden_states[9] + the LSTM quantizer), windows, refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import HubertModel

from barkkit.errors import AudioError
from barkkit.plugins import load_plugins
from barkkit.tokens import Audio, SemanticTokens
from barkkit_hubert import windows
from barkkit_hubert.stage import HubertSemantic
from barkkit_hubert.windows import frame_count

from .conftest import speechy


def recipe_tokens(hubert_folder, quantizer_path, samples: np.ndarray) -> np.ndarray:
    """The recipe, written out directly: HubertModel's hidden_states[9] for the raw 16 kHz waveform, then
    nn.LSTM(2 layers) on the (T, 768)-shaped features, [intermediate], fc, log-softmax over dim 1, argmax."""
    model = HubertModel.from_pretrained(hubert_folder).eval()
    state = torch.load(quantizer_path, weights_only=True)
    hidden = state["lstm.weight_hh_l0"].shape[1]
    lstm = torch.nn.LSTM(state["lstm.weight_ih_l0"].shape[1], hidden, 2, batch_first=True)
    lstm.load_state_dict({k.removeprefix("lstm."): v for k, v in state.items() if k.startswith("lstm.")})
    fc = torch.nn.Linear(state["fc.weight"].shape[1], state["fc.weight"].shape[0])
    fc.load_state_dict({"weight": state["fc.weight"], "bias": state["fc.bias"]})
    with torch.no_grad():
        outputs = model(torch.from_numpy(samples)[None], output_hidden_states=True)
        assert len(outputs.hidden_states) == 11  # 10 layers: layer 9 is not the last
        x, _ = lstm(outputs.hidden_states[9][0])  # (T, hidden): unbatched, as the recipe's get_token
        if "intermediate.weight" in state:
            intermediate = torch.nn.Linear(hidden, state["intermediate.weight"].shape[0])
            intermediate.load_state_dict({"weight": state["intermediate.weight"], "bias": state["intermediate.bias"]})
            x = intermediate(x)
        return torch.log_softmax(fc(x), dim=1).argmax(dim=1).numpy()


@pytest.mark.parametrize("layout", ["v0", "v0_info", "v1", "v1_bare"])
def test_tokens_equal_the_recipe(hubert_folder, quantizers, layout):
    samples = speechy(3.3, 16_000, seed=7)
    stage = HubertSemantic.load(hubert=hubert_folder, quantizer=quantizers[layout])
    assert stage.quantizer.info.version == (1 if layout.startswith("v1") else 0)
    tokens = stage.run(Audio(samples, 16_000), generator=torch.Generator())
    expected = recipe_tokens(hubert_folder, quantizers[layout], samples)
    assert isinstance(tokens, SemanticTokens) and len(tokens) == frame_count(samples.size) == 164
    assert np.array_equal(np.asarray(tokens), expected)
    assert len(np.unique(expected)) > 20  # tokens that vary: an equality that could fail


def test_layer_9_is_used_not_the_last(hubert_folder, quantizers):
    """The stage's features are hidden_states[9], which differ from the 10-layer model's last hidden state."""
    samples = speechy(2.0, 16_000, seed=8)
    stage = HubertSemantic.load(hubert=hubert_folder, quantizer=quantizers["v0"])
    model = HubertModel.from_pretrained(hubert_folder).eval()
    with torch.no_grad():
        x = torch.from_numpy(samples)[None]
        ours, outputs = stage._features(x), model(x, output_hidden_states=True)
    assert torch.equal(ours, outputs.hidden_states[9])
    assert not torch.allclose(ours, outputs.last_hidden_state)


def test_any_rate_and_channels_is_resampled_to_16k(hubert_folder, quantizers):
    import librosa

    stage = HubertSemantic.load(hubert=hubert_folder, quantizer=quantizers["v1"])
    samples = speechy(2.0, 44_100, seed=9)
    tokens = stage.run(Audio(samples, 44_100), generator=torch.Generator())
    resampled = librosa.resample(samples, orig_sr=44_100, target_sr=16_000, res_type="soxr_hq")
    assert np.array_equal(np.asarray(tokens), recipe_tokens(hubert_folder, quantizers["v1"], resampled))
    blocks = [samples[i : i + 7_000] for i in range(0, samples.size, 7_000)]  # a stream gives the same tokens
    assert stage.run_stream(blocks, 44_100) == tokens


def test_long_recordings_go_in_windows_with_the_lstm_carried(hubert_folder, quantizers, monkeypatch):
    """With windows shrunk (2 s, 0.5 s of context each side, 1 s kept), a 4.5-s recording takes 5 HuBERT calls of
    bounded length; its tokens are exactly one LSTM pass over the windows' kept features, and a stream in blocks
    of any size gives the same. Where windows do not matter (one window) tokens equal the whole-file recipe."""
    monkeypatch.setattr(windows, "WINDOW_SAMPLES", 32_000)
    monkeypatch.setattr(windows, "KEEP_FRAMES", 50)
    monkeypatch.setattr(windows, "CONTEXT_FRAMES", 25)
    stage = HubertSemantic.load(hubert=hubert_folder, quantizer=quantizers["v0_info"])
    samples = speechy(4.5, 16_000, seed=10)
    calls = []
    features = stage._features
    monkeypatch.setattr(stage, "_features", lambda w: calls.append(w.shape[1]) or features(w))
    tokens = stage.run(Audio(samples, 16_000), generator=torch.Generator())
    total = frame_count(samples.size)
    assert len(tokens) == total and len(calls) == 5 and max(calls) <= 32_000 + 320

    kept = []
    with torch.no_grad():
        for start in range(0, total, 50):
            first, last = max(0, start - 25), min(total, start + 75)
            end = samples.size if last == total else (last - 1) * 320 + 400
            window = features(torch.from_numpy(samples[first * 320 : end])[None])
            kept.append(window[:, start - first : min(start + 50, total) - first])
        expected, _ = stage.quantizer.tokens(torch.cat(kept, dim=1))
    assert np.array_equal(np.asarray(tokens), expected.numpy())
    streamed = stage.run_stream((samples[i : i + 3_001] for i in range(0, samples.size, 3_001)), 16_000)
    assert streamed == tokens
    short = samples[:30_000]  # under one window: the whole-file recipe exactly
    assert np.array_equal(np.asarray(stage.run(Audio(short, 16_000), generator=torch.Generator())),
                          recipe_tokens(hubert_folder, quantizers["v0_info"], short))


@pytest.mark.parametrize(
    "samples, message",
    [
        (np.zeros(16_000 * 3, np.float32), "silent"),
        (1e-4 * np.random.default_rng(0).standard_normal(16_000 * 3).astype(np.float32), "silent"),
        (speechy(0.6, 16_000), "0.60 s long"),
        (np.concatenate([speechy(0.5, 16_000), np.zeros(16_000 * 4, np.float32)]), "only 0.50 s"),
    ],
    ids=["digital-silence", "faint-noise", "too-short", "half-a-second-of-sound"],
)
def test_silence_and_too_little_sound_are_refused(hubert_folder, quantizers, samples, message):
    stage = HubertSemantic.load(hubert=hubert_folder, quantizer=quantizers["v0"])
    with pytest.raises(AudioError, match=message) as error:
        stage.run(Audio(samples, 16_000), generator=torch.Generator())
    assert "at least 1 s" in str(error.value) and "\n" not in str(error.value)


def test_the_stage_is_registered_through_its_entry_point():
    plugins = load_plugins()
    assert plugins.stages.get("hubert.semantic") is HubertSemantic
    assert plugins.stages.providers["hubert.semantic"] == "hubert"
    assert HubertSemantic.consumes is Audio and HubertSemantic.produces is SemanticTokens
