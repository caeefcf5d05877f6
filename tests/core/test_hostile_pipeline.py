"""Refusals that name their cause: negative seeds, empty token inputs, plugin names that are not installed."""

import numpy as np
import pytest

from barkkit import Pipeline, SemanticTokens, load_plugins
from barkkit.errors import PipelineError, PluginError
from barkkit.pipeline import check_seed
from barkkit.tokens import FineTokens
from tests.core import toy_plugin


@pytest.fixture
def pipeline():
    return Pipeline.from_spec(toy_plugin.TOY_SPEC, plugins=load_plugins(entry_points_group=None, extra=[toy_plugin]))


def test_a_negative_seed_is_refused_like_a_too_large_one(pipeline):
    messages = []
    for seed in (-5, 2**64, -(2**63)):
        with pytest.raises(PipelineError, match="seed must be a whole number from 0 to 2\\*\\*64 - 1") as error:
            pipeline.generate("hi", seed=seed)
        messages.append(str(error.value).rsplit(",", 1)[0])
    assert len(set(messages)) == 1
    assert check_seed(0) == 0 and check_seed(2**64 - 1) == 2**64 - 1


def test_empty_tokens_to_start_from_say_so(pipeline):
    with pytest.raises(PipelineError, match=r"the semantic tokens to start from are empty \(shape \(0,\)\)"):
        pipeline.run(SemanticTokens(np.zeros(0, np.int64)))
    with pytest.raises(PipelineError, match="the fine tokens to start from are empty"):
        pipeline.run(FineTokens(np.zeros((8, 0), np.int64)))


def test_only_plugins_that_are_not_installed_are_named(monkeypatch):
    monkeypatch.setenv("BARKKIT_PLUGINS", "bark, nonexistent, other")
    with pytest.raises(PluginError, match="BARKKIT_PLUGINS names no installed plugin called nonexistent, other; "
                                          "installed plugins: .*bark"):
        load_plugins()
    monkeypatch.delenv("BARKKIT_PLUGINS")
    with pytest.raises(PluginError, match="only= names no installed plugin called nope"):
        load_plugins(only=["nope"])
    monkeypatch.setenv("BARKKIT_BLOCK_PLUGINS", "nonexistent")  # blocking what is not there harms nothing: a warning
    with pytest.warns(UserWarning, match="BARKKIT_BLOCK_PLUGINS names no installed plugin called nonexistent"):
        assert "bark" in load_plugins().plugin_names()
