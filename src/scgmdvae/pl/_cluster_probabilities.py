"""Heatmap of the cluster probabilities ``q(y|z,c)`` of every cell."""

from __future__ import annotations

import numpy as np
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.colors import Colormap

from .._constants import RESULT_KEYS
from ._adata import groups, read_cluster_probabilities
from ._axes import axes_or_new, draw_matrix
from ._output import SaveTarget, document_axes_output, finish


@document_axes_output
def cluster_probabilities(
    adata: AnnData,
    groupby: str = RESULT_KEYS.CLUSTER,
    *,
    probs_key: str = RESULT_KEYS.CLUSTER_PROBS,
    cmap: str | Colormap = "viridis",
    ax: Axes | None = None,
    show: bool | None = None,
    save: SaveTarget = None,
) -> Axes | None:
    """Heatmap of the cluster probabilities, one row per cell and one column per cluster.

    Cells are sorted by group (in the category order of ``adata.obs[groupby]``; cells with a
    missing value last) and, within a group, by decreasing probability of their most probable
    cluster. Lines separate the groups, whose names label the y-axis. Columns are the clusters
    named by ``adata.uns["cgmdvae"]["cluster_names"]``. Needs the keys written by
    :meth:`~scgmdvae.CGMDVAE.write_results`.

    Parameters
    ----------
    adata
        AnnData with the model's results.
    groupby
        ``.obs`` column that groups the rows; by default the assigned cluster. A cell-type
        column shows how each type spreads over the clusters.
    probs_key
        ``.obsm`` key of the probabilities.
    cmap
        Colour map of the probabilities (fixed range 0 to 1).
    {axes_output}

    Raises
    ------
    KeyError
        If ``groupby``, ``probs_key`` or ``uns["cgmdvae"]["cluster_names"]`` is missing.
    """
    probs, names = read_cluster_probabilities(adata, probs_key)
    codes, group_names = groups(adata, groupby)
    order = np.lexsort((-probs.max(axis=1), codes))
    ax = axes_or_new(ax, (2.0 + 0.45 * len(names), 5.0))
    draw_matrix(ax, probs[order], names, cmap, "cluster probability", vmax=1.0)
    sizes = np.bincount(codes, minlength=len(group_names))
    ends = np.cumsum(sizes)
    present = sizes > 0
    ax.set_yticks((ends - sizes / 2 - 0.5)[present], np.asarray(group_names)[present])
    for end in ends[present][:-1]:
        ax.axhline(end - 0.5, color="white", linewidth=1.0)
    ax.set_xlabel("cluster")
    ax.set_ylabel(groupby)
    return finish(ax, ax.figure, "cluster_probabilities", show, save)
