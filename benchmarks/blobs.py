"""Synthetic blobs with a condition: the defaults with K given and with K chosen by the model.

The data are the tests' (:func:`scgmdvae.data.synthetic_blobs` with 100 cells per type and
condition, 4 types, 2 conditions, 800 cells, drawn once with its default seed); the seeds are
the models'. Per seed, what a user gets: ``CGMDVAE(adata, n_clusters=4)`` and ``CGMDVAE(adata)``
(the model chooses the number of clusters), each ``train(max_epochs)``, scored against the
types. Beside the model that chose K, Leiden at scanpy's default resolution (1) on its latent
means: the mixture should find at least what a kNN graph of its latent space finds.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import scanpy as sc
import scvi

import scgmdvae
from scgmdvae import CGMDVAE
from scgmdvae.metrics import clustering_scores

NAME = "blobs"
DEFAULT_EPOCHS = 60
FIGURE_METRICS = ("ari", "n_clusters")
N_TYPES = 4


def blobs() -> ad.AnnData:
    """The tests' blobs: 4 types × 2 conditions × 100 cells, counts in ``layers["counts"]``."""
    return scgmdvae.data.synthetic_blobs(n_cells_per_group=100, n_clusters=N_TYPES, n_conditions=2)


def score(adata: ad.AnnData, clusters: np.ndarray) -> dict:
    """ARI, NMI, accuracy and purity against the types, and the number of clusters."""
    return {
        **clustering_scores(adata.obs["cluster"], clusters),
        "n_clusters": len(np.unique(clusters)),
    }


def run_seed(seed: int, epochs: int) -> list[dict]:
    """Both rows of one seed, and Leiden on the latent space of the model that chose K."""
    rows = []
    for n_clusters in (N_TYPES, None):
        scvi.settings.seed = seed
        adata = blobs()
        CGMDVAE.setup_anndata(adata, layer="counts", condition_key="condition")
        model = CGMDVAE(adata, n_clusters=n_clusters)
        model.train(max_epochs=epochs, enable_progress_bar=False)
        name = "c*GMΔVÆ defaults" + (", K chosen" if n_clusters is None else f" K={n_clusters}")
        clusters = np.asarray(model.predict_clusters(), dtype=str)
        rows.append({"method": f"{name} (own clusters)", **score(adata, clusters)})
    adata.obsm["X_cgmdvae"] = model.get_latent_representation()
    sc.pp.neighbors(adata, use_rep="X_cgmdvae", random_state=seed)
    sc.tl.leiden(adata, flavor="igraph", n_iterations=2, directed=False, random_state=seed)
    leiden = adata.obs["leiden"].to_numpy()
    rows.append({"method": f"{name} latent + Leiden, resolution 1", **score(adata, leiden)})
    return rows


def run(seeds: list[int], epochs: int) -> dict:
    """Every row for every seed."""
    rows = []
    for seed in seeds:
        for row in run_seed(seed, epochs):
            row["seed"] = seed
            print(row, flush=True)
            rows.append(row)
    return {"n_cells": blobs().n_obs, "n_types": N_TYPES, "rows": rows}
