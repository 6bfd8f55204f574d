"""Segmentation metrics per class, background excluded: Dice, IoU and pixel accuracy.

Inputs are integer label maps of the same shape (any shape): 0 background, k the k-th class.
A class absent from both truth and prediction scores Dice 1 and IoU 1 (nothing to find,
nothing found).
"""
from __future__ import annotations

import numpy as np


def class_counts(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, 4) int64 counts [tp, fp, fn, tn] for classes 1..n_classes."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    out = np.zeros((n_classes, 4), np.int64)
    n = pred.size
    for k in range(1, n_classes + 1):
        p, t = pred == k, truth == k
        tp = int(np.count_nonzero(p & t))
        fp = int(np.count_nonzero(p)) - tp
        fn = int(np.count_nonzero(t)) - tp
        out[k - 1] = (tp, fp, fn, n - tp - fp - fn)
    return out


def scores(counts: np.ndarray) -> list[dict]:
    """[tp, fp, fn, tn] rows -> one ``{"dice", "iou", "accuracy"}`` dict per class."""
    res = []
    for tp, fp, fn, tn in np.asarray(counts, np.int64):
        union = tp + fp + fn
        res.append({
            "dice": 1.0 if union == 0 else float(2 * tp / (2 * tp + fp + fn)),
            "iou": 1.0 if union == 0 else float(tp / union),
            "accuracy": float((tp + tn) / max(tp + fp + fn + tn, 1)),
        })
    return res


def case_metrics(pred, truth, class_names) -> dict:
    """``{class name: {"dice", "iou", "accuracy"}}`` of one case."""
    return dict(zip(class_names, scores(class_counts(pred, truth, len(class_names)))))


class MetricAccumulator:
    """Collects cases; ``summary()`` gives per class the pooled Dice/IoU/accuracy (pixel counts
    summed over all cases) and the mean of the per-case Dice (``mean_case_dice``)."""

    def __init__(self, class_names):
        self.class_names = list(class_names)
        self.counts = np.zeros((len(self.class_names), 4), np.int64)
        self.cases = []  # (case id, per-class metrics)

    def add(self, pred, truth, case_id: str = "") -> dict:
        c = class_counts(pred, truth, len(self.class_names))
        self.counts += c
        m = dict(zip(self.class_names, scores(c)))
        self.cases.append((case_id, m))
        return m

    def summary(self) -> dict:
        pooled = dict(zip(self.class_names, scores(self.counts)))
        for name in self.class_names:
            per_case = [m[name]["dice"] for _, m in self.cases]
            pooled[name]["mean_case_dice"] = float(np.mean(per_case)) if per_case else float("nan")
        return pooled

    def mean_dice(self) -> float:
        """Mean over classes of the pooled Dice (the validation score used for model selection)."""
        s = self.summary()
        return float(np.mean([s[n]["dice"] for n in self.class_names]))


def dice(pred, truth) -> float:
    """Dice of two masks of the same shape (nonzero is foreground); 1.0 when both are empty.
    The binary case of ``scores``: ``2 |P & T| / (|P| + |T|)``."""
    return scores(class_counts(np.asarray(pred) != 0, np.asarray(truth) != 0, 1))[0]["dice"]
