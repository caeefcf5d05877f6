"""Training the detector: features of clean and augmented clips, leave-one-source-out evaluation, thresholds.

Two stages, both on the same feature vector:

1. ``trace``: did the audio go through EnCodec 24 kHz's decoder? Bark and ``encodec_family`` positive, everything
   else (human speech, other TTS, Vocos-decoded tokens) negative: a logistic regression on natural audio, and,
   when synthetic non-speech is in the data, a ``veto`` (gradient-boosted trees fitted on everything, synthetic
   signals included): ``encodec_trace`` is the smaller of the two, so a tone or a click train whose exact lines
   fool the linear model is vetoed, and natural audio keeps the linear model's recall.
2. ``bark``: given the trace, is it Bark rather than another EnCodec-decoded source? Fitted on the trace-positive
   clips only. It can only be as good as the few non-Bark EnCodec sources allow, so its out-of-source ROC-AUC
   shrinks it towards "cannot tell" (see ``Detector``): ``bark_probability`` never claims more than that.

The data come from few sources, each with its own rate, bandwidth, loudness and speakers, so the figures that count
are the grouped ones: for every source, models fitted on all the *other* sources score that source's clips (clean
and degraded). Thresholds are chosen on those out-of-source scores, and the shipped models are then fitted on
everything trainable. Evaluation-only clips (``Clip.trainable`` False) are scored, never fitted.
"""

from __future__ import annotations

import hashlib
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from barkkit.audio import load_audio
from barkkit.tokens import Audio
from barkkit_detect.augment import augment
from barkkit_detect.dataset import Clip
from barkkit_detect.features import SAMPLE_RATE, FeatureSet, prepare_audio
from barkkit_detect.metrics import compute_report

__all__ = ["FeatureTable", "extract_table", "make_classifier", "leave_one_source_out", "choose_threshold", "train", "AUGMENT_VERSION"]

Progress = Callable[[int, int], None]
AUGMENT_VERSION = 2  # part of the feature cache's key: 2 added the speed change


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
        samples, rate = augment(np.asarray(audio.samples), audio.sample_rate, rng, human=not clip.has_trace)
        rows.append(feature_set.extract(prepare_audio(Audio(samples, rate))))
    return rows


def _cached_rows(feature_set: FeatureSet, clip: Clip, n_augment: int, seed: int, cache_dir: str | None) -> list[np.ndarray]:
    """``_clip_rows``, kept in ``cache_dir`` (keyed by feature set, file, size, mtime, augmentation and seed)."""
    if cache_dir is None:
        return _clip_rows(feature_set, clip, n_augment, seed)
    stat = os.stat(clip.path)
    key = f"{feature_set.name}/{feature_set.version}/{os.path.abspath(clip.path)}/{stat.st_size}/{stat.st_mtime_ns}/{n_augment}/{seed}/{AUGMENT_VERSION}/{clip.has_trace}"
    path = Path(cache_dir) / (hashlib.sha1(key.encode()).hexdigest() + ".npy")
    if path.is_file():
        return list(np.load(path, allow_pickle=False))
    rows = _clip_rows(feature_set, clip, n_augment, seed)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, np.asarray(rows), allow_pickle=False)
    os.replace(tmp, path)
    return rows


