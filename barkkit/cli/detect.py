"""``barkkit detect PATH...``: how likely it is that Bark generated each audio file, streamed file by file."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from barkkit.audio import AUDIO_EXTENSIONS, load_audio
from barkkit.cli.options import quiet_option
from barkkit.cli.scale import ray_option
from barkkit.detection import AudioDetector, detect_one, error_result
from barkkit.errors import BarkkitError
from barkkit.scale.remote_files import is_uri, list_audio_uris

__all__ = ["detect", "DEFAULT_DETECTOR", "iter_audio_files"]

DEFAULT_DETECTOR = "bark-detector"
TRACE_NOTE = (
    "encodec_trace: the audio went through EnCodec 24 kHz's decoder. Bark's audio does, but so does other "
    "EnCodec-decoded audio (VALL-E-family TTS, speech re-synthesised by EnCodec): see model-card.md."
)


def iter_audio_files(paths: tuple[Path, ...]) -> Iterator[tuple[Path, str | None]]:
    """(path, None) for each file as given and each audio file found in folders (recursively, sorted per folder, as
    the walk goes), and (folder, reason) for a folder that cannot be read, so the caller can report it."""
    for path in paths:
        if not path.is_dir():
            yield path, None
            continue
        problems: list[OSError] = []
        for folder, subfolders, names in os.walk(path, onerror=problems.append):
            while problems:
                error = problems.pop(0)
                yield Path(error.filename or folder), f"cannot read this folder ({error.strerror or error}); skipped"
            subfolders.sort()
            for name in sorted(names):
                if Path(name).suffix.lower() in AUDIO_EXTENSIONS and os.path.isfile(os.path.join(folder, name)):
                    yield Path(folder) / name, None
        for error in problems:  # an unreadable folder given on the command line itself
            yield Path(error.filename or path), f"cannot read this folder ({error.strerror or error}); skipped"


def _with_segments(detector: AudioDetector, path: Path, threshold: float, window: float, hop: float) -> dict[str, Any]:
    """The whole file's result, plus ``segments`` (flagged time ranges); the file's score is its best window's."""
    result = detect_one(detector, path, threshold)
    if "error" in result:
        return result
    try:
        audio = load_audio(path)
        windows = detector.windows(audio, window, hop)
        ranges = detector.segments(audio, windows, threshold, window, hop)
    except Exception as exc:  # reported like any unreadable file
        return error_result(path, exc)
    scored = [w for w in windows if w.get("bark_probability") is not None]
    best = max(scored, key=lambda w: w["bark_probability"], default=None)
    if best is not None and (result.get("bark_probability") is None or best["bark_probability"] > result["bark_probability"]):
        result.update({k: best[k] for k in ("bark_probability", "encodec_trace", "comb_spacing_hz") if k in best})
        result["is_bark"] = best["bark_probability"] >= threshold
        result.pop("warning", None)
    result["segments"] = ranges
    return result


def _rounded(result: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in result.items()}


def _table_line(result: dict[str, Any]) -> str:
    path = result["path"]
    if "error" in result:
        return f"{'-':>16s}  {'-':>13s}  {'error':9s}  {path}  ({result['error']})"
    if result.get("bark_probability") is None:
        return f"{'-':>16s}  {'-':>13s}  {'no verdict':9s}  {path}  ({result.get('warning', '')})"
    trace = result.get("encodec_trace")
    trace_text = f"{trace:13.3f}" if trace is not None else f"{'-':>13s}"
    line = f"{result['bark_probability']:16.3f}  {trace_text}  {'BARK' if result['is_bark'] else 'not bark':9s}  {path}"
    for segment in result.get("segments", []):
        line += f"\n{'':>16s}  {'':>13s}  {'':9s}    {segment['start']:7.2f}-{segment['end']:.2f} s  p={segment['bark_probability']:.3f}"
    return line


def _local_results(paths: tuple[Path, ...], detector: AudioDetector, cut: float, segments: bool, window: float,
                   hop: float) -> Iterator[tuple[dict[str, Any], bool]]:
    """(result, whether it is a file's) for each file found, in order; a folder that cannot be read is a result too."""
    for path, problem in iter_audio_files(paths):
        if problem is not None:
            yield {"path": str(path), "error": f"{path}: {problem}"}, False
        else:
            yield (_with_segments(detector, path, cut, window, hop) if segments else detect_one(detector, path, cut)), True


def _listed(paths: tuple[str, ...]) -> list[tuple[str, str | None]]:
    """What a ``--ray`` job scores: local files as ``iter_audio_files`` finds them, and files under each URL."""
    listed: list[tuple[str, str | None]] = []
    for path in paths:
        if is_uri(path):
            listed.extend((uri, None) for uri in list_audio_uris(path))
        else:
            listed.extend((str(found), problem) for found, problem in iter_audio_files((Path(path),)))
    return listed


