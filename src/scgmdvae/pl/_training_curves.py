"""Training curves of each loss term from a model's history."""

from __future__ import annotations

from collections.abc import Sequence
from math import ceil

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from scvi.model.base import BaseModelClass

from ._output import SaveTarget, finish

LOSS_TERMS = ("reconstruction_loss", "kl_z", "kl_w", "kl_y", "kl_d", "classification_loss")
SPLITS = ("train", "validation")


def curves(history: dict[str, pd.DataFrame], term: str) -> dict[str, pd.Series]:
    """Per-epoch values of ``term`` per split, logged as ``{term}_{split}`` or ``{split}_{term}``.

    scvi-tools logs ELBO terms as ``kl_z_train`` and classification terms as
    ``train_classification_loss``.
    """
    found = {}
    for split in SPLITS:
        for name in (f"{term}_{split}", f"{split}_{term}"):
            if name in history:
                found[split] = history[name].iloc[:, 0].astype(float)
                break
    return found


def training_curves(
    model: BaseModelClass,
    terms: Sequence[str] | None = None,
    *,
    n_cols: int = 3,
    figsize: tuple[float, float] | None = None,
    show: bool | None = None,
    save: SaveTarget = None,
) -> Figure | None:
    """One panel per loss term of :attr:`~scgmdvae.CGMDVAE.history`, per epoch.

    Each panel shows the training curve and, when the model was validated (for example with
    labelled cells or ``check_val_every_n_epoch``), the validation curve. The terms are the
    unweighted ELBO terms the module logs: the reconstruction loss and the KL divergences of
    ``z``, ``w``, ``y`` and ``d`` (the KL warm-up weight is not applied), plus the
    classification loss of semi-supervised training.

    Parameters
    ----------
    model
        A trained model.
    terms
        Names of the logged terms, without the split (``"elbo"``, ``"kl_local"``,
        ``"accuracy"``, …); by default those of ``reconstruction_loss``, ``kl_z``, ``kl_w``,
        ``kl_y``, ``kl_d`` and ``classification_loss`` that were logged.
    n_cols
        Panels per row.
    figsize
        Size of the figure; by default 3.2 × 2.6 inches per panel.
    show, save
        Show and/or save the figure as scanpy does (see :mod:`scgmdvae.pl`); the file name
        starts with ``training_curves``.

    Returns
    -------
    The figure, one Axes per term, when it is not shown, else ``None``.

    Raises
    ------
    ValueError
        If the model has no training history.
    KeyError
        If a requested term was not logged.
    """
    history = model.history
    if not history:
        raise ValueError("The model has no training history; train it first.")
    if terms is None:
        panels = {term: curves(history, term) for term in LOSS_TERMS}
        panels = {term: found for term, found in panels.items() if found}
    else:
        panels = {term: curves(history, term) for term in terms}
        missing = [term for term, found in panels.items() if not found]
        if missing:
            raise KeyError(f"Terms not in model.history: {missing}. Logged: {sorted(history)}.")
    n_rows = ceil(len(panels) / n_cols)
    figure, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=figsize or (3.2 * n_cols, 2.6 * n_rows),
        squeeze=False,
        layout="constrained",
    )
    for ax, (term, found) in zip(axes.flat, panels.items(), strict=False):
        for split, values in found.items():
            ax.plot(values.index, values.to_numpy(), label=split)
        ax.set_title(term)
        ax.set_xlabel("epoch")
        ax.legend(fontsize="small")
    for ax in axes.flat[len(panels) :]:
        figure.delaxes(ax)
    return finish(figure, figure, "training_curves", show, save)
