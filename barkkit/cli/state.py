"""What every command receives with ``@click.pass_obj``: its own module, so that commands import it without
importing the command group that imports them."""

from __future__ import annotations

from dataclasses import dataclass, field

from barkkit.plugins import Plugins, load_plugins

__all__ = ["CliState"]


@dataclass
class CliState:
    """What every command receives with ``@click.pass_obj``."""

    quiet: bool = False
    _plugins: Plugins | None = field(default=None, repr=False)

    @property
    def plugins(self) -> Plugins:
        if self._plugins is None:
            self._plugins = load_plugins()
        return self._plugins
