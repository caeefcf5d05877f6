"""``barkkit detector train`` and ``barkkit detector evaluate`` (added by this plugin's register_commands hook)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from barkkit.cli.options import quiet_option
from barkkit.errors import BarkkitError
from barkkit.files import check_writable

__all__ = ["detector"]


def _progress(state: Any, label: str) -> tuple[Callable[[int, int], None] | None, Callable[[], None]]:
    """A progress callback drawing a bar on stderr (none with --quiet), and the function that closes the bar."""
    if getattr(state, "quiet", False):
        return None, lambda: None
    bar: dict[str, Any] = {}

    def update(done: int, total: int) -> None:
        if "bar" not in bar:
            bar["bar"] = click.progressbar(length=total, label=label, file=sys.stderr)
            bar["bar"].__enter__()
        bar["bar"].update(done - bar["bar"].pos)

    def close() -> None:
        if "bar" in bar:
            bar["bar"].__exit__(None, None, None)

    return update, close


def _default_jobs() -> int:
    return max(1, min(2, os.cpu_count() or 1))


@click.group("detector")
def detector() -> None:
    """Train and evaluate the Bark-audio detector (barkkit detect uses it)."""


@detector.command("train")
@click.option("--data", "data_dirs", required=True, multiple=True, type=click.Path(file_okay=False, path_type=Path), help="Labelled clips: manifest.csv (path,label[,source]) or bark/ real/ other_tts/ subfolders. Repeat for several folders.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Model file to write (.skops; a .json sidecar is written beside it).")
@click.option("--features", "feature_name", type=click.Choice(["encodec-comb", "hubert-l6"]), default="encodec-comb", show_default=True, help="Feature set.")
@click.option("--hubert", default=None, help="For hubert-l6: a local HuBERT folder or a hub id in the local cache.  [default: facebook/hubert-base-ls960]")
@click.option("--augment", "n_augment", type=click.IntRange(0, 50), default=4, show_default=True, help="Random degradations per clip (resampling, codecs, noise, hum, band limits).")
@click.option("--max-fpr", type=click.FloatRange(0.0, 0.5), default=0.005, show_default=True, help="Threshold: flag at most this share of clips without the trace (leave-one-source-out).")
@click.option("--max-degraded-fpr", type=click.FloatRange(0.0, 0.5), default=0.02, show_default=True, help="Threshold: also flag at most this share of the degraded copies of clips without the trace.")
@click.option("--synthetic", "n_synthetic", type=click.IntRange(0, 1000), default=0, show_default=True, help="Also train on this many generated non-speech signals of each kind (tones, harmonic tones, clicks, DTMF, metronome, noise, music) as negatives.")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Keep extracted features in this folder and reuse them (keyed by file, feature version and augmentation).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--jobs", type=click.IntRange(1, 64), default=None, help="Worker processes for feature extraction.  [default: up to 2]")
@quiet_option
@click.pass_obj
def train_command(state: Any, data_dirs: tuple[Path, ...], out: Path, feature_name: str, hubert: str | None, n_augment: int, max_fpr: float, max_degraded_fpr: float, n_synthetic: int, cache_dir: Path | None, seed: int, jobs: int | None) -> None:
    """Train a detector model on labelled clips and report leave-one-source-out metrics.

    \b
    Example:
      barkkit detector train --data ../shared/data/detector --data ../shared/data/detector_extra --synthetic 20 --out model.skops
    """
    import tempfile

    from barkkit_detect.dataset import read_clips
    from barkkit_detect.features import make_feature_set
    from barkkit_detect.metrics import Report, format_report
    from barkkit_detect.model import Detector
    from barkkit_detect.synthetic import write_synthetic_clips
    from barkkit_detect.training import train

    if out.suffix != ".skops":
        raise BarkkitError(f"{out}: the model file must end in .skops")
    check_writable(out)
    clips = [clip for data_dir in data_dirs for clip in read_clips(data_dir)]
    if not any(c.is_bark for c in clips) or all(c.is_bark for c in clips):
        raise BarkkitError(f"{', '.join(map(str, data_dirs))}: training needs both Bark clips and non-Bark clips")
    scratch = tempfile.TemporaryDirectory(prefix="barkkit-synthetic-")
    clips += write_synthetic_clips(scratch.name, n_synthetic, seed) if n_synthetic else []
    features = make_feature_set(feature_name, **({"model": hubert} if hubert else {}))
    # HuBERT is a torch model: one process, torch's own threads
    workers = 1 if feature_name == "hubert-l6" else (jobs or _default_jobs())
    update, close = _progress(state, f"features of {len(clips)} clips")
    try:
        models, threshold, metadata = train(clips, features, n_augment=n_augment, seed=seed, jobs=workers, max_fpr=max_fpr, max_degraded_fpr=max_degraded_fpr, progress=update, cache_dir=cache_dir)
    finally:
        close()
        scratch.cleanup()
    metadata["training"]["synthetic_per_kind"] = n_synthetic
    model = Detector(models, features, threshold, metadata)
    model.save(out)
    for name, report in metadata["leave_one_source_out"].items():
        trace = report.pop("encodec_trace", {})
        click.echo(format_report(Report(**report), f"== leave-one-source-out, {name} clips: bark_probability =="))
        click.echo("encodec_trace flagged: " + ", ".join(f"{label} {100 * v['flagged']:.1f}% of {v['n']}" for label, v in trace.items()))
        report["encodec_trace"] = trace
        click.echo("")
    aucs = ", ".join(f"{source} {auc:.2f}" for source, auc in metadata.get("bark_stage_roc_auc", {}).items())
    click.echo(f"second stage (Bark among EnCodec-decoded audio): weight {metadata['bark_weight']:.2f} (0: cannot tell them apart; "
               f"from the worst out-of-source ROC-AUC{': ' + aucs if aucs else ''})")
    click.echo(f"wrote {out} and {out.with_suffix('.json')} (threshold {threshold:.3f})")


@detector.command("evaluate")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Labelled clips: manifest.csv or bark/ real/ other_tts/ subfolders.")
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Model file (.skops).  [default: the bundled model]")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=None, help="Decision threshold.  [default: the model's]")
@click.option("--augment", "n_augment", type=click.IntRange(0, 50), default=0, show_default=True, help="Also score this many random degradations of each clip.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Draw ROC and precision-recall curves to this image (.png); needs matplotlib.")
@click.option("--hubert", default=None, help="For a hubert-l6 model: the HuBERT folder or hub id to use.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--jobs", type=click.IntRange(1, 64), default=None, help="Worker processes.  [default: up to 2]")
@quiet_option
@click.pass_obj
def evaluate_command(state: Any, data_dir: Path, model: Path | None, threshold: float | None, n_augment: int, plot: Path | None, hubert: str | None, seed: int, jobs: int | None) -> None:
    """Score labelled clips with a model: ROC-AUC, EER, precision, recall and false-positive rate, per label and source.

    Clips the model was trained on score optimistically: the figures that predict other audio are the
    leave-one-source-out ones that training prints.
    """
    import numpy as np

    from barkkit_detect.dataset import read_clips
    from barkkit_detect.metrics import compute_report, format_report, plot_curves
    from barkkit_detect.model import Detector
    from barkkit_detect.training import extract_table

    if plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise BarkkitError("--plot needs matplotlib: pip install 'barkkit[plot]' (or pip install matplotlib)") from None
        check_writable(plot)
    clips = read_clips(data_dir)
    loaded = Detector.load(model, hubert=hubert)
    cut = loaded.threshold if threshold is None else threshold
    workers = 1 if loaded.features.name == "hubert-l6" else (jobs or _default_jobs())
    update, close = _progress(state, f"scoring {len(clips)} clips")
    try:
        table = extract_table(clips, loaded.features, n_augment=n_augment, seed=seed, jobs=workers, progress=update)
    finally:
        close()
    scores = loaded.score_features(table.X)
    labels = [clips[i].label for i in table.clip]
    sources = [clips[i].source for i in table.clip]
    groups = [("clips as they are", ~table.augmented)] + ([("degraded copies", table.augmented)] if n_augment else [])
    for title, mask in groups:
        keep = np.flatnonzero(mask)
        report = compute_report([labels[i] for i in keep], [sources[i] for i in keep], scores[keep], cut)
        click.echo(format_report(report, f"== {title} =="))
        click.echo("")
    if plot is not None:
        plot_curves(labels, scores, cut, str(plot))
        click.echo(f"wrote {plot}")
