"""Tests for core.metrics: GLUE's task metrics, and the one agreement measure between two models."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dynastudio.core.metrics import agreement, compute_metric


def onehot(preds, k=2):
    out = np.zeros((len(preds), k))
    out[np.arange(len(preds)), preds] = 1.0
    return out


def test_accuracy():
    m = compute_metric("accuracy", onehot([0, 1, 1, 0]), np.array([0, 1, 0, 0]))
    assert m == {"accuracy": 0.75, "score": 0.75}


def test_f1():
    # tp=2, fp=1, fn=1 -> precision 2/3, recall 2/3, F1 2/3; accuracy 3/5
    m = compute_metric("f1", onehot([1, 1, 1, 0, 0]), np.array([1, 1, 0, 1, 0]))
    assert m["f1"] == pytest.approx(2 / 3) and m["score"] == m["f1"] and m["accuracy"] == pytest.approx(0.6)
    assert compute_metric("f1", onehot([0, 0]), np.array([0, 0]))["f1"] == 0.0


def test_matthews():
    # tp=3 tn=2 fp=1 fn=1: (6-1)/sqrt(4*4*3*3) = 5/12
    preds = [1, 1, 1, 1, 0, 0, 0]
    gold = [1, 1, 1, 0, 1, 0, 0]
    m = compute_metric("matthews", onehot(preds), np.array(gold))
    assert m["matthews"] == pytest.approx(5 / 12) and m["score"] == m["matthews"]
    assert compute_metric("matthews", onehot([1, 1, 1]), np.array([0, 1, 1]))["score"] == 0.0
    assert compute_metric("matthews", onehot([0, 1, 2], 3), np.array([0, 1, 2]))["score"] == pytest.approx(1.0)


def test_pearson_spearman_with_ties():
    preds = np.array([[1.0], [2.0], [2.0], [4.0]])
    gold = np.array([1.0, 3.0, 2.0, 2.0])
    m = compute_metric("pearson_spearman", preds, gold)
    # pearson: dx = [-1.25,-.25,-.25,1.75], dy = [-1,1,0,0]: sum dxdy = 1.0, |dx|^2 = 4.75, |dy|^2 = 2
    assert m["pearson"] == pytest.approx(1.0 / math.sqrt(4.75 * 2))
    # ranks: preds [1, 2.5, 2.5, 4], gold [1, 4, 2.5, 2.5]; dx = [-1.5,0,0,1.5], dy = [-1.5,1.5,0,0]
    assert m["spearman"] == pytest.approx(2.25 / math.sqrt(4.5 * 4.5))
    assert m["score"] == pytest.approx((m["pearson"] + m["spearman"]) / 2)
    flat = compute_metric("pearson_spearman", np.ones((3, 1)), np.array([1.0, 2.0, 3.0]))
    assert flat["score"] == 0.0


def test_unknown_metric():
    with pytest.raises(ValueError):
        compute_metric("bleu", onehot([0]), np.array([0]))


def test_agreement_of_classifiers_is_the_share_of_same_predicted_classes():
    a, b = onehot([0, 1, 1, 0, 2], 3), onehot([0, 1, 0, 0, 1], 3)
    assert agreement(a, b, regression=False) == (pytest.approx(0.6), "same predicted class")
    assert agreement(a[:0], b[:0], regression=False)[0] == 0.0  # no rows: nothing agrees, and no warning


def test_agreement_of_scores_is_pearson_r():
    a = np.array([[1.0], [2.0], [3.0], [5.0]])
    value, kind = agreement(a, 2 * a + 1, regression=True)
    assert value == pytest.approx(1.0) and kind.startswith("Pearson r")
    assert agreement(a, -a, regression=True)[0] == pytest.approx(-1.0)
    # one output column reads as scores even when not flagged as regression
    assert agreement(a, a, regression=False)[0] == pytest.approx(1.0)
    # constant columns have no correlation: they agree only if equal
    assert agreement(np.ones((3, 1)), np.ones((3, 1)), regression=True)[0] == 1.0
    assert agreement(np.ones((3, 1)), np.zeros((3, 1)), regression=True)[0] == 0.0


def test_agreement_needs_outputs_of_one_shape():
    with pytest.raises(ValueError, match="one shape"):
        agreement(np.zeros((3, 2)), np.zeros((4, 2)), regression=False)
