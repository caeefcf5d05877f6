import numpy as np
import pytest

from barkkit import Voice, load_plugins
from barkkit.errors import VoiceError
from barkkit.voice import FolderVoiceSource, find_preset, load_token_file
from tests.core import toy_plugin


def test_every_shared_prompt_loads(prompts_dir):
    files = sorted(prompts_dir.rglob("*.npz"))
    assert len(files) == 271
    for path in files:
        voice = Voice.from_npz(path)
        raw = np.load(path)
        assert np.array_equal(np.asarray(voice.semantic), raw["semantic_prompt"].astype(np.int64))
        assert voice.coarse.shape == raw["coarse_prompt"].shape
        assert voice.fine.shape[0] == 8


def test_announcer_is_uint16_and_loads(prompts_dir):
    raw = np.load(prompts_dir / "announcer.npz")
    assert raw["semantic_prompt"].dtype == np.uint16
    voice = Voice.load(str(prompts_dir / "announcer.npz"))
    assert np.asarray(voice.fine).dtype == np.int64


def test_save_round_trip_uses_barks_keys(prompts_dir, tmp_path):
    voice = Voice.from_npz(prompts_dir / "v2" / "en_speaker_6.npz")
    out = voice.save(tmp_path / "copy.npz")
    with np.load(out) as saved:
        assert sorted(saved.files) == ["coarse_prompt", "fine_prompt", "semantic_prompt"]
    assert Voice.from_npz(out).semantic == voice.semantic
    assert Voice.load(voice.to_dict()).fine == voice.fine


def _write(path, **arrays):
    np.savez(path, **arrays)
    return path


def _good():
    return {
        "semantic_prompt": np.arange(10),
        "coarse_prompt": np.zeros((2, 15), dtype=np.int64),
        "fine_prompt": np.zeros((8, 15), dtype=np.int32),
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("fine_prompt"), "missing key.*fine_prompt"),
        (lambda d: d.update(coarse_prompt=np.zeros((3, 15), dtype=int)), r"coarse_prompt.*shape \(2, T\)"),
        (lambda d: d.update(semantic_prompt=np.array([10_000])), "semantic_prompt.*out of range"),
        (lambda d: d.update(fine_prompt=np.zeros((8, 14), dtype=int)), "15 frames but fine_prompt has 14"),
        (lambda d: d.update(semantic_prompt=np.array([0.5])), "must be integers"),
    ],
)
def test_malformed_voice_files_are_refused_with_the_file_name(tmp_path, change, message):
    data = _good()
    change(data)
    path = _write(tmp_path / "bad.npz", **data)
    with pytest.raises(VoiceError, match=message) as error:
        Voice.from_npz(path)
    assert "bad.npz" in str(error.value)


def test_a_file_that_is_not_an_npz_is_refused(tmp_path):
    path = tmp_path / "voice.npz"
    path.write_text("not a zip file")  # numpy would call it pickled data and suggest unpickling it
    with pytest.raises(VoiceError, match=r"voice.npz: not an .npz token file \(not a zip archive\)") as error:
        Voice.from_npz(path)
    assert "pickle" not in str(error.value)
    with open(tmp_path / "array.npz", "wb") as file:  # an .npy array under an .npz name
        np.save(file, np.arange(3))
    with pytest.raises(VoiceError, match="array.npz: not an .npz token file"):
        Voice.from_npz(tmp_path / "array.npz")
    objects = dict(_good(), semantic_prompt=np.array([[1], [1, 2]], dtype=object))
    with pytest.raises(VoiceError, match="objects.npz: holds object arrays, which would have to be unpickled"):
        Voice.from_npz(_write(tmp_path / "objects.npz", **objects))
    with pytest.raises(VoiceError, match="no such file"):
        Voice.from_npz(tmp_path / "missing.npz")


def test_token_files_need_only_the_keys_asked_for(tmp_path):
    path = _write(tmp_path / "fine.npz", fine_prompt=np.zeros((8, 3), dtype=np.int64))
    assert list(load_token_file(path, require=["fine_prompt"])) == ["fine_prompt"]
    with pytest.raises(VoiceError, match="missing key"):
        load_token_file(path, require=["semantic_prompt"])


def test_folder_source_resolves_preset_names(prompts_dir):
    source = FolderVoiceSource([prompts_dir])
    names = source.names()
    assert "v2/en_speaker_6" in names and "announcer" in names and len(names) == 271
    assert source.find("v2/en_speaker_6").semantic == Voice.from_npz(prompts_dir / "v2" / "en_speaker_6.npz").semantic
    assert source.find("v2/nobody") is None
    assert source.find("../../etc/passwd") is None


def test_preset_names_go_through_registered_voice_sources(prompts_dir):
    voice = Voice.from_npz(prompts_dir / "de_speaker_3.npz")

    class VoicePlugin:
        @staticmethod
        @toy_plugin.hookimpl
        def register_voices(register):
            register(toy_plugin.ToyVoices({"my/voice": voice}))

    plugins = load_plugins(entry_points_group=None, extra=[VoicePlugin])
    assert Voice.load("my/voice", plugins=plugins) is voice
    with pytest.raises(VoiceError, match="unknown voice 'nobody'.*barkkit voices list"):
        find_preset("nobody", plugins=plugins)


def test_a_voices_source_note_round_trips_and_a_bad_one_is_ignored(tmp_path):
    import numpy as np

    from barkkit.voice import SOURCE_NOTE_KEY, Voice, read_source_note

    note = {"semantic": "hubert.semantic (...) over all 3.00 s of me.wav", "fine": "encodec (bark-small) ü"}
    voice = Voice(np.arange(10), np.zeros((2, 15), np.int64), np.zeros((8, 15), np.int64), note=note)
    path = voice.save(tmp_path / "v.npz")
    loaded = Voice.load(path)
    assert loaded.note == note and loaded.semantic == voice.semantic and read_source_note(path) == note
    with np.load(path) as npz:
        assert npz[SOURCE_NOTE_KEY].dtype.kind == "U"  # a plain unicode array: loads with allow_pickle=False
    odd = tmp_path / "odd.npz"
    np.savez(odd, semantic_prompt=np.arange(10), coarse_prompt=np.zeros((2, 15), np.int64),
             fine_prompt=np.zeros((8, 15), np.int64), **{SOURCE_NOTE_KEY: np.arange(3)})
    assert Voice.load(odd).note is None and read_source_note(odd) == {}
