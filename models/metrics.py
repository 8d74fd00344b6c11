"""Classification metrics for zero-shot evaluation (numpy only): accuracy, balanced accuracy, macro F1,
one-vs-rest macro AUROC, the confusion matrix, and the figures of chance and constant predictors.

They follow scikit-learn's definitions (``balanced_accuracy_score``, ``f1_score(average="macro")``,
``roc_auc_score(multi_class="ovr", average="macro")``), against which the tests check them; the one
difference: a class absent from the labels is left out of the AUROC (and named) instead of raising.
"""
from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts; row = true class, column = predicted class."""
    m = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return m


def _per_class(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tp = np.diag(m).astype(float)
    return tp, m.sum(0) - tp, m.sum(1) - tp  # true positives, false positives, false negatives


def balanced_accuracy(m: np.ndarray) -> float:
    """Mean recall over the classes that occur in the labels."""
    support = m.sum(1)
    present = support > 0
    return float((np.diag(m)[present] / support[present]).mean())


def macro_f1(m: np.ndarray) -> float:
    """Mean F1 over the classes that occur in the labels or the predictions (0 where undefined)."""
    tp, fp, fn = _per_class(m)
    used = (m.sum(0) + m.sum(1)) > 0
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1[used].mean())


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ranks = np.empty(len(x), dtype=float)
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + 1 + e) / 2.0
    return ranks


def binary_auroc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: the Mann-Whitney probability that a positive outscores a negative (ties 1/2)."""
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both positives and negatives")
    r = _ranks(np.asarray(scores, dtype=float))
    return float((r[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def macro_auroc(y_true: np.ndarray, probs: np.ndarray) -> tuple[float | None, list[int]]:
    """One-vs-rest AUROC averaged over classes; (value or None, classes left out for lack of positives
    or negatives in ``y_true``)."""
    y_true = np.asarray(y_true)
    values, left_out = [], []
    for c in range(probs.shape[1]):
        pos = y_true == c
        if pos.all() or not pos.any():
            left_out.append(c)
            continue
        values.append(binary_auroc(pos, probs[:, c]))
    return (float(np.mean(values)) if values else None), left_out


def classification_report(y_true, probs, names: list[str]) -> dict:
    """Every metric for integer labels (N,) and class probabilities (N, C), plus the baselines."""
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 2 or len(y_true) != len(probs) or probs.shape[1] != len(names):
        raise ValueError(f"labels {y_true.shape} and probabilities {probs.shape} do not match {len(names)} classes")
    if len(y_true) == 0:
        raise ValueError("no labelled image to score")
    pred = probs.argmax(1)
    m = confusion_matrix(y_true, pred, len(names))
    auroc, left_out = macro_auroc(y_true, probs)
    return {"n": int(len(y_true)), "accuracy": float((pred == y_true).mean()),
            "balanced_accuracy": balanced_accuracy(m),
            "macro_f1": macro_f1(m), "auroc_macro_ovr": auroc, "auroc_left_out": [names[c] for c in left_out],
            "confusion_matrix": m.tolist(), "classes": list(names),
            "support": dict(zip(names, m.sum(1).tolist())), "baselines": baselines(y_true, len(names))}


def baselines(y_true: np.ndarray, num_classes: int) -> dict:
    """What a model that has learnt nothing scores on these labels.

    ``chance``: the expected figures of uniform random guessing over the ``num_classes`` classes (accuracy and
    balanced accuracy 1/C, macro F1 over the classes in the labels, AUROC 0.5). ``constant``: always the most
    frequent label (accuracy = its share, balanced accuracy 1/present classes, AUROC 0.5 from tied scores).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    counts = np.bincount(y_true, minlength=num_classes)
    share = counts / counts.sum()
    present = counts > 0
    # Uniform guessing: class c has precision share_c and recall 1/C in expectation, so F1 = 2 s/C / (s + 1/C).
    f1_chance = np.where(present, 2 * share / num_classes / np.maximum(share + 1 / num_classes, 1e-12), 0.0)
    majority = int(counts.argmax())
    m = confusion_matrix(y_true, np.full_like(y_true, majority), num_classes)
    return {"chance": {"accuracy": 1 / num_classes, "balanced_accuracy": 1 / num_classes,
                       "macro_f1": float(f1_chance.sum() / num_classes), "auroc_macro_ovr": 0.5},
            "constant": {"class": majority, "accuracy": float(share[majority]),
                         "balanced_accuracy": balanced_accuracy(m), "macro_f1": macro_f1(m), "auroc_macro_ovr": 0.5}}
