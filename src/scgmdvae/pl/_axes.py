"""Axes shared by the plotting functions: a new or given Axes, and a matrix drawn as an image."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import Colormap


def axes_or_new(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    """``ax``, or the Axes of a new figure of size ``figsize``."""
    if ax is not None:
        return ax
    return plt.subplots(figsize=figsize)[1]


def draw_matrix(
    ax: Axes,
    values: np.ndarray,
    column_names: Sequence[str],
    cmap: str | Colormap,
    colorbar_label: str,
    vmax: float | None = None,
) -> None:
    """Draw ``values`` as an image with one named tick per column and a colour bar."""
    image = ax.imshow(
        values, aspect="auto", interpolation="nearest", cmap=cmap, vmin=0.0, vmax=vmax
    )
    ax.set_xticks(np.arange(len(column_names)), column_names, rotation=90)
    ax.figure.colorbar(image, ax=ax, label=colorbar_label)
