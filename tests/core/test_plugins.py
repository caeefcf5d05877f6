"""Plugin loading, registries, and one test per hookspec (a meta-test enforces that)."""

import inspect
import sys

import click
import pytest
from click.testing import CliRunner

from barkkit import AudioDetector, hookimpl, hookspecs, load_plugins
from barkkit.cli import cli
from barkkit.errors import PluginError
from barkkit.plugins import Registry
from tests.core import toy_plugin


def test_registry_refuses_a_duplicate_name_and_names_both_plugins():
    registry: Registry[type] = Registry("stage")
    registry.add(toy_plugin.ToySemantic, plugin="first")
    with pytest.raises(PluginError, match="registered twice, by plugins 'first' and 'second'"):
        registry.add(toy_plugin.ToySemantic, plugin="second")
    with pytest.raises(PluginError, match="unknown stage 'nope'; known stages: toy.semantic"):
        registry.get("nope")


def test_two_plugins_registering_one_stage_name_is_an_error():
    class Copycat:
        @staticmethod
        @hookimpl
        def register_stages(register):
            register(toy_plugin.ToySemantic)

    plugins = load_plugins(entry_points_group=None, extra=[toy_plugin, Copycat])
    with pytest.raises(PluginError, match="'toy.semantic' is registered twice"):
        _ = plugins.stages


def test_built_in_plugins_load_from_entry_points():
    plugins = load_plugins()
    assert {"bark", "encodec", "vocos", "detect"} <= set(plugins.plugin_names())


def test_environment_selects_and_blocks_plugins(monkeypatch):
    monkeypatch.setenv("BARKKIT_PLUGINS", "encodec, vocos")
    assert load_plugins().plugin_names() == ["encodec", "vocos"]
    monkeypatch.delenv("BARKKIT_PLUGINS")
    monkeypatch.setenv("BARKKIT_BLOCK_PLUGINS", "vocos")
    names = load_plugins().plugin_names()
    assert "vocos" not in names and "encodec" in names


def test_registering_and_unregistering_a_plugin_object():
    plugins = load_plugins(entry_points_group=None)
    name = plugins.register(toy_plugin, name="toy")
    try:
        assert "toy.fine" in plugins.stages
        assert plugins.stages.providers["toy.fine"] == "toy"
    finally:
        plugins.unregister(name)
    assert "toy.fine" not in plugins.stages


# One test per hook. ------------------------------------------------------------------------------------------


def test_hook_register_stages():
    plugins = load_plugins(entry_points_group=None, extra=[toy_plugin])
    assert list(plugins.stages) == ["toy.coarse", "toy.fine", "toy.semantic"]
    assert plugins.stages.get("toy.coarse") is toy_plugin.ToyCoarse


def test_hook_register_decoders():
    plugins = load_plugins(entry_points_group=None, extra=[toy_plugin])
    assert plugins.decoders.get("toy.decoder") is toy_plugin.ToyDecoder


def test_hook_register_voices():
    source = toy_plugin.ToyVoices()

    class Voices:
        @staticmethod
        @hookimpl
        def register_voices(register):
            register(source)

    plugins = load_plugins(entry_points_group=None, extra=[Voices])
    assert plugins.voice_sources.get("toy.voices") is source


def test_hook_register_detectors():
    class LoudnessDetector(AudioDetector):
        name = "toy.loudness"

        @classmethod
        def load(cls, path=None):
            return cls()

        def score(self, audio):
            return 0.5

    class Detectors:
        @staticmethod
        @hookimpl
        def register_detectors(register):
            register(LoudnessDetector)

    plugins = load_plugins(entry_points_group=None, extra=[Detectors])
    assert plugins.detectors.get("toy.loudness").load().score(None) == 0.5


def test_hook_register_commands():
    @click.command(name="toy-hello")
    def hello():
        """Say hello from a plugin."""
        click.echo("hello from toy")

    class Commands:
        @staticmethod
        @hookimpl
        def register_commands(cli):
            cli.add_command(hello)

    cli.use_plugins(load_plugins(extra=[Commands]))
    try:
        runner = CliRunner()
        listing = runner.invoke(cli, ["--help"])
        assert "toy-hello" in listing.output and "Say hello from a plugin." in listing.output
        assert runner.invoke(cli, ["toy-hello"]).output == "hello from toy\n"
    finally:
        cli.use_plugins(None)
    assert "toy-hello" not in CliRunner().invoke(cli, ["--help"]).output


def test_every_hookspec_has_a_test_and_a_docstring():
    hooks = [name for name, value in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("register_")]
    assert len(hooks) == 5
    module = sys.modules[__name__]
    for hook in hooks:
        assert hasattr(module, f"test_hook_{hook}"), f"hook {hook} has no test_hook_{hook} in {__name__}"
        assert getattr(hookspecs, hook).__doc__, f"hook {hook} has no docstring"
