"""``barkkit detect PATH...``: how likely it is that Bark generated each audio file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from barkkit.audio import AUDIO_EXTENSIONS
from barkkit.cli.options import quiet_option
from barkkit.cli.scale import ray_option
from barkkit.detection import score_record
from barkkit.errors import BarkkitError
from barkkit.scale.remote_files import is_uri, list_audio_uris

__all__ = ["detect", "DEFAULT_DETECTOR", "score_record"]

DEFAULT_DETECTOR = "bark-detector"


def _audio_files(paths: tuple[Path, ...]) -> list[Path]:
    """Files as given (even with another extension: reading them decides), audio files in folders recursively.

    A URL (``s3://...``) is listed through its store's filesystem; only ``--ray`` jobs take them.
    """
    found: list[Any] = []
    for path in paths:
        if is_uri(str(path)):
            found.extend(list_audio_uris(str(path)))
        elif path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS))
        else:
            found.append(path)
    return found


def _path_or_uri(value: str) -> Any:
    """A local path as a ``Path``; a URL kept as text (``Path`` would fold its ``//``)."""
    return value if is_uri(value) else Path(value)


def _print_record(record: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(record))
    elif "error" in record:
        click.echo(f"{'-':>16s}  {'error':9s}  {record['path']}  ({record['error']})")
    else:
        verdict = "BARK" if record["is_bark"] else "not bark"
        click.echo(f"{record['bark_probability']:16.3f}  {verdict:9s}  {record['path']}")


@click.command("detect")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line: path, bark_probability, is_bark (or error).")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=None, help="Flag as Bark at or above this probability.  [default: the model's calibrated threshold]")
@click.option("--detector", "detector_name", default=DEFAULT_DETECTOR, show_default=True, help="Which registered detector scores the audio (plugins can add more).")
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path), default=None, help="A detector model file instead of the detector's bundled one.")
@ray_option
@click.option("--actors", type=click.IntRange(min=1), default=None, help="With --ray: actors, each holding one loaded detector.  [default: one per CPU]")
@quiet_option
@click.pass_obj
@click.pass_context
def detect(ctx: click.Context, state: Any, paths: tuple[Path, ...], as_json: bool, threshold: float | None, detector_name: str, model: Path | None,
           ray_address: str | None, actors: int | None) -> None:
    """Say how likely it is that Bark generated each audio file.

    PATHS are files or folders (searched recursively for wav, flac, mp3, ogg, ...); any sample rate and channel
    count. A file that cannot be read is reported and the run goes on; the exit status is then 1.

    \b
    Examples:
      barkkit detect clip.wav
      barkkit detect clips/ --json > scores.jsonl
      barkkit detect clips/ --threshold 0.9
      barkkit detect archive/ --json --ray auto
    """
    if actors is not None and ray_address is None:
        raise BarkkitError("--actors only works with --ray ADDRESS (a Ray cluster job)")
    paths = tuple(_path_or_uri(path) for path in paths)
    if any(isinstance(path, str) for path in paths) and ray_address is None:
        raise BarkkitError("files named by URL (s3://...) are read by --ray jobs; give --ray ADDRESS, or local paths")
    files = _audio_files(paths)
    if not files:
        raise BarkkitError(f"no audio files found in {', '.join(map(str, paths))}; give audio files or folders holding them")
    detector = state.plugins.detectors.get(detector_name).load(model)
    cut = detector.threshold if threshold is None else threshold
    failed = flagged = 0
    if not as_json:
        click.echo(f"{'bark_probability':>16s}  {'verdict':9s}  path")
    if ray_address is not None:
        from barkkit.scale.detection import run_detection_job

        records = run_detection_job(files, detector_name, model, cut, address=ray_address, actors=actors,
                                    quiet=getattr(state, "quiet", False))
    else:
        records = (score_record(detector, path, cut) for path in files)
    for record in records:
        failed += "error" in record
        flagged += bool(record.get("is_bark"))
        _print_record(record, as_json)
    if not as_json and not getattr(state, "quiet", False):
        click.echo(
            f"{len(files)} file(s): {flagged} flagged as Bark, {len(files) - flagged - failed} not, {failed} unreadable "
            f"(detector {detector_name}, threshold {cut:.3f})",
            err=True,
        )
    if failed:
        ctx.exit(1)