def extract_table(
    clips: Sequence[Clip],
    feature_set: FeatureSet,
    *,
    n_augment: int = 4,
    seed: int = 0,
    jobs: int = 1,
    progress: Progress | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> FeatureTable:
    """Features of each clip as it is, plus ``n_augment`` random degradations of it (seeded per clip)."""
    seeds = np.random.SeedSequence(seed).spawn(len(clips))
    cache = None if cache_dir is None else str(cache_dir)
    if cache is not None:
        Path(cache).mkdir(parents=True, exist_ok=True)
    tasks = [(clip, int(s.generate_state(1)[0])) for clip, s in zip(clips, seeds)]
    if jobs == 1:
        results = (_cached_rows(feature_set, clip, n_augment, s, cache) for clip, s in tasks)
    else:
        from joblib import Parallel, delayed

        results = Parallel(n_jobs=jobs, return_as="generator")(delayed(_cached_rows)(feature_set, clip, n_augment, s, cache) for clip, s in tasks)
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

        # C 0.03 (v6; 0.3 before): stronger shrinkage gave 0.9-1.3 points more clean and 0.1-4.8 more degraded recall
        # out of source on three augmentation seeds (the model card lists them)
        classifier = LogisticRegression(C=0.03, class_weight="balanced", max_iter=5000)
    elif kind == "boosting":
        from sklearn.ensemble import HistGradientBoostingClassifier

        classifier = HistGradientBoostingClassifier(max_depth=3, max_iter=200, learning_rate=0.05, class_weight="balanced", random_state=0)
    else:
        raise ValueError(f"unknown classifier kind '{kind}'")
    return Pipeline([("scale", StandardScaler()), ("classify", classifier)])


def leave_one_source_out(X: np.ndarray, y: np.ndarray, groups: np.ndarray, fit: np.ndarray, kind: str = "logistic") -> np.ndarray:
    """Out-of-source probabilities (rows,): each source's rows scored by a model fitted on the other sources' rows
    that ``fit`` allows (nan where the rest holds one class only)."""
    scores = np.full(len(y), np.nan)
    for source in sorted(set(groups.tolist())):
        held = groups == source
        train_rows = ~held & fit
        if len(set(y[train_rows].tolist())) < 2:  # the rest has one class only: nothing to learn from
            continue
        model = make_classifier(kind).fit(X[train_rows], y[train_rows])
        scores[held] = model.predict_proba(X[held])[:, 1]
    return scores


def choose_threshold(is_bark: np.ndarray, scores: np.ndarray, max_fpr: float = 0.005, floor: float = 0.5) -> float:
    """The lowest threshold that flags at most ``max_fpr`` of the negative scores (leaning to few false positives).

    Never below ``floor``: the classifier's probabilities are class-balanced, so 0.5 is its own even-odds point.
    """
    negatives = np.sort(scores[~is_bark & np.isfinite(scores)])
    if negatives.size == 0:
        return 0.5
    allowed = int(np.floor(max_fpr * negatives.size))  # how many negatives may sit at or above the threshold
    edge = negatives[negatives.size - allowed - 1]  # the highest negative that must stay below
    return float(min(max(np.nextafter(edge, 1.0), floor), 0.99))


def _stage_two(X: np.ndarray, is_bark: np.ndarray, groups: np.ndarray, fit: np.ndarray, clean: np.ndarray, kind: str) -> tuple[np.ndarray, float, dict[str, float]]:
    """Out-of-source P(Bark | trace) of the trace rows, the weight it earns, and its clean out-of-source ROC-AUC
    against each non-Bark EnCodec source held out (``{source: auc}``).

    The weight is ``max(0, 2 * AUC - 1)`` of the *worst* of those sources: the second stage is trusted only as far as
    it tells Bark from every other EnCodec source it never saw (0 when a class is missing). Until v5 the pooled ROC-AUC
    set it (0.60-0.61 on 35 clips of 4 sources: weight 0.20-0.22); the stage never sees human speech, so on human
    copies it multiplied the trace by a factor anywhere in 0.39-0.61, which moved the threshold and cost 1-8 points of
    recall depending on the degradations drawn.
    """
    from sklearn.metrics import roc_auc_score

    scores = leave_one_source_out(X, is_bark, groups, fit, kind)
    judged = clean & np.isfinite(scores)
    if len(set(is_bark[judged].tolist())) < 2:
        return scores, 0.0, {}
    bark_scores = scores[judged & is_bark]
    per_source = {}
    for source in sorted(set(groups[judged & ~is_bark].tolist())):
        other = scores[judged & ~is_bark & (groups == source)]
        truth = np.r_[np.ones(bark_scores.size), np.zeros(other.size)]
        per_source[source] = float(roc_auc_score(truth, np.r_[bark_scores, other]))
    return scores, max(0.0, 2.0 * min(per_source.values()) - 1.0), per_source


def _threshold(scores: np.ndarray, clean: np.ndarray, degraded: np.ndarray, max_fpr: float, max_degraded_fpr: float, floor: float) -> float:
    """The lowest threshold flagging at most ``max_fpr`` of ``scores[clean]`` and ``max_degraded_fpr`` of ``scores[degraded]``."""
    cut = choose_threshold(np.zeros(int(clean.sum()), bool), scores[clean], max_fpr, floor=floor)
    if degraded.any():
        cut = max(cut, choose_threshold(np.zeros(int(degraded.sum()), bool), scores[degraded], max_degraded_fpr, floor=floor))
    return cut


def _flag_rates(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, dict[str, float]]:
    return {label: {"n": int(np.sum(labels == label)), "flagged": float(np.mean(scores[labels == label] >= threshold))} for label in sorted(set(labels.tolist()))}


def train(
    clips: Sequence[Clip],
    feature_set: FeatureSet,
    *,
    n_augment: int = 4,
    seed: int = 0,
    jobs: int = 1,
    kind: str = "logistic",
    max_fpr: float = 0.005,
    max_degraded_fpr: float = 0.02,
    progress: Progress | None = None,
    cache_dir: str | os.PathLike | None = None,
    table: FeatureTable | None = None,
) -> tuple[dict[str, Any], float, dict[str, Any]]:
    """Fit both stages on ``clips``. Returns ({"trace": pipeline[, "bark": pipeline]}, threshold, metadata).

    The threshold flags at most ``max_fpr`` of the clean out-of-source scores of speech that never went through
    EnCodec (``real``, ``other_tts``) and at most ``max_degraded_fpr`` of their degraded copies; the other labels are
    reported, not used for it. ``table``: the clips' features already extracted as ``extract_table`` gives them
    (``benchmarks/detector_loso.py`` keeps the degraded audio between runs); extracted here when None.
    """
    if table is None:
        table = extract_table(clips, feature_set, n_augment=n_augment, seed=seed, jobs=jobs, progress=progress, cache_dir=cache_dir)
    labels = np.array([clips[i].label for i in table.clip])
    sources = np.array([clips[i].source for i in table.clip])
    fit = np.array([clips[i].trainable for i in table.clip])
    has_trace = np.array([clips[i].has_trace for i in table.clip])
    is_bark = labels == "bark"
    natural = labels != "synthetic"
    n_sources = len({c.source for c in clips})
    veto_kind = "boosting" if (~natural & fit).any() else None
    if n_sources > 2:
        trace = leave_one_source_out(table.X, has_trace, sources, fit & natural, kind)
        if veto_kind:  # the trace model never sees synthetic signals; the veto, a nonlinear model, sees everything
            trace = np.minimum(trace, leave_one_source_out(table.X, has_trace, sources, fit, veto_kind))
    else:
        trace = np.full(len(labels), np.nan)
    given, weight, stage_two_auc = _stage_two(table.X, is_bark, sources, fit & has_trace, ~table.augmented & has_trace, kind)
    given = np.where(np.isfinite(given), 0.5 + weight * (given - 0.5), 0.5 + weight * 0.5)
    two_stages = len(set(is_bark[fit & has_trace].tolist())) == 2
    bark = trace * given if two_stages else trace
    scored = np.isfinite(bark)
    floor = 0.5 * (0.5 + weight / 2) if two_stages else 0.5  # even odds of the most bark_probability can say
    # the threshold: at most max_fpr of the clean out-of-source scores of speech that never went through EnCodec,
    # and at most max_degraded_fpr of their degraded copies (hum, buzz and codecs must not make a human voice Bark)
    human = scored & np.isin(labels, ("real", "other_tts"))
    calibrate, degraded = human & ~table.augmented, human & table.augmented
    evaluation: dict[str, Any] = {}
    if calibrate.any() and (scored & is_bark).any():
        threshold = _threshold(bark, calibrate, degraded, max_fpr, max_degraded_fpr, floor)
        trace_threshold = _threshold(trace, calibrate, degraded, max_fpr, max_degraded_fpr, 0.5)
        for name, mask in (("clean", scored & ~table.augmented), ("degraded", scored & table.augmented)):
            if mask.any():
                evaluation[name] = compute_report(labels[mask].tolist(), sources[mask].tolist(), bark[mask], threshold).as_dict()
                evaluation[name]["encodec_trace"] = _flag_rates(labels[mask], trace[mask], trace_threshold)
    else:  # too few sources to hold one out: in-sample thresholds below
        threshold = trace_threshold = float("nan")
    models = {"trace": make_classifier(kind).fit(table.X[fit & natural], has_trace[fit & natural])}
    if veto_kind:
        models["veto"] = make_classifier(veto_kind).fit(table.X[fit], has_trace[fit])
    if two_stages:
        models["bark"] = make_classifier(kind).fit(table.X[fit & has_trace], is_bark[fit & has_trace])
    if not evaluation:
        in_sample = models["trace"].predict_proba(table.X)[:, 1]
        threshold = trace_threshold = choose_threshold(has_trace, in_sample, max_fpr)
    metadata = _metadata(clips, kind, trace_threshold, weight if two_stages else 0.0, n_augment, seed, max_fpr, evaluation)
    metadata["training"]["max_degraded_fpr"] = max_degraded_fpr
    metadata["bark_stage_roc_auc"] = stage_two_auc  # out of source, per held-out non-Bark EnCodec source
    return models, threshold, metadata


def _metadata(clips: Sequence[Clip], kind: str, trace_threshold: float, weight: float, n_augment: int, seed: int, max_fpr: float, evaluation: dict[str, Any]) -> dict[str, Any]:
    """The sidecar's record of how a model was trained and what it scored out of source."""
    import sklearn

    counts: dict[str, dict[str, int]] = {}
    for clip in clips:
        counts.setdefault(clip.label, {}).setdefault(clip.source, 0)
        counts[clip.label][clip.source] += 1
    return {
        "sample_rate": SAMPLE_RATE,
        "classifier": kind,
        "trace_threshold": trace_threshold,
        "bark_weight": weight,
        "training": {
            "clips": counts,
            "evaluation_only": sorted({str(c.path.name) for c in clips if not c.trainable}),
            "n_augment": n_augment,
            "seed": seed,
            "max_fpr": max_fpr,
            "sklearn_version": sklearn.__version__,
            "python": platform.python_version(),
        },
        "leave_one_source_out": evaluation,
    }