def _check_ray_options(paths: tuple[str, ...], ray_address: str | None, actors: int | None, segments: bool) -> None:
    if ray_address is None:
        if actors is not None:
            raise BarkkitError("--actors only works with --ray ADDRESS (a Ray cluster job)")
        if any(is_uri(path) for path in paths):
            raise BarkkitError("files named by URL (s3://...) are read by --ray jobs; give --ray ADDRESS, or local paths")
    elif segments:
        raise BarkkitError("--segments is not available with --ray yet; run it without --ray")


@click.command("detect")
@click.argument("paths", nargs=-1, required=True, type=click.Path(readable=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line: path, bark_probability, encodec_trace, is_bark, comb_spacing_hz (or error, or warning when no verdict is given).")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=None, help="Flag as Bark at or above this probability.  [default: the model's calibrated threshold]")
@click.option("--detector", "detector_name", default=DEFAULT_DETECTOR, show_default=True, help="Which registered detector scores the audio (plugins can add more).")
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path), default=None, help="A detector model file instead of the detector's bundled one.")
@click.option("--segments", is_flag=True, help="Also score WINDOW-second pieces HOP seconds apart and report the time ranges that carry the trace ('segments': [{start, end, bark_probability}]); the file's score is its best piece's.")
@click.option("--window", type=click.FloatRange(1.0, 60.0), default=4.0, show_default=True, help="With --segments: piece length in seconds.")
@click.option("--hop", type=click.FloatRange(0.1, 60.0), default=1.0, show_default=True, help="With --segments: seconds between pieces.")
@ray_option
@click.option("--actors", type=click.IntRange(min=1), default=None, help="With --ray: actors, each holding one loaded detector.  [default: one per CPU]")
@quiet_option
@click.pass_obj
@click.pass_context
def detect(ctx: click.Context, state: Any, paths: tuple[str, ...], as_json: bool, threshold: float | None, detector_name: str, model: Path | None, segments: bool, window: float, hop: float,
           ray_address: str | None, actors: int | None) -> None:
    """Say how likely it is that Bark generated each audio file.

    PATHS are files or folders (searched recursively for wav, flac, mp3, ogg, ...); any sample rate and channel
    count. Results are printed as each file is scored. A file or folder that cannot be read is reported and the run
    goes on; the exit status is then 1. Audio too short (under 1 s) or silent gets no verdict, with a warning.

    encodec_trace is the probability that the audio went through EnCodec 24 kHz's decoder, which is what the
    bundled detector sees: other EnCodec-decoded audio (VALL-E-family TTS, speech re-synthesised by EnCodec)
    carries the same trace. bark_probability says how much of that the detector attributes to Bark.

    \b
    Examples:
      barkkit detect clip.wav
      barkkit detect clips/ --json > scores.jsonl
      barkkit detect clips/ --threshold 0.9
      barkkit detect long_recording.wav --segments --window 4 --hop 1 --json
      barkkit detect archive/ s3://bucket/clips/ --json --ray auto
    """
    _check_ray_options(paths, ray_address, actors, segments)
    detector = state.plugins.detectors.get(detector_name).load(model)
    cut = detector.threshold if threshold is None else threshold
    counts = {"files": 0, "flagged": 0, "failed": 0, "no verdict": 0}
    if not as_json:
        click.echo(f"{'bark_probability':>16s}  {'encodec_trace':>13s}  {'verdict':9s}  path")
    if ray_address is not None:
        from barkkit.scale.detection import run_detection_job

        results = run_detection_job(_listed(paths), detector_name, model, cut, address=ray_address, actors=actors,
                                    quiet=getattr(state, "quiet", False))
    else:
        results = _local_results(tuple(Path(p) for p in paths), detector, cut, segments, window, hop)
    for result, is_file in results:
        counts["files"] += is_file
        counts["failed"] += "error" in result
        counts["no verdict"] += "error" not in result and result.get("bark_probability") is None
        counts["flagged"] += bool(result.get("is_bark"))
        click.echo(json.dumps(_rounded(result)) if as_json else _table_line(result))  # click.echo flushes: results stream
    if counts["files"] == 0 and counts["failed"] == 0:
        raise BarkkitError(f"no audio files found in {', '.join(map(str, paths))}; give audio files or folders holding them")
    if not as_json and not getattr(state, "quiet", False):
        judged = counts["files"] - counts["flagged"] - counts["failed"] - counts["no verdict"]
        click.echo(
            f"{counts['files']} file(s): {counts['flagged']} flagged as Bark, {judged} not, {counts['no verdict']} without a verdict, "
            f"{counts['failed']} unreadable (detector {detector_name}, threshold {cut:.3f})",
            err=True,
        )
        click.echo(TRACE_NOTE, err=True)
    if counts["failed"]:
        ctx.exit(1)
