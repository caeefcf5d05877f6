"""The detector's leave-one-source-out figures on several augmentation seeds, cheap to re-run after a feature change.

Runs what ``barkkit detector train --data ../shared/data/detector --data ../shared/data/detector_extra --synthetic 20
--seed N`` runs (``training.train``: the same clips, synthetic signals, degradations, fits and threshold rule; the
evaluation-only clips scored, never fitted) and prints its leave-one-source-out figures for each seed. The degraded
copies are drawn once per seed and their prepared audio (16 kHz, what the features read) is kept in
``--audio-cache``, so after a change to the features only the features and the fits run again (on the shared 2-core
host about 2 minutes of features and 2-3 of fits a seed, against about 4 more for the codecs and resampling).

    .venv/bin/python benchmarks/detector_loso.py --seeds 0,1,2 [--audio-cache /tmp/detect-audio] [--jobs 2] [--stages]

``--stages`` also scores the two trace stages out of source apart (the logistic on natural audio, the trees on
everything) and prints the Bark recall and synthetic flags of each alone, of their minimum (as shipped) and of their
geometric mean, each at the shipped threshold rule: where the trees veto natural Bark, the minimum shows it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
COPIES = 4  # degradations per clip, as training's default


def _prepare(clip: object, seed: int, path: Path) -> None:
    """The clip's prepared audio and its ``COPIES`` degraded copies, drawn as ``training.extract_table`` draws them."""
    from barkkit.audio import load_audio
    from barkkit.tokens import Audio
    from barkkit_detect.augment import augment
    from barkkit_detect.features import prepare_audio

    audio = load_audio(clip.path)  # type: ignore[attr-defined]
    rows = [prepare_audio(audio)]
    rng = np.random.default_rng(seed)
    for _ in range(COPIES):
        samples, rate = augment(np.asarray(audio.samples), audio.sample_rate, rng, human=not clip.has_trace)  # type: ignore[attr-defined]
        rows.append(prepare_audio(Audio(samples, rate)))
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, *rows)
    os.replace(tmp, path)


def _features(path: Path) -> list[np.ndarray]:
    from barkkit_detect.features import CombFeatures

    stored = np.load(path)
    return [CombFeatures().extract(stored[f"arr_{k}"]) for k in range(COPIES + 1)]


def _table(clips: list, seed: int, cache: Path, jobs: int):  # noqa: ANN202
    """``training.FeatureTable`` of the clips and their copies (the audio kept in ``cache/seed-N``)."""
    from joblib import Parallel, delayed

    from barkkit_detect.training import AUGMENT_VERSION, FeatureTable

    folder = cache / f"seed-{seed}-augment-{AUGMENT_VERSION}"
    folder.mkdir(parents=True, exist_ok=True)
    seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(len(clips))]
    paths = [folder / f"{i}-{Path(c.path).stem}.npz" for i, c in enumerate(clips)]
    todo = [(c, s, p) for c, s, p in zip(clips, seeds, paths) if not p.is_file()]
    Parallel(n_jobs=jobs)(delayed(_prepare)(c, s, p) for c, s, p in todo)
    rows = Parallel(n_jobs=jobs, batch_size=4)(delayed(_features)(p) for p in paths)
    X = np.array([r for clip_rows in rows for r in clip_rows])
    return FeatureTable(X, np.repeat(np.arange(len(clips)), COPIES + 1), np.tile(np.arange(COPIES + 1) > 0, len(clips)))


def _report(seed: int, threshold: float, evaluation: dict) -> None:
    print(f"== seed {seed}: threshold {threshold:.3f} on bark_probability")
    for name in ("clean", "degraded"):
        labels = evaluation[name]["per_label"]
        print(f"  {name:9s}" + "  ".join(f"{label} {100 * v['flagged']:.1f}% (n {v['n']})" for label, v in labels.items()))
    bark = {s: v for s, v in evaluation["degraded"]["per_source"].items() if s.endswith("[bark]")}
    print("  degraded Bark by source: " + ", ".join(f"{s[:-7]} {100 * v['flagged']:.1f}% ({v['n']})" for s, v in bark.items()))


def _stage_report(clips: list, table, training: dict, jobs: int) -> None:  # noqa: ANN001
    """Recall and synthetic flags of each trace stage alone and of two combinations, out of source, at the threshold
    rule ``train()`` used (``training``: its metadata's ``training`` record)."""
    from joblib import Parallel, delayed

    from barkkit_detect.training import _threshold, leave_one_source_out

    labels = np.array([clips[i].label for i in table.clip])
    sources = np.array([clips[i].source for i in table.clip])
    fit = np.array([clips[i].trainable for i in table.clip])
    has_trace = np.array([clips[i].has_trace for i in table.clip])
    natural = labels != "synthetic"
    logistic, trees = Parallel(n_jobs=jobs)(
        delayed(leave_one_source_out)(table.X, has_trace, sources, rows, kind) for rows, kind in ((fit & natural, "logistic"), (fit, "boosting"))
    )
    human, bark, synthetic, clean = np.isin(labels, ("real", "other_tts")), labels == "bark", labels == "synthetic", ~table.augmented
    for name, scores in (("logistic", logistic), ("trees", trees), ("minimum", np.minimum(logistic, trees)), ("geometric mean", np.sqrt(logistic * trees))):
        cut = _threshold(scores, human & clean, human & ~clean, training["max_fpr"], training["max_degraded_fpr"], 0.5)
        rates = [100 * np.mean(scores[group & part] >= cut) for group in (bark, synthetic) for part in (clean, ~clean)]
        print(f"  {name:15s} threshold {cut:.3f}: Bark {rates[0]:.1f} / {rates[1]:.1f}%, synthetic {rates[2]:.1f} / {rates[3]:.1f}% (clean / degraded)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="augmentation seeds (comma-separated)")
    parser.add_argument("--audio-cache", type=Path, default=Path(tempfile.gettempdir()) / "barkkit-detect-audio")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--stages", action="store_true", help="also report each trace stage alone and two combinations")
    args = parser.parse_args()
    from barkkit_detect.dataset import read_clips
    from barkkit_detect.features import CombFeatures
    from barkkit_detect.synthetic import write_synthetic_clips
    from barkkit_detect.training import train

    data = [SHARED / "detector", SHARED / "detector_extra"]
    if not all((d / "manifest.csv").is_file() for d in data):
        raise SystemExit(f"{SHARED}: no shared detector data here")
    for seed in (int(s) for s in args.seeds.split(",")):
        with tempfile.TemporaryDirectory(prefix="barkkit-synthetic-") as scratch:
            clips = [c for d in data for c in read_clips(d)] + write_synthetic_clips(scratch, 20, seed)
            table = _table(clips, seed, args.audio_cache, args.jobs)
            _, threshold, metadata = train(clips, CombFeatures(), n_augment=COPIES, seed=seed, table=table)
            _report(seed, threshold, metadata["leave_one_source_out"])
            if args.stages:
                _stage_report(clips, table, metadata["training"], args.jobs)


if __name__ == "__main__":
    main()
