import numpy as np
import pytest

from barkkit import CoarseTokens, FineTokens, Generation, Pipeline, SemanticTokens, Voice, load_plugins
from barkkit.errors import PipelineError, PluginError
from tests.core import toy_plugin
from tests.core.toy_plugin import TOY_SPEC, ToyCoarse, ToyDecoder, ToyFine, ToySemantic


@pytest.fixture
def plugins():
    return load_plugins(entry_points_group=None, extra=[toy_plugin])


@pytest.fixture
def pipeline(plugins):
    return Pipeline.from_spec(TOY_SPEC, plugins=plugins)


def test_a_pipeline_from_objects_runs_text_to_audio():
    pipeline = Pipeline([ToySemantic(), ToyCoarse(), ToyFine()], ToyDecoder())
    generation = pipeline.generate("hello", seed=3)
    assert isinstance(generation, Generation)
    assert generation.text == "hello" and len(generation.semantic) == 10
    assert generation.coarse.shape == (2, 15) and generation.fine.shape == (8, 15)
    assert len(generation.audio) == 15 * 320 and generation.sample_rate == 24_000
    assert np.array_equal(np.asarray(generation.fine)[:2], np.asarray(generation.coarse))


def test_the_chain_is_checked_when_built():
    with pytest.raises(PipelineError, match="'toy.semantic' produces semantic tokens but 'toy.fine' consumes coarse"):
        Pipeline([ToySemantic(), ToyFine()], ToyDecoder())
    with pytest.raises(PipelineError, match="'toy.coarse' produces coarse tokens but 'toy.decoder' consumes fine"):
        Pipeline([ToySemantic(), ToyCoarse()], ToyDecoder())


def test_the_chain_is_checked_from_names_before_any_weights_load(plugins):
    loaded = []

    class HeavyFine(ToyFine):
        name = "toy.heavy"

        @classmethod
        def load(cls, model=None, *, device="cpu", mode="exact"):
            loaded.append(cls)
            return cls()

    plugins.stages.add(HeavyFine, plugin="test")
    with pytest.raises(PipelineError, match="produces semantic tokens but 'toy.heavy' consumes coarse"):
        Pipeline.from_spec({**TOY_SPEC, "coarse": False, "fine": "toy.heavy"}, plugins=plugins)
    assert loaded == []


def test_same_seed_same_result_and_the_seed_is_recorded(pipeline):
    first, second = pipeline.generate("abc", seed=11), pipeline.generate("abc", seed=11)
    assert first.fine == second.fine and first.seed == 11
    assert pipeline.generate("abc", seed=12).semantic != first.semantic
    unseeded = pipeline.generate("abc")
    assert isinstance(unseeded.seed, int)
    assert pipeline.generate("abc", seed=unseeded.seed).fine == unseeded.fine


@pytest.mark.parametrize("seed", [2**70, 1.5, "7", True])
def test_a_seed_torch_cannot_take_is_a_clear_error(pipeline, seed):
    with pytest.raises(PipelineError, match="seed must be a whole number from 0 to 2\\*\\*64 - 1"):
        pipeline.generate("hello", seed=seed)
    with pytest.raises(PipelineError, match="seed must be a whole number"):
        pipeline.generate_batch(["a", "b"], seeds=[1, seed])


def test_numpy_integers_are_seeds(pipeline):
    assert pipeline.generate("hello", seed=np.int64(5)).fine == pipeline.generate("hello", seed=5).fine


def test_any_part_of_the_chain_runs(pipeline):
    full = pipeline.generate("part", seed=5)
    semantic_only = pipeline.run("part", seed=5, until="semantic")
    assert semantic_only.semantic == full.semantic and semantic_only.coarse is None
    from_coarse = pipeline.run(full.coarse, seed=0)
    assert from_coarse.semantic is None and from_coarse.fine.shape == full.fine.shape
    audio_only = pipeline.run(full.fine)
    assert np.array_equal(audio_only.audio.samples, full.audio.samples)
    with pytest.raises(PipelineError, match="cannot go from fine to semantic"):
        pipeline.run(full.fine, until="semantic")


def test_options_go_to_the_stages_that_declare_them(pipeline):
    assert len(pipeline.generate("ab", seed=0, tokens_per_char=5).semantic) == 10
    with pytest.raises(PipelineError, match="unknown option.*no_such_knob.*accepted: temperature, tokens_per_char"):
        pipeline.generate("ab", no_such_knob=1)
    with pytest.raises(PipelineError, match="unknown option.*tokens_per_char"):
        pipeline.run(CoarseTokens(np.zeros((2, 3), dtype=int)), tokens_per_char=2)


def test_empty_text_is_refused(pipeline):
    with pytest.raises(PipelineError, match="text is empty"):
        pipeline.generate("   ")


