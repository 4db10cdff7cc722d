"""Task metrics (GLUE's) and the one agreement measure between two models' outputs on the same rows."""

from __future__ import annotations

import numpy as np

METRICS = ("accuracy", "f1", "matthews", "pearson_spearman")


def compute_metric(metric: str, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """GLUE's metric for a task, from scikit-learn and scipy: accuracy, F1 of class 1 (MRPC, QQP),
    Matthews correlation (CoLA), Pearson and Spearman correlation (STS-B; score = their mean)."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if metric == "pearson_spearman":
        preds = logits.reshape(len(logits), -1)[:, 0] if logits.ndim > 1 else logits
        gold = labels.astype(np.float64)
        if len(gold) < 2 or preds.std() == 0 or gold.std() == 0:
            pearson = spearman = 0.0  # a constant has no correlation (scipy would warn and return nan)
        else:
            pearson, spearman = float(pearsonr(preds, gold).statistic), float(spearmanr(preds, gold).statistic)
        return {"pearson": pearson, "spearman": spearman, "score": (pearson + spearman) / 2}
    if metric not in METRICS:
        raise ValueError(f"unknown metric '{metric}': expected one of {', '.join(METRICS)}")
    preds = logits.argmax(axis=-1) if logits.ndim > 1 else (logits > 0).astype(np.int64)
    gold = labels.astype(np.int64)
    accuracy = float(accuracy_score(gold, preds)) if len(gold) else 0.0
    if metric == "accuracy":
        return {"accuracy": accuracy, "score": accuracy}
    if metric == "f1":
        f1 = float(f1_score(gold, preds, pos_label=1, average="binary", zero_division=0.0))
        return {"f1": f1, "accuracy": accuracy, "score": f1}
    mcc = float(matthews_corrcoef(gold, preds)) if len(gold) else 0.0
    return {"matthews": mcc, "score": mcc}


def agreement(a: np.ndarray, b: np.ndarray, *, regression: bool) -> tuple[float, str]:
    """How often model `a` says what reference `b` says, on the same rows, and how that was measured.

    Classification: the fraction of rows with the same predicted class. Regression (or a single output):
    Pearson r of the two score columns; two constant columns count as agreeing only if they are equal.
    Export, latency and the benches all use this one measure, so a figure means the same everywhere.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"agreement needs outputs of one shape, got {a.shape} and {b.shape}")
    if a.ndim > 1 and a.shape[-1] > 1 and not regression:
        return float((a.argmax(-1) == b.argmax(-1)).mean()) if len(a) else 0.0, "same predicted class"
    from scipy.stats import pearsonr

    x, y = a.reshape(-1).astype(np.float64), b.reshape(-1).astype(np.float64)
    if len(x) > 1 and x.std() > 0 and y.std() > 0:
        return float(pearsonr(x, y).statistic), "Pearson r of the two models' scores"
    return float(np.allclose(x, y)), "Pearson r of the two models' scores"
