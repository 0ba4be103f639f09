"""The official GLUE metrics, computed exactly as the benchmark defines them.

MCC (CoLA), accuracy, F1 of the positive class (MRPC, QQP), Pearson and Spearman
correlation (STS-B). Degenerate inputs (a constant prediction) give 0 correlation/MCC,
as scikit-learn does, rather than NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def accuracy(pred: Sequence[int], gold: Sequence[int]) -> float:
    return sum(int(p == g) for p, g in zip(pred, gold, strict=True)) / max(len(gold), 1)


def f1_binary(pred: Sequence[int], gold: Sequence[int], positive: int = 1) -> float:
    tp = sum(1 for p, g in zip(pred, gold, strict=True) if p == positive and g == positive)
    fp = sum(1 for p, g in zip(pred, gold, strict=True) if p == positive and g != positive)
    fn = sum(1 for p, g in zip(pred, gold, strict=True) if p != positive and g == positive)
    if tp == 0:
        return 0.0
    return 2 * tp / (2 * tp + fp + fn)


def matthews_corrcoef(pred: Sequence[int], gold: Sequence[int]) -> float:
    tp = sum(1 for p, g in zip(pred, gold, strict=True) if p == 1 and g == 1)
    tn = sum(1 for p, g in zip(pred, gold, strict=True) if p == 0 and g == 0)
    fp = sum(1 for p, g in zip(pred, gold, strict=True) if p == 1 and g == 0)
    fn = sum(1 for p, g in zip(pred, gold, strict=True) if p == 0 and g == 1)
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 0.0 if denom == 0 else (tp * tn - fp * fn) / denom


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    from scipy.stats import pearsonr

    if len(set(x)) < 2 or len(set(y)) < 2:
        return 0.0
    return float(pearsonr(x, y).statistic)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    if len(set(x)) < 2 or len(set(y)) < 2:
        return 0.0
    return float(spearmanr(x, y).statistic)


METRIC_FUNCTIONS = {
    "accuracy": accuracy,
    "f1": f1_binary,
    "mcc": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}
