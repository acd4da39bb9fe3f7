"""Grid of generated images: one row per cluster or per traversal."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import scipy.sparse
from anndata import AnnData
from matplotlib.colors import Colormap
from matplotlib.figure import Figure

from ._adata import groups
from ._output import SaveTarget, finish


def grid_from_groups(adata: AnnData, groupby: str) -> tuple[np.ndarray, list[str]]:
    """Rows of ``adata.X`` stacked per group, padded with NaN: ``(n_groups, n_max, n_features)``.

    Groups without cells are left out; group names are returned in category order.
    """
    codes, names = groups(adata, groupby)
    matrix = adata.X.toarray() if scipy.sparse.issparse(adata.X) else np.asarray(adata.X)
    present = [code for code in range(len(names)) if (codes == code).any()]
    width = max(int((codes == code).sum()) for code in present)
    grid = np.full((len(present), width, matrix.shape[1]), np.nan)
    for row, code in enumerate(present):
        members = matrix[codes == code]
        grid[row, : len(members)] = members
    return grid, [names[code] for code in present]


def image_grid(
    images: np.ndarray | AnnData,
    image_shape: Sequence[int],
    *,
    groupby: str = "cluster",
    n_cols: int | None = None,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    cmap: str | Colormap = "gray",
    vmin: float | None = None,
    vmax: float | None = None,
    panel_size: float = 0.8,
    show: bool | None = None,
    save: SaveTarget = None,
) -> Figure | None:
    """Show generated images in a grid, one row per cluster or traversal.

    Takes either an array of shape ``(n_rows, n_cols, n_pixels)``, such as the output of
    :meth:`~scgmdvae.CGMDVAE.traverse_latent` (rows are clusters, columns are the traversal
    steps), or an AnnData from :meth:`~scgmdvae.CGMDVAE.sample`, whose cells are put in one
    row per category of ``obs[groupby]`` that has cells (rows are filled from the left,
    shorter rows stay blank). All images share one colour scale.

    Parameters
    ----------
    images
        Array ``(n_rows, n_cols, n_pixels)`` or AnnData with one image per cell in ``X``.
    image_shape
        Shape of one image, for example ``(28, 28)``, or ``(height, width, 3)`` for RGB.
    groupby
        For an AnnData: ``.obs`` column that defines the rows (``"cluster"`` from
        :meth:`~scgmdvae.CGMDVAE.sample`, or ``"condition"``).
    n_cols
        Images shown per row; by default all.
    row_labels
        Labels of the rows; by default the group names for an AnnData and none for an array.
    col_labels
        Labels of the columns (for example the traversal values); none by default.
    cmap
        Colour map of single-channel images.
    vmin, vmax
        Colour scale; by default the smallest and largest value of all images shown.
    panel_size
        Width and height of each image, in inches.
    show, save
        Show and/or save the figure as scanpy does (see :mod:`scgmdvae.pl`); the file name
        starts with ``image_grid``.

    Returns
    -------
    The figure, with one Axes per grid cell, when it is not shown, else ``None``.

    Raises
    ------
    KeyError
        If ``groupby`` is not a column of the AnnData's ``obs``.
    ValueError
        If the array is not three-dimensional, its pixels do not fill ``image_shape``, or the
        labels do not match the grid.
    """
    if isinstance(images, AnnData):
        grid, group_names = grid_from_groups(images, groupby)
        row_labels = group_names if row_labels is None else row_labels
    else:
        grid = np.asarray(images, dtype=float)
    if grid.ndim != 3:
        raise ValueError(f"images must have shape (n_rows, n_cols, n_pixels), not {grid.shape}.")
    if int(np.prod(image_shape)) != grid.shape[2]:
        raise ValueError(
            f"image_shape {tuple(image_shape)} holds {int(np.prod(image_shape))} pixels, "
            f"but the images have {grid.shape[2]}."
        )
    grid = grid[:, :n_cols]
    n_rows, n_columns = grid.shape[:2]
    row_labels = [] if row_labels is None else [str(label) for label in row_labels]
    col_labels = [] if col_labels is None else [str(label) for label in col_labels]
    for name, labels, expected in [("row", row_labels, n_rows), ("col", col_labels, n_columns)]:
        if labels and len(labels) != expected:
            raise ValueError(f"{name}_labels has {len(labels)} entries for {expected} {name}s.")
    vmin = np.nanmin(grid) if vmin is None else vmin
    vmax = np.nanmax(grid) if vmax is None else vmax
    figure, axes = plt.subplots(
        n_rows,
        n_columns,
        figsize=(panel_size * n_columns, panel_size * n_rows),
        squeeze=False,
        gridspec_kw={"wspace": 0.05, "hspace": 0.05},
    )
    for (row, column), ax in np.ndenumerate(axes):
        image = grid[row, column]
        ax.set_xticks([])
        ax.set_yticks([])
        if np.isnan(image).all():
            ax.axis("off")
            continue
        ax.imshow(image.reshape(image_shape), cmap=cmap, vmin=vmin, vmax=vmax)
    for row, label in enumerate(row_labels):
        axes[row, 0].set_ylabel(label, rotation=0, ha="right", va="center")
    for column, label in enumerate(col_labels):
        axes[0, column].set_title(label, fontsize="small")
    return finish(figure, figure, "image_grid", show, save)
