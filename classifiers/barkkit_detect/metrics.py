"""Detector metrics: ROC-AUC, equal error rate, and rates at the decision threshold, overall, per label, per source."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from barkkit.errors import BarkkitError
from barkkit.files import atomic_output

__all__ = ["Report", "compute_report", "format_report", "equal_error_rate", "plot_curves"]


def equal_error_rate(is_bark: np.ndarray, scores: np.ndarray) -> float:
    """The rate where false positives equal misses (nan when only one class is present)."""
    from sklearn.metrics import roc_curve

    if is_bark.all() or not is_bark.any():
        return float("nan")
    fpr, tpr, _ = roc_curve(is_bark, scores)
    miss = 1 - tpr
    i = int(np.argmin(np.abs(fpr - miss)))
    return float((fpr[i] + miss[i]) / 2)


@dataclass
class Report:
    threshold: float
    n: int
    roc_auc: float
    eer: float
    precision: float
    recall: float
    fpr: float
    per_label: dict[str, dict[str, Any]] = field(default_factory=dict)
    per_source: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("threshold", "n", "roc_auc", "eer", "precision", "recall", "fpr", "per_label", "per_source")}


def compute_report(labels: Sequence[str], sources: Sequence[str], scores: Sequence[float], threshold: float) -> Report:
    """Metrics of ``scores`` (bark probabilities) against ``labels`` ("bark" positive, anything else negative).

    Per label and per source: the count, the share flagged at ``threshold`` (recall for Bark, false-positive rate
    for the rest), and the ROC-AUC of that group against all clips of the other class.
    """
    from sklearn.metrics import roc_auc_score

    labels_a = np.asarray(labels)
    sources_a = np.asarray(sources)
    scores_a = np.asarray(scores, dtype=np.float64)
    is_bark = labels_a == "bark"
    flagged = scores_a >= threshold
    both = is_bark.any() and (~is_bark).any()
    auc = float(roc_auc_score(is_bark, scores_a)) if both else float("nan")
    true_positives = int(np.sum(flagged & is_bark))
    precision = true_positives / max(int(flagged.sum()), 1)
    recall = true_positives / int(is_bark.sum()) if is_bark.any() else float("nan")
    fpr = float(np.mean(flagged[~is_bark])) if (~is_bark).any() else float("nan")

    def group(mask: np.ndarray) -> dict[str, Any]:
        positive = bool(is_bark[mask].all())
        others = ~is_bark if positive else is_bark
        auc_g = float("nan")
        if others.any() and mask.any():
            auc_g = float(roc_auc_score(np.r_[np.ones(mask.sum()), np.zeros(others.sum())] == (1 if positive else 0),
                                        np.r_[scores_a[mask], scores_a[others]]))  # fmt: skip
        return {
            "n": int(mask.sum()),
            "flagged": float(np.mean(flagged[mask])),
            "mean_score": float(np.mean(scores_a[mask])),
            "roc_auc": auc_g,
        }

    per_label = {label: group(labels_a == label) for label in sorted(set(labels_a.tolist()))}
    per_source = {}
    for source in sorted(set(sources_a.tolist())):
        mask = sources_a == source
        for label in sorted(set(labels_a[mask].tolist())):
            per_source[f"{source} [{label}]"] = group(mask & (labels_a == label))
    return Report(float(threshold), int(len(scores_a)), auc, equal_error_rate(is_bark, scores_a), float(precision), float(recall), fpr, per_label, per_source)


def format_report(report: Report, title: str = "") -> str:
    """A plain-text table of a report."""

    def pct(x: float) -> str:
        return "   n/a" if x != x else f"{100 * x:5.1f}%"

    def num(x: float) -> str:
        return "  n/a" if x != x else f"{x:.3f}"

    lines = [title] if title else []
    lines += [
        f"clips {report.n}   threshold {report.threshold:.3f}",
        f"ROC-AUC {num(report.roc_auc)}   EER {pct(report.eer)}   precision {pct(report.precision)}   "
        f"recall {pct(report.recall)}   false-positive rate {pct(report.fpr)}",
        "",
        f"{'group':58s} {'n':>5s} {'flagged':>8s} {'ROC-AUC':>8s}",
    ]
    for heading, groups in (("label", report.per_label), ("source", report.per_source)):
        for name, g in groups.items():
            lines.append(f"{heading + ' ' + name:58.58s} {g['n']:5d} {pct(g['flagged']):>8s} {num(g['roc_auc']):>8s}")
    lines.append("(flagged: recall for bark, false-positive rate for the others)")
    return "\n".join(lines)


def plot_curves(labels: Sequence[str], scores: Sequence[float], threshold: float, path: str) -> None:
    """Draw the ROC and precision-recall curves (with the threshold marked) to an image file."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BarkkitError("--plot needs matplotlib: pip install 'barkkit[plot]' (or pip install matplotlib)") from None
    from sklearn.metrics import precision_recall_curve, roc_curve

    is_bark = np.asarray(labels) == "bark"
    scores_a = np.asarray(scores, dtype=np.float64)
    if is_bark.all() or not is_bark.any():
        raise BarkkitError("--plot needs both Bark and non-Bark clips in the data")
    fpr, tpr, _ = roc_curve(is_bark, scores_a)
    precision, recall, _ = precision_recall_curve(is_bark, scores_a)
    flagged = scores_a >= threshold
    at_fpr, at_tpr = float(np.mean(flagged[~is_bark])), float(np.mean(flagged[is_bark]))
    at_precision = float(np.sum(flagged & is_bark) / max(flagged.sum(), 1))
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4.5))
    left.plot(fpr, tpr)
    left.plot([0, 1], [0, 1], linestyle=":", color="grey")
    left.scatter([at_fpr], [at_tpr], color="red", zorder=3, label=f"threshold {threshold:.2f}")
    left.set(xlabel="false-positive rate", ylabel="true-positive rate (recall)", title="ROC", xlim=(0, 1), ylim=(0, 1.01))
    left.legend(loc="lower right")
    right.plot(recall, precision)
    right.scatter([at_tpr], [at_precision], color="red", zorder=3, label=f"threshold {threshold:.2f}")
    right.set(xlabel="recall", ylabel="precision", title="precision-recall", xlim=(0, 1), ylim=(0, 1.01))
    right.legend(loc="lower left")
    figure.tight_layout()
    try:
        with atomic_output(path) as tmp:  # the format follows the name's extension, which the temporary keeps
            figure.savefig(tmp, dpi=100)
    finally:
        plt.close(figure)
