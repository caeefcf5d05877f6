"""Plugin loading and the registries of stages, decoders, voice sources and detectors.

Built-in plugins are found through the ``barkkit`` entry point group exactly as third-party ones are. Two
environment variables choose what loads (comma-separated entry point names):

- ``BARKKIT_PLUGINS``: load only these plugins;
- ``BARKKIT_BLOCK_PLUGINS``: never load these.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Generic, TypeVar

import click
import pluggy

from barkkit import hookspecs
from barkkit.errors import PluginError

if TYPE_CHECKING:  # the interfaces import torch: the registries only name them
    from barkkit.detection import AudioDetector
    from barkkit.stage import Decoder, Stage
    from barkkit.voice import VoiceSource

__all__ = ["Plugins", "Registry", "load_plugins", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "barkkit"
T = TypeVar("T")


def _names_from_env(variable: str) -> set[str] | None:
    value = os.environ.get(variable)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def _check_names(names: set[str] | None, installed: set[str], where: str, *, error: bool = False) -> None:
    """Say which of ``names`` no installed plugin has: an error for a list of the only ones to load (a typo there
    would load nothing), a warning for a list of ones to block."""
    unknown = sorted((names or set()) - installed)
    if not unknown:
        return
    message = (f"{where} names no installed plugin called {', '.join(unknown)}; installed plugins: "
               f"{', '.join(sorted(installed)) or 'none'}")
    if error:
        raise PluginError(message)
    warnings.warn(message, UserWarning, stacklevel=3)


@dataclass
class Registry(Generic[T]):
    """Named things of one kind (``what``: "stage", "decoder", ...), each remembered with the plugin that gave it."""

    what: str
    entries: dict[str, T] = field(default_factory=dict)
    providers: dict[str, str] = field(default_factory=dict)

    def add(self, item: T, *, plugin: str, name: str | None = None) -> None:
        name = name or getattr(item, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin '{plugin}' registered a {self.what} without a name: set its `name` attribute")
        if name in self.entries:
            raise PluginError(
                f"{self.what} '{name}' is registered twice, by plugins '{self.providers[name]}' and '{plugin}'; "
                f"block one with BARKKIT_BLOCK_PLUGINS={plugin}"
            )
        self.entries[name] = item
        self.providers[name] = plugin

    def get(self, name: str) -> T:
        try:
            return self.entries[name]
        except KeyError:
            known = ", ".join(sorted(self.entries)) or "none"
            raise PluginError(f"unknown {self.what} '{name}'; known {self.what}s: {known}") from None

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.entries))

    def __len__(self) -> int:
        return len(self.entries)


class Plugins:
    """A pluggy plugin manager with the registries its plugins fill (built lazily, once each)."""

    def __init__(self, manager: pluggy.PluginManager) -> None:
        self.manager = manager

    def _collect(self, hook_name: str, registry: Registry[T]) -> Registry[T]:
        """Fill ``registry`` from every plugin's ``hook_name`` hook (a ``register_*`` hook of ``hookspecs``)."""
        hook = getattr(self.manager.hook, hook_name)
        # Call each implementation on its own so the registry knows which plugin provided what.
        for impl in reversed(hook.get_hookimpls()):
            def register(item: T, name: str | None = None, _plugin: str = impl.plugin_name) -> None:
                registry.add(item, plugin=_plugin, name=name)

            impl.function(register=register)
        return registry

    @cached_property
    def stages(self) -> Registry[type[Stage]]:
        return self._collect("register_stages", Registry("stage"))

    @cached_property
    def decoders(self) -> Registry[type[Decoder]]:
        return self._collect("register_decoders", Registry("decoder"))

    @cached_property
    def voice_sources(self) -> Registry[VoiceSource]:
        return self._collect("register_voices", Registry("voice source"))

    @cached_property
    def detectors(self) -> Registry[type[AudioDetector]]:
        return self._collect("register_detectors", Registry("detector"))

    def add_commands(self, cli: click.Group) -> None:
        self.manager.hook.register_commands(cli=cli)

    def plugin_names(self) -> list[str]:
        return sorted(name for name, plugin in self.manager.list_name_plugin() if plugin is not None)

    def register(self, plugin: object, name: str | None = None) -> str:
        """Register a plugin object (a module or instance with hookimpls); registries are rebuilt next time."""
        registered = self.manager.register(plugin, name=name)
        if registered is None:
            raise PluginError(f"plugin '{name}' is blocked or already registered")
        self.manager.check_pending()
        self._forget_registries()
        return registered

    def unregister(self, name: str) -> None:
        self.manager.unregister(name=name)
        self._forget_registries()

    def _forget_registries(self) -> None:
        for attribute in ("stages", "decoders", "voice_sources", "detectors"):
            self.__dict__.pop(attribute, None)


def load_plugins(
    *,
    entry_points_group: str | None = ENTRY_POINT_GROUP,
    only: Iterable[str] | None = None,
    block: Iterable[str] | None = None,
    extra: Iterable[object] = (),
) -> Plugins:
    """Build a plugin manager and load plugins from entry points.

    Args:
        entry_points_group: the entry point group to load; None loads none (tests build their own).
        only: load only these entry point names (default: ``BARKKIT_PLUGINS``, else all).
        block: never load these (default: ``BARKKIT_BLOCK_PLUGINS``).
        extra: plugin objects to register as well, after the entry points.
    """
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    only_names = set(only) if only is not None else _names_from_env("BARKKIT_PLUGINS")
    blocked = set(block) if block is not None else (_names_from_env("BARKKIT_BLOCK_PLUGINS") or set())
    for name in blocked:
        manager.set_blocked(name)
    if entry_points_group is not None:
        installed = entry_points(group=entry_points_group)
        _check_names(only_names, {ep.name for ep in installed}, "BARKKIT_PLUGINS" if only is None else "only=", error=True)
        _check_names(blocked, {ep.name for ep in installed}, "BARKKIT_BLOCK_PLUGINS" if block is None else "block=")
        for entry_point in installed:
            if entry_point.name in blocked or (only_names is not None and entry_point.name not in only_names):
                continue
            if manager.get_plugin(entry_point.name) is not None:
                continue
            try:
                plugin = entry_point.load()
            except Exception as exc:
                raise PluginError(
                    f"plugin '{entry_point.name}' ({entry_point.value}) failed to load: {exc}; "
                    f"block it with BARKKIT_BLOCK_PLUGINS={entry_point.name}"
                ) from exc
            manager.register(plugin, name=entry_point.name)
    for plugin in extra:
        manager.register(plugin)
    manager.check_pending()
    return Plugins(manager)
