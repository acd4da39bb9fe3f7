"""Save and show figures the way scanpy's plotting functions do."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import matplotlib.pyplot as plt
import scanpy as sc
from matplotlib.figure import Figure

SaveTarget = bool | str | os.PathLike | None

_SCANPY_EXTENSIONS = (".svg", ".pdf", ".png")

Plotted = TypeVar("Plotted")
Function = TypeVar("Function", bound=Callable)

_AXES_OUTPUT_DOC = """\
ax
    Axes to draw into; a new figure by default.
show, save
    Show and/or save the figure as scanpy does (see :mod:`scgmdvae.pl`); the file name
    starts with ``{name}``.

Returns
-------
The Axes when the figure is not shown, else ``None``.
"""


def save_path(writekey: str, save: SaveTarget) -> Path | None:
    """File a figure is written to, or ``None`` when it is not saved.

    ``None`` follows :attr:`scanpy.settings.autosave`; ``True`` writes
    ``{figdir}/{writekey}{plot_suffix}.{file_format_figs}`` from :data:`scanpy.settings`; a
    string without a directory part is a scanpy suffix, ``{figdir}/{writekey}{save}...`` (a
    trailing ``.svg``, ``.pdf`` or ``.png`` sets the format); a :class:`~pathlib.Path` or a
    string with a directory part is the file itself (its extension sets the format).
    """
    save = sc.settings.autosave if save is None else save
    if save is False:
        return None
    if isinstance(save, os.PathLike) or (isinstance(save, str) and os.path.dirname(save)):
        return Path(save)
    suffix, extension = "", sc.settings.file_format_figs
    if isinstance(save, str):
        suffix = save
        for candidate in _SCANPY_EXTENSIONS:
            if save.endswith(candidate):
                suffix, extension = save.removesuffix(candidate), candidate[1:]
                break
    return Path(sc.settings.figdir) / f"{writekey}{suffix}{sc.settings.plot_suffix}.{extension}"


def finish(
    plotted: Plotted, figure: Figure, writekey: str, show: bool | None, save: SaveTarget
) -> Plotted | None:
    """Save and/or show ``figure``; return ``plotted`` (its axes or itself) unless shown.

    As in scanpy, ``show=None`` follows :attr:`scanpy.settings.autoshow`, a saved figure is
    written with ``bbox_inches="tight"`` and closed afterwards, and nothing is returned when
    the figure was shown.
    """
    path = save_path(writekey, save)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, bbox_inches="tight")
    show = sc.settings.autoshow if show is None else show
    if show:
        plt.show()
    if path is not None:
        plt.close(figure)
    return None if show else plotted


def document_axes_output(function: Function) -> Function:
    """Fill ``{axes_output}`` in the docstring with the docs of ``ax``, ``show``, ``save``.

    The placeholder stands indented like a parameter; it becomes those parameters and the
    Returns section of a one-panel plot.
    """
    text = textwrap.indent(_AXES_OUTPUT_DOC.format(name=function.__name__), "    ")
    function.__doc__ = function.__doc__.replace("    {axes_output}\n", text)
    return function
