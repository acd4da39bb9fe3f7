"""Clustering metrics against known labels.

Every function accepts any one-dimensional array-like of labels (strings, integers, a
:class:`pandas.Categorical`, a :class:`pandas.Series`, ...). Cells whose *reference* label
(``labels_true`` or ``conditions``) is missing (``NaN``/``None``) are dropped before scoring, so
partially annotated data sets can be scored on their labelled cells only. Predicted cluster
labels must not be missing.
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
import pandas as pd
import scipy.stats
from numpy.typing import ArrayLike
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

__all__ = [
    "adjusted_rand_index",
    "clustering_scores",
    "condition_mixing_entropy",
    "hungarian_accuracy",
    "hungarian_mapping",
    "normalized_mutual_info",
    "purity",
]


def _clean(
    labels_true: ArrayLike, labels_pred: ArrayLike
) -> tuple[pd.Categorical, pd.Categorical]:
    """Validate the inputs and drop cells without a reference label.

    Parameters
    ----------
    labels_true
        Reference labels; missing values mark cells to drop.
    labels_pred
        Predicted labels (clusters), one per cell.

    Returns
    -------
    The reference and predicted labels of the kept cells, as categoricals.

    Raises
    ------
    ValueError
        If the inputs are not one-dimensional, differ in length, if a kept cell has no predicted
        label, or if no cell has a reference label.

    """
    true = np.asarray(labels_true, dtype=object)
    pred = np.asarray(labels_pred, dtype=object)
    if true.ndim != 1 or pred.ndim != 1:
        raise ValueError("Labels must be one-dimensional.")
    if len(true) != len(pred):
        raise ValueError(
            f"Labels differ in length: {len(true)} reference vs {len(pred)} predicted."
        )
    keep = ~pd.isna(true)
    if not keep.any():
        raise ValueError("No cells left to score: every reference label is missing.")
    if pd.isna(pred[keep]).any():
        raise ValueError("Predicted labels must not be missing.")
    return pd.Categorical(true[keep]), pd.Categorical(pred[keep])


def _contingency(labels_true: ArrayLike, labels_pred: ArrayLike) -> pd.DataFrame:
    """Count cells per (predicted, reference) pair; rows are clusters, columns labels."""
    true, pred = _clean(labels_true, labels_pred)
    table = np.zeros((len(pred.categories), len(true.categories)), dtype=np.int64)
    np.add.at(table, (pred.codes, true.codes), 1)
    return pd.DataFrame(table, index=pred.categories, columns=true.categories)


def _match(table: pd.DataFrame) -> dict[Hashable, Hashable]:
    """Map clusters to labels one-to-one, maximising the number of matched cells."""
    rows, cols = linear_sum_assignment(table.to_numpy(), maximize=True)
    return dict(zip(table.index[rows].tolist(), table.columns[cols].tolist(), strict=True))


def adjusted_rand_index(labels_true: ArrayLike, labels_pred: ArrayLike) -> float:
    """Compute the adjusted Rand index between reference labels and clusters.

    Parameters
    ----------
    labels_true
        Reference labels; cells with a missing label are dropped.
    labels_pred
        Predicted clusters.

    Returns
    -------
    The adjusted Rand index: 1 for identical partitions, about 0 for random ones.

    """
    true, pred = _clean(labels_true, labels_pred)
    return float(adjusted_rand_score(true.codes, pred.codes))


def normalized_mutual_info(labels_true: ArrayLike, labels_pred: ArrayLike) -> float:
    """Normalised mutual information (arithmetic normalisation) between labels and clusters.

    Parameters
    ----------
    labels_true
        Reference labels; cells with a missing label are dropped.
    labels_pred
        Predicted clusters.

    Returns
    -------
    The normalised mutual information, in [0, 1].

    """
    true, pred = _clean(labels_true, labels_pred)
    return float(normalized_mutual_info_score(true.codes, pred.codes))


def hungarian_mapping(labels_true: ArrayLike, labels_pred: ArrayLike) -> dict[Hashable, Hashable]:
    """Match clusters to reference labels one-to-one (Hungarian algorithm).

    The matching maximises the number of cells whose cluster is mapped to their own label. With
    more clusters than labels some clusters stay unmatched (and are absent from the result); with
    more labels than clusters some labels are never matched.

    Parameters
    ----------
    labels_true
        Reference labels; cells with a missing label are dropped.
    labels_pred
        Predicted clusters.

    Returns
    -------
    A mapping from each matched cluster to its label.

    """
    return _match(_contingency(labels_true, labels_pred))


def hungarian_accuracy(labels_true: ArrayLike, labels_pred: ArrayLike) -> float:
    """Accuracy after optimally matching clusters to labels one-to-one.

    Cells in clusters left unmatched by :func:`hungarian_mapping` count as errors.

    Parameters
    ----------
    labels_true
        Reference labels; cells with a missing label are dropped.
    labels_pred
        Predicted clusters.

    Returns
    -------
    The fraction of cells whose matched cluster label equals their reference label.

    """
    table = _contingency(labels_true, labels_pred)
    matched = sum(table.at[cluster, label] for cluster, label in _match(table).items())
    return float(matched / table.to_numpy().sum())


def purity(labels_true: ArrayLike, labels_pred: ArrayLike) -> float:
    """Cluster purity: the fraction of cells carrying the majority label of their cluster.

    Parameters
    ----------
    labels_true
        Reference labels; cells with a missing label are dropped.
    labels_pred
        Predicted clusters.

    Returns
    -------
    The purity, in (0, 1]; it reaches 1 trivially with one cluster per cell.

    """
    table = _contingency(labels_true, labels_pred).to_numpy()
    return float(table.max(axis=1).sum() / table.sum())


def clustering_scores(labels_true: ArrayLike, labels_pred: ArrayLike) -> dict[str, float]:
    """All clustering scores of this module at once.

    Parameters
    ----------
    labels_true
        Reference labels; cells with a missing label are dropped.
    labels_pred
        Predicted clusters.

    Returns
    -------
    A dictionary with keys ``"ari"``, ``"nmi"``, ``"accuracy"`` (Hungarian) and ``"purity"``.

    """
    return {
        "ari": adjusted_rand_index(labels_true, labels_pred),
        "nmi": normalized_mutual_info(labels_true, labels_pred),
        "accuracy": hungarian_accuracy(labels_true, labels_pred),
        "purity": purity(labels_true, labels_pred),
    }


def condition_mixing_entropy(clusters: ArrayLike, conditions: ArrayLike) -> float:
    """Normalised entropy of the condition mix within clusters.

    For each cluster, the Shannon entropy of its distribution over conditions is divided by
    ``log(n_conditions)``; the result is the mean over clusters weighted by cluster size. A value
    of 1 means every cluster holds the conditions in equal shares, 0 means every cluster holds
    a single condition.

    Parameters
    ----------
    clusters
        Cluster of each cell.
    conditions
        Condition (batch, stimulation, ...) of each cell; cells with a missing condition are
        dropped.

    Returns
    -------
    The size-weighted mean normalised entropy, in [0, 1].

    Raises
    ------
    ValueError
        If fewer than two conditions are present, or on the input errors of the other metrics.

    """
    table = _contingency(conditions, clusters).to_numpy()
    n_conditions = table.shape[1]
    if n_conditions < 2:
        raise ValueError("Mixing entropy needs at least two conditions.")
    entropy = scipy.stats.entropy(table, axis=1) / np.log(n_conditions)
    return float(np.average(entropy, weights=table.sum(axis=1)))


def expected_calibration_error(
    labels_true: ArrayLike, probabilities: pd.DataFrame, n_bins: int = 10
) -> float:
    """Return the expected calibration error of predicted probabilities (Guo et al. 2017).

    Cells are binned by the probability of their predicted label (the column with the highest
    probability) into ``n_bins`` equal-width bins; the error is the mean over bins, weighted by
    their size, of ``|accuracy − mean probability|``.

    Parameters
    ----------
    labels_true
        True label of each cell; cells with a missing label are dropped.
    probabilities
        Cells × labels, with the label names as columns (as
        :meth:`~scgmdvae.CGMDVAE.predict` with ``soft=True`` returns).
    n_bins
        Number of probability bins.

    Returns
    -------
    The error, in [0, 1]; 0 for a calibrated model.
    """
    labels = pd.Series(np.asarray(labels_true, dtype=object))
    keep = labels.notna().to_numpy()
    values = probabilities.to_numpy()[keep]
    if len(values) == 0:
        raise ValueError("No cell has a label.")
    confidence = values.max(1)
    predicted = np.asarray(probabilities.columns, dtype=object)[values.argmax(1)]
    correct = predicted.astype(str) == labels[keep].astype(str).to_numpy()
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    error = 0.0
    for b in np.unique(bins):
        members = bins == b
        error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)
