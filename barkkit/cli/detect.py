"""``barkkit detect PATH...``: how likely it is that Bark generated each audio file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from barkkit.audio import AUDIO_EXTENSIONS
from barkkit.cli.options import quiet_option
from barkkit.errors import BarkkitError

__all__ = ["detect", "DEFAULT_DETECTOR"]

DEFAULT_DETECTOR = "bark-detector"


def _audio_files(paths: tuple[Path, ...]) -> list[Path]:
    """Files as given (even with another extension: reading them decides), audio files in folders recursively."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS))
        else:
            found.append(path)
    return found


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text if isinstance(exc, BarkkitError) else f"{type(exc).__name__}: {text}"


@click.command("detect")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line: path, bark_probability, is_bark (or error).")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=None, help="Flag as Bark at or above this probability.  [default: the model's calibrated threshold]")
@click.option("--detector", "detector_name", default=DEFAULT_DETECTOR, show_default=True, help="Which registered detector scores the audio (plugins can add more).")
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path), default=None, help="A detector model file instead of the detector's bundled one.")
@quiet_option
@click.pass_obj
@click.pass_context
def detect(ctx: click.Context, state: Any, paths: tuple[Path, ...], as_json: bool, threshold: float | None, detector_name: str, model: Path | None) -> None:
    """Say how likely it is that Bark generated each audio file.

    PATHS are files or folders (searched recursively for wav, flac, mp3, ogg, ...); any sample rate and channel
    count. A file that cannot be read is reported and the run goes on; the exit status is then 1.

    \b
    Examples:
      barkkit detect clip.wav
      barkkit detect clips/ --json > scores.jsonl
      barkkit detect clips/ --threshold 0.9
    """
    files = _audio_files(paths)
    if not files:
        raise BarkkitError(f"no audio files found in {', '.join(map(str, paths))}; give audio files or folders holding them")
    detector = state.plugins.detectors.get(detector_name).load(model)
    cut = detector.threshold if threshold is None else threshold
    failed = flagged = 0
    if not as_json:
        click.echo(f"{'bark_probability':>16s}  {'verdict':9s}  path")
    for path in files:
        try:
            probability = float(detector.score(path))
        except Exception as exc:  # one bad file must not stop the run
            failed += 1
            message = _one_line(exc)
            if str(path) not in message:
                message = f"{path}: {message}"
            if as_json:
                click.echo(json.dumps({"path": str(path), "error": message}))
            else:
                click.echo(f"{'-':>16s}  {'error':9s}  {path}  ({message})")
            continue
        is_bark = probability >= cut
        flagged += is_bark
        if as_json:
            click.echo(json.dumps({"path": str(path), "bark_probability": round(probability, 6), "is_bark": bool(is_bark)}))
        else:
            click.echo(f"{probability:16.3f}  {'BARK' if is_bark else 'not bark':9s}  {path}")
    if not as_json and not getattr(state, "quiet", False):
        click.echo(
            f"{len(files)} file(s): {flagged} flagged as Bark, {len(files) - flagged - failed} not, {failed} unreadable "
            f"(detector {detector_name}, threshold {cut:.3f})",
            err=True,
        )
    if failed:
        ctx.exit(1)
