"""Cluster-versus-label matrix with the Hungarian-matched pairs on the diagonal."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.colors import Colormap

from .._constants import RESULT_KEYS
from ..metrics import _contingency, hungarian_accuracy, hungarian_mapping
from ._adata import lookup
from ._axes import axes_or_new, draw_matrix
from ._output import SaveTarget, document_axes_output, finish

_NORMALIZE_AXIS = {"cluster": 1, "label": 0}


def matched_order(table: pd.DataFrame, mapping: dict) -> pd.DataFrame:
    """Reorder a clusters × labels table so that matched pairs lie on the diagonal.

    Matched labels come first in their own order with their clusters in the same order;
    unmatched clusters (rows) and labels (columns) follow.
    """
    cluster_of = {label: cluster for cluster, label in mapping.items()}
    labels = [label for label in table.columns if label in cluster_of]
    clusters = [cluster_of[label] for label in labels]
    rows = clusters + [cluster for cluster in table.index if cluster not in mapping]
    columns = labels + [label for label in table.columns if label not in cluster_of]
    return table.loc[rows, columns]


@document_axes_output
def confusion_matrix(
    adata: AnnData,
    label_key: str,
    cluster_key: str = RESULT_KEYS.CLUSTER,
    *,
    normalize: Literal["label", "cluster"] | None = "label",
    annotate: bool = True,
    cmap: str | Colormap = "Blues",
    ax: Axes | None = None,
    show: bool | None = None,
    save: SaveTarget = None,
) -> Axes | None:
    """Matrix of cell counts (or fractions) per cluster (rows) and reference label (columns).

    Clusters and labels are matched one-to-one with :func:`scgmdvae.metrics.hungarian_mapping`
    and ordered so that the matched pairs form the diagonal, starting at the top left;
    unmatched clusters and labels come last. The title gives
    :func:`scgmdvae.metrics.hungarian_accuracy`. Cells without a label are left out, as in
    the metrics.

    Parameters
    ----------
    adata
        AnnData with clusters and reference labels in ``.obs``.
    label_key
        ``.obs`` column of the reference labels (for example cell types).
    cluster_key
        ``.obs`` column of the clusters; by default the model's assigned clusters.
    normalize
        ``"label"``: each column sums to 1 (where each label's cells went); ``"cluster"``:
        each row sums to 1 (what each cluster is made of); ``None``: cell counts.
    annotate
        Write each entry in its square.
    cmap
        Colour map of the entries.
    {axes_output}

    Raises
    ------
    KeyError
        If ``label_key`` or ``cluster_key`` is not a column of ``adata.obs``.
    ValueError
        If ``normalize`` is not ``"label"``, ``"cluster"`` or ``None``.
    """
    if normalize is not None and normalize not in _NORMALIZE_AXIS:
        raise ValueError(f"normalize must be 'label', 'cluster' or None, not {normalize!r}.")
    labels = lookup(adata, "obs", label_key)
    clusters = lookup(adata, "obs", cluster_key)
    counts = _contingency(labels, clusters)
    table = matched_order(counts, hungarian_mapping(labels, clusters))
    values = table.to_numpy(dtype=float)
    if normalize is not None:
        values = values / values.sum(axis=_NORMALIZE_AXIS[normalize], keepdims=True)
    n_rows, n_columns = values.shape
    ax = axes_or_new(ax, (2.5 + 0.5 * n_columns, 1.5 + 0.45 * n_rows))
    draw_matrix(
        ax,
        values,
        [str(label) for label in table.columns],
        cmap,
        "cells" if normalize is None else f"fraction of {normalize}",
    )
    ax.set_yticks(np.arange(n_rows), [str(cluster) for cluster in table.index])
    if annotate:
        threshold = values.max() / 2
        for (row, column), value in np.ndenumerate(values):
            ax.text(
                column,
                row,
                f"{value:.0f}" if normalize is None else f"{value:.2f}",
                ha="center",
                va="center",
                fontsize="small",
                color="white" if value > threshold else "black",
            )
    ax.set_xlabel(label_key)
    ax.set_ylabel(cluster_key)
    ax.set_title(f"Hungarian accuracy {hungarian_accuracy(labels, clusters):.3f}")
    return finish(ax, ax.figure, "confusion_matrix", show, save)
