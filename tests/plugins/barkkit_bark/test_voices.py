"""Preset voices by name: folders in BARKKIT_VOICE_PATH and the hub's speaker embeddings, offline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from barkkit.errors import VoiceError
from barkkit.pipeline import load_pipeline
from barkkit.plugins import load_plugins
from barkkit.voice import Voice
from barkkit_bark.voices import HubVoiceSource
from tests.hub_cache import add_to_hub_cache

PRESET = "v2/en_speaker_6"


def _hub_files(voice_file: Path, tmp_path: Path, names=(PRESET, "announcer")) -> dict[str, Path | str]:
    """suno/bark's layout: speaker_embeddings_path.json + speaker_embeddings/<name>_<key>.npy."""
    voice = np.load(voice_file)
    files: dict[str, Path | str] = {}
    index: dict[str, object] = {"repo_or_path": "ylacombe/bark-large"}
    for name in names:
        entry = {}
        for key in ("semantic_prompt", "coarse_prompt", "fine_prompt"):
            relative = f"speaker_embeddings/{name}_{key}.npy"
            local = tmp_path / relative.replace("/", "_")
            np.save(local, voice[key])
            files[relative] = local
            entry[key] = relative
        index[name] = entry
    files["speaker_embeddings_path.json"] = json.dumps(index)
    return files


def test_folder_presets_by_name(monkeypatch: pytest.MonkeyPatch, prompts_dir: Path) -> None:
    monkeypatch.setenv("BARKKIT_VOICE_PATH", str(prompts_dir))
    voice = Voice.load(PRESET, plugins=load_plugins())
    expected = np.load(prompts_dir / "v2" / "en_speaker_6.npz")
    np.testing.assert_array_equal(voice.coarse.array, expected["coarse_prompt"])
    np.testing.assert_array_equal(voice.fine.array, expected["fine_prompt"])


def test_preset_name_gives_the_same_tokens_as_the_file(
    monkeypatch: pytest.MonkeyPatch, prompts_dir: Path, suno_folder: Path
) -> None:
    monkeypatch.setenv("BARKKIT_VOICE_PATH", str(prompts_dir))
    pipeline = load_pipeline(suno_folder, decoder=False)
    by_name = pipeline.generate("Hi.", voice=PRESET, seed=5, max_gen_duration_s=0.5)
    by_file = pipeline.generate("Hi.", voice=str(prompts_dir / "v2" / "en_speaker_6.npz"), seed=5, max_gen_duration_s=0.5)
    no_voice = pipeline.generate("Hi.", seed=5, max_gen_duration_s=0.5)
    assert by_name.fine == by_file.fine
    assert by_name.coarse != no_voice.coarse  # the voice conditions the run


def test_hub_presets_from_the_cache_offline(hub_cache: Path, tmp_path: Path, voice_file: Path) -> None:
    add_to_hub_cache(hub_cache, "suno/bark", _hub_files(voice_file, tmp_path))
    source = HubVoiceSource()
    assert source.names() == ["announcer", PRESET]
    voice = source.find(PRESET)
    expected = np.load(voice_file)
    np.testing.assert_array_equal(voice.semantic.array, expected["semantic_prompt"])
    np.testing.assert_array_equal(voice.fine.array, expected["fine_prompt"])
    assert source.find("v2/xx_speaker_0") is None
    # Through the plugin's registered sources, with no BARKKIT_VOICE_PATH set.
    assert Voice.load(PRESET, plugins=load_plugins()).coarse == voice.coarse


def test_hub_presets_uncached_offline_is_a_clear_error(voice_file: Path) -> None:
    source = HubVoiceSource()
    for look_up in (source.names, lambda: source.find(PRESET)):
        with pytest.raises(VoiceError, match=r"not in the local cache and the hub cannot be reached .*hf download suno/bark"):
            look_up()
    with pytest.raises(VoiceError, match=f"unknown voice '{PRESET}'.*not in the local cache"):
        Voice.load(PRESET, plugins=load_plugins())


def test_hub_index_may_only_name_files_of_the_repository(hub_cache: Path, tmp_path: Path, voice_file: Path) -> None:
    files = _hub_files(voice_file, tmp_path, names=(PRESET,))
    index = json.loads(files["speaker_embeddings_path.json"])
    index[PRESET]["fine_prompt"] = "../../../etc/passwd"
    files["speaker_embeddings_path.json"] = json.dumps(index)
    add_to_hub_cache(hub_cache, "suno/bark", files)
    with pytest.raises(VoiceError, match="no valid fine_prompt path"):
        HubVoiceSource().find(PRESET)
