"""Options shared by the generation commands, and the progress display."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import click

from barkkit.errors import BarkkitError
from barkkit.pipeline import MODES, check_seed
from barkkit.stage import Stage

__all__ = ["model_options", "run_options", "quiet_option", "stage_options", "stage_flags", "StageOption",
           "audio_output_options", "collect_stage_options", "ProgressBars", "seed_callback", "input_files", "OUTPUT_NOTE"]


OUTPUT_NOTE = ("Written whole or not at all. A link is written through to its target; a device, FIFO or folder is "
               "refused.")
"""The end of every output option's help: what barkkit writes to (``barkkit.files``)."""


def seed_callback(_ctx: click.Context, _param: click.Parameter, seed: int | None) -> int | None:
    """Check a seed when the command line is read, before any work: the pipeline's own rule (0 to 2**64 - 1)."""
    if seed is None:
        return None
    try:
        return check_seed(seed)
    except BarkkitError as exc:
        raise click.BadParameter(str(exc)) from None


def _compose(*decorators: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def apply(function: Callable[..., Any]) -> Callable[..., Any]:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


def _set_quiet(ctx: click.Context, _param: click.Parameter, quiet: bool) -> None:
    if quiet and ctx.obj is not None:
        ctx.obj.quiet = True


# ``-q`` after a command's name does what ``barkkit -q`` does (for commands whose functions read ``state.quiet``)
quiet_option = click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_set_quiet,
                            help="No progress bars or notes.")

model_options = _compose(
    click.option("-m", "--model", default=None, help="Model name (bark, bark-small), hub id or local folder.  [default: bark-small]"),
    click.option("--device", default=None, help="Torch device: cpu, cuda, cuda:1, ...  [default: cpu]"),
    click.option("--mode", type=click.Choice(MODES), default=None, help="exact: token parity with the reference; fast: measured speed-ups.  [default: exact]"),
    click.option("--spec", "spec_file", type=click.Path(dir_okay=False), default=None, help="TOML pipeline spec naming stages and decoder (see README)."),
)

run_options = _compose(
    click.option("-v", "--voice", default=None, help="Voice: a preset name (v2/en_speaker_6) or an .npz file."),
    click.option("-s", "--seed", type=int, default=None, callback=seed_callback, help="Seed for a repeatable run (random, and reported, when left out)."),
    click.option("-q", "--quiet", is_flag=True, help="No progress bars or notes."),
)

class StageOption(click.Option):
    """A flag made from a stage's ``options`` (``stage_flags``): the command line learns them from the stages."""


class _OptionValue(click.ParamType):
    """A stage option's value: a whole number, a number, or 'none' (off; for a temperature, argmax)."""

    name = "value"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        if value.strip().lower() in ("none", "argmax", "off"):
            return _NONE
        for number in (int, float):
            try:
                return number(value)
            except ValueError:
                pass
        self.fail(f"'{value}' is not a number or 'none'", param, ctx)


_NONE = "\0none"  # a value given as 'none' on the command line (None itself means: not given)


def stage_flags(stages: Iterable[type[Stage]]) -> list[click.Option]:
    """One flag per option that ``stages`` declare (``Stage.options``, with ``Stage.option_help``), named after it:
    ``text_temp`` -> ``--text-temp``, a boolean ``--x/--no-x``; the first stage declaring a name gives its default."""
    seen: dict[str, tuple[Any, str, Sequence[str]]] = {}
    for stage in stages:
        for name, default in stage.options.items():
            spellings = tuple(stage.option_flags.get(name, ()))
            seen.setdefault(name, (default, stage.option_help.get(name, ""), spellings))
    flags: list[click.Option] = []
    for name, (default, text, extra) in seen.items():
        flag = name.replace("_", "-")
        shown = "on" if default is True else "off" if default is False else "none" if default is None else default
        help_text = f"{text}  [default: {shown}]".strip()
        if isinstance(default, bool):
            flags.append(StageOption([f"--{flag}/--no-{flag}", *extra, name], default=None, help=help_text))
        else:
            flags.append(StageOption([f"--{flag}", name], type=_OptionValue(), default=None, help=help_text))
    return flags


def stage_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a command as taking stage options: ``--option NAME=VALUE`` now, and one flag per option of the installed
    stages when the command line loads its plugins (``BarkkitGroup``; ``stage_flags``)."""
    vars(function)["takes_stage_options"] = True  # a mark BarkkitGroup reads on the command's callback
    return click.option("--option", "extra_options", multiple=True, metavar="NAME=VALUE",
                        help="Any stage option (JSON value), e.g. --option my_knob=3.")(function)


audio_output_options = _compose(
    click.option("--pcm16", is_flag=True, help="16-bit samples (default: float WAV, 24-bit FLAC)."),
    click.option("--peak", type=click.Choice(["scale", "clip", "keep"]), default="scale", show_default=True,
                 help="Samples beyond [-1, 1]: scale the clip down, clip them, or keep them (float WAV only)."),
)


def collect_stage_options(params: dict[str, Any]) -> dict[str, Any]:
    """The stage options a command line set (pops them from ``params``); unset ones keep the stages' defaults."""
    ctx = click.get_current_context(silent=True)
    names = [p.name for p in ctx.command.params if isinstance(p, StageOption)] if ctx is not None else []
    options = {}
    for name in names:
        value = params.pop(name, None)
        if value is not None:
            options[name] = None if value == _NONE else value
    for item in params.pop("extra_options", ()):
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise BarkkitError(f"--option '{item}' must look like NAME=VALUE")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        options[name.strip().replace("-", "_")] = value
    return options


def input_files(params: dict[str, Any], **named: Any) -> dict[str, Path]:
    """The files a command reads, by how messages name them: the ``named`` ones, a --voice or --spec file, and each
    file of a local --model folder (an output must replace none of them)."""
    inputs = {label: Path(path) for label, path in named.items() if path is not None}
    voice = params.get("voice")
    if voice and Path(voice).is_file():
        inputs["--voice file"] = Path(voice)
    if params.get("spec_file"):
        inputs["--spec file"] = Path(params["spec_file"])
    model = params.get("model")
    if model and Path(model).is_dir():
        for path in Path(model).iterdir():
            inputs[f"model file {path.name}"] = path
    return inputs


class ProgressBars:
    """A pipeline progress callback that shows one tqdm bar per step on stderr (nothing when quiet)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self._bars: dict[str, Any] = {}

    def __call__(self, step: str, done: int, total: int) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        bar = self._bars.get(step)
        if bar is None:
            # disable=None: bars only on a terminal, never in logs or pipes.
            bar = self._bars[step] = tqdm(total=total, desc=step, unit="step", leave=False, dynamic_ncols=True, disable=None)
        if total and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()

    def __enter__(self) -> "ProgressBars":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
