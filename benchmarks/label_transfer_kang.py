"""Cell-type transfer from control to IFN-β stimulated PBMCs: c*GMΔVÆ vs scANVI.

Kang et al. (2018), 2,000 HVGs selected on counts. Cell types are given only for control cells
(stimulated cells and cells without annotation are unlabelled); the condition is registered as
``condition_key`` / ``batch_key``. Predictions are scored on the stimulated cells that have an
annotation: accuracy, balanced accuracy and macro-F1.

Every method gets the same total number of epochs and the same seed:

- scANVI, scvi-tools' recipe: SCVI for ``epochs - finetune`` epochs, then
  ``SCANVI.from_scvi_model`` for ``finetune`` epochs.
- c*GMΔVÆ (semi-supervised): trained with the labels for ``epochs`` epochs.
- c*GMΔVÆ (from unsupervised): unsupervised for ``epochs - finetune`` epochs, then
  ``CGMDVAE.from_unsupervised`` for ``finetune`` epochs (the same recipe as scANVI).

``finetune = min(10, max(2, round(epochs / 3)))``, the rule SCANVI.train applies to a
pretrained model. Usage::

    python benchmarks/label_transfer_kang.py [--data PATH] [--out DIR] [--epochs N]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch

torch.set_num_threads(1)

import anndata as ad  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scvi  # noqa: E402
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score  # noqa: E402

from _common import (  # noqa: E402
    DEFAULT_KANG,
    DEFAULT_OUT,
    load_kang_hvg,
    train_semi_supervised,
    write_json,
)
from scgmdvae import CGMDVAE  # noqa: E402

LABELS_KEY = "transfer_label"
UNLABELED = "Unknown"
SEED = 0
TRAIN_KWARGS = {"enable_progress_bar": False}


def finetune_epochs(epochs: int) -> int:
    """Epochs of the labelled stage of a two-stage recipe (SCANVI.train's rule)."""
    return min(10, max(2, round(epochs / 3)))


def control_labels(adata: ad.AnnData) -> pd.Categorical:
    """Cell types of annotated control cells; every other cell is ``UNLABELED``."""
    keep = (adata.obs["condition"] == "ctrl") & adata.obs["cell_type"].notna()
    labels = adata.obs["cell_type"].astype(object).where(keep, UNLABELED)
    return pd.Categorical(labels)


def run_scanvi(adata: ad.AnnData, epochs: int) -> np.ndarray:
    """SCVI pretraining, then SCANVI.from_scvi_model; returns predicted label names."""
    scvi.model.SCVI.setup_anndata(
        adata, layer="counts", batch_key="condition", labels_key=LABELS_KEY
    )
    vae = scvi.model.SCVI(adata)
    vae.train(max_epochs=epochs - finetune_epochs(epochs), **TRAIN_KWARGS)
    scanvi = scvi.model.SCANVI.from_scvi_model(vae, unlabeled_category=UNLABELED)
    scanvi.train(max_epochs=finetune_epochs(epochs), **TRAIN_KWARGS)
    return np.asarray(scanvi.predict(), dtype=str)


def run_cgmdvae(adata: ad.AnnData, epochs: int) -> np.ndarray:
    """c*GMΔVÆ trained with the labels from the start."""
    model = train_semi_supervised(adata, LABELS_KEY, UNLABELED, epochs)
    return np.asarray(model.predict(), dtype=str)


def run_cgmdvae_from_unsupervised(adata: ad.AnnData, epochs: int) -> np.ndarray:
    """Unsupervised c*GMΔVÆ, then CGMDVAE.from_unsupervised (scANVI's two-stage recipe)."""
    n_labels = len(adata.obs[LABELS_KEY].cat.categories) - 1
    CGMDVAE.setup_anndata(adata, layer="counts", condition_key="condition")
    unsupervised = CGMDVAE(adata, n_clusters=n_labels)
    unsupervised.train(max_epochs=epochs - finetune_epochs(epochs), **TRAIN_KWARGS)
    model = CGMDVAE.from_unsupervised(unsupervised, LABELS_KEY, UNLABELED)
    model.train(max_epochs=finetune_epochs(epochs), **TRAIN_KWARGS)
    return np.asarray(model.predict(), dtype=str)


METHODS: dict[str, Callable[[ad.AnnData, int], np.ndarray]] = {
    "scANVI (SCVI + from_scvi_model)": run_scanvi,
    "c*GMΔVÆ (semi-supervised)": run_cgmdvae,
    "c*GMΔVÆ (from_unsupervised)": run_cgmdvae_from_unsupervised,
}


def score(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy and macro-F1 over the reference cell types."""
    return {
        "accuracy": accuracy_score(truth, predicted),
        "balanced_accuracy": balanced_accuracy_score(truth, predicted),
        "macro_f1": f1_score(truth, predicted, average="macro", labels=np.unique(truth)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_KANG)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--epochs", type=int, default=40, help="total epochs per method")
    args = parser.parse_args()

    adata = load_kang_hvg(args.data)
    adata.obs[LABELS_KEY] = control_labels(adata)
    evaluate = ((adata.obs["condition"] == "stim") & adata.obs["cell_type"].notna()).to_numpy()
    truth = adata.obs["cell_type"].astype(str).to_numpy()[evaluate]

    rows = []
    for name, method in METHODS.items():
        scvi.settings.seed = SEED
        start = time.perf_counter()
        predicted = method(adata.copy(), args.epochs)[evaluate]
        seconds = time.perf_counter() - start
        rows.append({"method": name, **score(truth, predicted), "seconds": seconds})
        print(f"{name}: {rows[-1]}", flush=True)

    table = pd.DataFrame(rows).set_index("method")
    n_labelled = int((adata.obs[LABELS_KEY] != UNLABELED).sum())
    print(
        f"\nKang 2018, {adata.n_vars} HVGs, labels on {n_labelled}"
        f" control cells, scored on {evaluate.sum()} annotated stimulated cells, "
        f"{args.epochs} epochs per method (finetune {finetune_epochs(args.epochs)}), seed {SEED}"
    )
    print(table.round(4).to_string())
    result = {
        "epochs": args.epochs,
        "finetune_epochs": finetune_epochs(args.epochs),
        "seed": SEED,
        "n_genes": adata.n_vars,
        "n_cells": adata.n_obs,
        "n_scored": int(evaluate.sum()),
        "results": rows,
    }
    write_json(result, args.out, "label_transfer_kang")


if __name__ == "__main__":
    main()
