"""Plotting functions for the results of :class:`~scgmdvae.CGMDVAE`.

They follow scanpy's conventions:

- ``show``: show the figure with :func:`matplotlib.pyplot.show`; ``None`` follows
  :attr:`scanpy.settings.autoshow` (``True`` by default). When the figure is not shown the
  function returns its Axes (one-panel plots) or its Figure (grids), else ``None``.
- ``save``: ``None`` follows :attr:`scanpy.settings.autosave` (``False`` by default). ``True``
  writes ``{figdir}/{name}{plot_suffix}.{file_format_figs}`` from :data:`scanpy.settings`,
  where ``name`` is the function's name; a string without a directory part is, as in scanpy,
  a suffix of the file name (``save="_kang.png"`` writes ``figures/confusion_matrix_kang.png``;
  a trailing ``.png``, ``.pdf`` or ``.svg`` sets the format). Unlike scanpy, a
  :class:`~pathlib.Path` or a string with a directory part (``"plots/heatmap.png"``) is the
  output file itself, its extension setting the format. Figures are written with
  ``bbox_inches="tight"`` and, as in scanpy, closed after saving.
- One-panel plots take ``ax=`` to draw into an existing Axes.
- Missing keys raise a :class:`KeyError` naming the keys present.
"""

from ._cluster_confidence import cluster_confidence
from ._cluster_probabilities import cluster_probabilities
from ._confusion_matrix import confusion_matrix
from ._image_grid import image_grid
from ._training_curves import training_curves

__all__ = [
    "cluster_confidence",
    "cluster_probabilities",
    "confusion_matrix",
    "image_grid",
    "training_curves",
]
