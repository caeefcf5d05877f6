"""The ``barkkit`` command line: thin click wrappers over the library.

Plugins add commands through the ``register_commands(cli)`` hook. They are loaded when the command line is first
used (listed in ``--help`` or looked up), never at import. Every user error ends as one line on stderr and a
non-zero exit status; nothing is left half-written.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

import click

from barkkit.allocator import tune_allocator
from barkkit.cli.signals import Terminated, signals_unwind
from barkkit.cli.state import CliState
from barkkit.errors import BarkkitError
from barkkit.plugins import Plugins, load_plugins

__all__ = ["cli", "main", "CliState"]


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
                  line: str | None = None) -> None:
    """Warnings on the command line: one line each, without the source line Python shows by default."""
    click.echo(f"Warning: {message}", err=True)


class BarkkitGroup(click.Group):
    """A group that adds plugin commands lazily and turns every error into one line on stderr."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._plugins_added = False
        self._plugins: Plugins | None = None

    def use_plugins(self, plugins: Plugins | None) -> None:
        """Use this plugin set (tests pass their own); plugin commands are (re)added on next use."""
        for name in getattr(self, "_plugin_command_names", ()):
            self.commands.pop(name, None)
        self._plugins = plugins
        self._plugins_added = False

    def _add_plugin_commands(self, ctx: click.Context | None) -> None:
        if self._plugins_added:
            return
        self._plugins_added = True
        plugins = self._plugins or load_plugins()
        self._plugins = plugins
        before = set(self.commands)
        plugins.add_commands(self)
        self._plugin_command_names = set(self.commands) - before

    def _add_stage_flags(self, command: click.Command) -> None:
        """A command marked by ``stage_options`` gets a flag per option of the installed generation stages."""
        from barkkit.cli.options import StageOption, stage_flags
        from barkkit.tokens import CoarseTokens, SemanticTokens

        if not getattr(command.callback, "takes_stage_options", False) or self._plugins is None:
            return
        order = {str: 0, SemanticTokens: 1, CoarseTokens: 2}  # the generation stages, in the chain's order
        stages = sorted((self._plugins.stages.get(name) for name in self._plugins.stages),
                        key=lambda stage: order.get(stage.consumes, 3))
        command.params = [p for p in command.params if not isinstance(p, StageOption)]
        taken = {opt for p in command.params for opt in p.opts}
        command.params += [f for f in stage_flags(s for s in stages if s.consumes in order) if not set(f.opts) & taken]

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._add_plugin_commands(ctx)
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        self._add_plugin_commands(ctx)
        command = super().get_command(ctx, name)
        if command is not None:
            self._add_stage_flags(command)
        return command

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any) -> click.Context:
        extra.setdefault("obj", CliState())
        return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        if isinstance(ctx.obj, CliState) and ctx.obj._plugins is None:
            ctx.obj._plugins = self._plugins
        return super().invoke(ctx)

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:  # noqa: D401
        try:
            with warnings.catch_warnings(), signals_unwind():
                warnings.showwarning = _show_warning
                result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:  # click's name for Ctrl-C (KeyboardInterrupt) in a command
            click.echo("Error: interrupted", err=True)
            sys.exit(130)
        except click.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx else "barkkit"
            click.echo(f"Error: {exc.format_message()} (see '{command} --help')", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"Error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except BarkkitError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("Error: interrupted", err=True)
            sys.exit(130)
        except Terminated as exc:  # SIGTERM, SIGHUP: unwound like Ctrl-C, so no temporary file stays
            click.echo(f"Error: terminated by {exc}", err=True)
            sys.exit(128 + exc.signum)
        except Exception as exc:
            if os.environ.get("BARKKIT_DEBUG"):
                raise
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            click.echo(
                f"Error: unexpected {type(exc).__name__}: {message} (rerun with BARKKIT_DEBUG=1 for a traceback)",
                err=True,
            )
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=BarkkitGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or notes; errors only.")
@click.version_option(package_name="barkkit")
@click.pass_context
def cli(ctx: click.Context, quiet: bool) -> None:
    """barkkit: Bark text-to-audio, stage by stage, with plugins and a Bark-audio detector.

    \b
    Examples:
      barkkit generate "Hello there." -o hello.wav --voice v2/en_speaker_6 --seed 0
      barkkit semantic "Hello there." -o tokens.npz && barkkit coarse tokens.npz -o tokens.npz
      barkkit decode tokens.npz -o out.flac
      barkkit voices list
      barkkit plugins
      barkkit info                      # CPU features and the kernels each stage chooses
      barkkit detect clips/ --json
    """
    ctx.obj.quiet = ctx.obj.quiet or quiet


def main() -> None:
    """Console entry point."""
    tune_allocator()  # this process is ours: fewer page faults for Bark's large tensors (barkkit.allocator)
    cli.main(prog_name="barkkit")


def _add_builtin_commands() -> None:
    from barkkit.cli.detect import detect
    from barkkit.cli.generate import coarse, decode, fine, generate, semantic
    from barkkit.cli.info import info
    from barkkit.cli.plugins import plugins
    from barkkit.cli.serve import serve
    from barkkit.cli.voices import voices
    from barkkit.cli.voices_make import make

    voices.add_command(make)
    for command in (generate, semantic, coarse, fine, decode, voices, plugins, detect, info, serve):
        cli.add_command(command)


_add_builtin_commands()
