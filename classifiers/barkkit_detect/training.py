"""Training the detector: features of clean and augmented clips, leave-one-source-out evaluation, a threshold.

The data come from few sources, each with its own rate, bandwidth, loudness and speakers, so the figures that
count are the grouped ones: for every source, a model trained on all the *other* sources scores that source's
clips (clean and degraded). The threshold is chosen on those out-of-source scores, and the shipped model is then
fitted on everything.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from barkkit.audio import load_audio

from barkkit_detect.augment import augment
from barkkit_detect.dataset import Clip
from barkkit_detect.features import SAMPLE_RATE, FeatureSet, prepare_audio
from barkkit_detect.metrics import compute_report
from barkkit.tokens import Audio

__all__ = ["FeatureTable", "extract_table", "make_classifier", "leave_one_source_out", "choose_threshold", "train"]

Progress = Callable[[int, int], None]


@dataclass
class FeatureTable:
    """Features of every clip and its augmented copies: ``X`` (rows, dim); ``clip`` (rows,) indexes the clips."""

    X: np.ndarray
    clip: np.ndarray
    augmented: np.ndarray


def _clip_rows(feature_set: FeatureSet, clip: Clip, n_augment: int, seed: int) -> list[np.ndarray]:
    audio = load_audio(clip.path)
    rows = [feature_set.extract(prepare_audio(audio))]
    rng = np.random.default_rng(seed)
    for _ in range(n_augment):
        samples, rate = augment(np.asarray(audio.samples), audio.sample_rate, rng, human=not clip.is_bark)
        rows.append(feature_set.extract(prepare_audio(Audio(samples, rate))))
    return rows


def extract_table(
    clips: Sequence[Clip],
    feature_set: FeatureSet,
    *,
    n_augment: int = 4,
    seed: int = 0,
    jobs: int = 1,
    progress: Progress | None = None,
) -> FeatureTable:
    """Features of each clip as it is, plus ``n_augment`` random degradations of it (seeded per clip)."""
    seeds = np.random.SeedSequence(seed).spawn(len(clips))
    tasks = [(clip, int(s.generate_state(1)[0])) for clip, s in zip(clips, seeds)]
    if jobs == 1:
        results = (_clip_rows(feature_set, clip, n_augment, s) for clip, s in tasks)
    else:
        from joblib import Parallel, delayed

        results = Parallel(n_jobs=jobs, return_as="generator")(delayed(_clip_rows)(feature_set, clip, n_augment, s) for clip, s in tasks)
    X, index, augmented = [], [], []
    for i, rows in enumerate(results):
        for j, row in enumerate(rows):
            X.append(row)
            index.append(i)
            augmented.append(j > 0)
        if progress is not None:
            progress(i + 1, len(clips))
    return FeatureTable(np.asarray(X, dtype=np.float64), np.asarray(index), np.asarray(augmented))


def make_classifier(kind: str = "logistic") -> Any:
    """A fresh scikit-learn pipeline: standardise, then a class-balanced classifier."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "logistic":
        from sklearn.linear_model import LogisticRegression

        classifier = LogisticRegression(C=0.3, class_weight="balanced", max_iter=2000)
    elif kind == "boosting":
        from sklearn.ensemble import HistGradientBoostingClassifier

        classifier = HistGradientBoostingClassifier(max_depth=3, max_iter=200, learning_rate=0.05, class_weight="balanced", random_state=0)
    else:
        raise ValueError(f"unknown classifier kind '{kind}'")
    return Pipeline([("scale", StandardScaler()), ("classify", classifier)])


def leave_one_source_out(table: FeatureTable, clips: Sequence[Clip], kind: str = "logistic") -> np.ndarray:
    """Out-of-source Bark probabilities (rows,): each source scored by a model fitted on all other sources."""
    y = np.array([clips[i].is_bark for i in table.clip])
    groups = np.array([clips[i].source for i in table.clip])
    scores = np.full(len(y), np.nan)
    for source in sorted(set(groups.tolist())):
        held = groups == source
        if len(set(y[~held].tolist())) < 2:  # the rest has one class only: nothing to learn from
            continue
        model = make_classifier(kind).fit(table.X[~held], y[~held])
        scores[held] = model.predict_proba(table.X[held])[:, 1]
    return scores


def choose_threshold(is_bark: np.ndarray, scores: np.ndarray, max_fpr: float = 0.01) -> float:
    """The lowest threshold that flags at most ``max_fpr`` of the non-Bark scores (leaning to few false positives).

    Never below 0.5: the classifier's probabilities are class-balanced, so 0.5 is its own even-odds point.
    """
    negatives = np.sort(scores[~is_bark & np.isfinite(scores)])
    if negatives.size == 0:
        return 0.5
    allowed = int(np.floor(max_fpr * negatives.size))  # how many negatives may sit at or above the threshold
    edge = negatives[negatives.size - allowed - 1]  # the highest negative that must stay below
    return float(min(max(np.nextafter(edge, 1.0), 0.5), 0.99))


def train(
    clips: Sequence[Clip],
    feature_set: FeatureSet,
    *,
    n_augment: int = 4,
    seed: int = 0,
    jobs: int = 1,
    kind: str = "logistic",
    max_fpr: float = 0.01,
    progress: Progress | None = None,
) -> tuple[Any, float, dict[str, Any]]:
    """Fit the detector on ``clips``. Returns (fitted pipeline, threshold, metadata with grouped metrics)."""
    import sklearn

    table = extract_table(clips, feature_set, n_augment=n_augment, seed=seed, jobs=jobs, progress=progress)
    y = np.array([clips[i].is_bark for i in table.clip])
    labels = [clips[i].label for i in table.clip]
    sources = [clips[i].source for i in table.clip]
    n_sources = len({c.source for c in clips})
    loso = leave_one_source_out(table, clips, kind) if n_sources > 2 else np.full(len(y), np.nan)
    scored = np.isfinite(loso)
    if scored.any() and len(set(y[scored].tolist())) == 2:
        threshold = choose_threshold(y[scored], loso[scored], max_fpr)
        clean = scored & ~table.augmented
        degraded = scored & table.augmented

        def pick(mask: np.ndarray) -> dict[str, Any]:
            return compute_report([l for l, m in zip(labels, mask) if m], [s for s, m in zip(sources, mask) if m], loso[mask], threshold).as_dict()

        evaluation = {"clean": pick(clean), "degraded": pick(degraded)} if degraded.any() else {"clean": pick(clean)}
    else:  # too few sources to hold one out: fall back to in-sample scores
        threshold, evaluation = 0.5, {}
    pipeline = make_classifier(kind).fit(table.X, y)
    if not evaluation:
        threshold = choose_threshold(y, pipeline.predict_proba(table.X)[:, 1], max_fpr)
    counts: dict[str, dict[str, int]] = {}
    for clip in clips:
        counts.setdefault(clip.label, {}).setdefault(clip.source, 0)
        counts[clip.label][clip.source] += 1
    metadata = {
        "sample_rate": SAMPLE_RATE,
        "classifier": kind,
        "training": {
            "clips": counts,
            "n_augment": n_augment,
            "seed": seed,
            "max_fpr": max_fpr,
            "sklearn_version": sklearn.__version__,
            "python": platform.python_version(),
        },
        "leave_one_source_out": evaluation,
    }
    return pipeline, threshold, metadata
