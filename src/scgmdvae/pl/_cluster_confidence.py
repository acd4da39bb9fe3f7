"""Distribution of the cells' cluster confidence in each group."""

from __future__ import annotations

import numpy as np
from anndata import AnnData
from matplotlib.axes import Axes

from .._constants import RESULT_KEYS
from ._adata import groups, lookup
from ._axes import axes_or_new
from ._output import SaveTarget, document_axes_output, finish


@document_axes_output
def cluster_confidence(
    adata: AnnData,
    groupby: str = RESULT_KEYS.CLUSTER,
    *,
    confidence_key: str = RESULT_KEYS.CLUSTER_CONFIDENCE,
    ax: Axes | None = None,
    show: bool | None = None,
    save: SaveTarget = None,
) -> Axes | None:
    """Violin plot of the cluster confidence of the cells in each group.

    The confidence is the probability of a cell's assigned cluster. One violin (with its
    median) per category of ``adata.obs[groupby]`` in category order, labelled with the
    number of cells; a category without cells keeps its tick but has no violin, and cells with
    a missing value form a last group ``"NA"``.

    Parameters
    ----------
    adata
        AnnData with the model's results (:meth:`~scgmdvae.CGMDVAE.write_results`).
    groupby
        ``.obs`` column that groups the cells; by default the assigned cluster.
    confidence_key
        ``.obs`` column of the confidence, for example ``"cgmdvae_prediction_confidence"``.
    {axes_output}

    Raises
    ------
    KeyError
        If ``groupby`` or ``confidence_key`` is not a column of ``adata.obs``.
    """
    confidence = np.asarray(lookup(adata, "obs", confidence_key), dtype=float)
    codes, names = groups(adata, groupby)
    per_group = [confidence[codes == code] for code in range(len(names))]
    positions = [position for position, values in enumerate(per_group) if values.size]
    ax = axes_or_new(ax, (1.0 + 0.6 * len(names), 3.5))
    ax.violinplot(
        [per_group[position] for position in positions],
        positions=positions,
        showmedians=True,
        showextrema=False,
    )
    labels = [f"{name}\n(n={values.size})" for name, values in zip(names, per_group, strict=True)]
    ax.set_xticks(np.arange(len(names)), labels, rotation=90)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel(groupby)
    ax.set_ylabel(confidence_key)
    return finish(ax, ax.figure, "cluster_confidence", show, save)