def test_a_stage_returning_the_wrong_type_is_caught():
    class Liar(ToySemantic):
        name = "toy.liar"

        def run(self, value, **kwargs):
            return CoarseTokens(np.zeros((2, 1), dtype=int))

    with pytest.raises(PluginError, match="'toy.liar' returned CoarseTokens, but declares that it produces semantic"):
        Pipeline([Liar()]).generate("x", seed=0)


def test_spec_from_toml_and_unknown_names(plugins, tmp_path):
    spec = tmp_path / "pipeline.toml"
    spec.write_text('[pipeline]\nsemantic = "toy.semantic"\ncoarse = "toy.coarse"\nfine = {name = "toy.fine"}\ndecoder = "toy.decoder"\n')
    pipeline = Pipeline.from_spec(spec, plugins=plugins)
    assert [step.name for step in pipeline.steps] == ["toy.semantic", "toy.coarse", "toy.fine", "toy.decoder"]
    with pytest.raises(PluginError, match="unknown stage 'my_plugin.fast_fine'; known stages: toy.coarse"):
        Pipeline.from_spec({**TOY_SPEC, "fine": "my_plugin.fast_fine"}, plugins=plugins)
    with pytest.raises(PipelineError, match="unknown pipeline key.*colour"):
        Pipeline.from_spec({**TOY_SPEC, "colour": "blue"}, plugins=plugins)
    with pytest.raises(PipelineError, match="unknown mode 'turbo'"):
        Pipeline.from_spec({**TOY_SPEC, "mode": "turbo"}, plugins=plugins)
    bad = tmp_path / "bad.toml"
    bad.write_text("semantic = = 1")
    with pytest.raises(PipelineError, match="bad.toml: not a valid TOML"):
        Pipeline.from_spec(bad, plugins=plugins)


def test_an_explicit_stage_list_and_a_partial_chain(plugins):
    pipeline = Pipeline.from_spec({"stages": ["toy.coarse", "toy.fine"], "decoder": False}, plugins=plugins)
    generation = pipeline.run(SemanticTokens([1, 2, 3]), seed=1)
    assert isinstance(generation.fine, FineTokens) and generation.audio is None


def test_generation_saves_a_voice_and_a_voice_continues_it(pipeline, tmp_path):
    generation = pipeline.generate("voice me", seed=2)
    path = generation.save_voice(tmp_path / "voice.npz")
    voice = Voice.from_npz(path)
    assert voice.fine == generation.fine
    follow_up = pipeline.generate("next", voice=path, seed=2)
    assert follow_up.voice.semantic == generation.semantic
    assert int(follow_up.semantic[0]) == int(generation.semantic[-1])
    assert Voice.load(generation).coarse == generation.coarse
    partial = pipeline.run("x", seed=0, until="coarse")
    with pytest.raises(PipelineError, match="give the value to go on from, e.g. generation.semantic"):
        pipeline.run(partial, until="fine")
    assert pipeline.run(partial.coarse, seed=0, until="fine").fine is not None
    with pytest.raises(Exception, match="has no fine"):
        partial.save_voice(tmp_path / "nope.npz")
    assert not (tmp_path / "nope.npz").exists()


def test_a_batch_keeps_each_items_seed_and_voice(pipeline, prompts_dir):
    texts = ["one", "second text", "3"]
    batch = pipeline.generate_batch(texts, voices=[None, str(prompts_dir / "announcer.npz"), None], seeds=[4, 5, 6])
    for text, seed, voice, generation in zip(texts, [4, 5, 6], [None, str(prompts_dir / "announcer.npz"), None], batch):
        single = pipeline.generate(text, voice=voice, seed=seed)
        assert generation.fine == single.fine and generation.seed == seed
        assert np.array_equal(generation.audio.samples, single.audio.samples)
    assert [g.seed for g in pipeline.generate_batch(texts, seeds=10)] == [10, 11, 12]
    with pytest.raises(PipelineError, match="text 2 of the batch is empty"):
        pipeline.generate_batch(["a", " "])
    with pytest.raises(PipelineError, match="text 2 of the batch must be a string, got int"):
        pipeline.generate_batch(["a", 5])
    with pytest.raises(PipelineError, match="a list of texts, not one string"):
        pipeline.generate_batch("abc")  # not three one-letter texts
    with pytest.raises(PipelineError, match="got 3 texts but 1 seeds; give one per text, or one int for all"):
        pipeline.generate_batch(texts, seeds=[1])
    with pytest.raises(PipelineError, match="got 3 texts but 2 voices; give one per text, or one voice for all"):
        pipeline.generate_batch(texts, voices=[None, None])


def test_a_batch_through_stages_that_run_one_at_a_time_reports_inputs_done(pipeline):
    seen = []
    pipeline.generate_batch(["one", "two", "three"], seeds=1, progress=lambda step, done, total: seen.append((step, done, total)))
    assert [(done, total) for step, done, total in seen if step == seen[0][0]] == [(1, 3), (2, 3), (3, 3)]
