"""What the Dirichlet buys, and clustering-guided training: Kang et al. (2018) and MNIST.

For each dataset, with the same seed and epochs for every model:

- Ablation: c*GMΔVÆ with the Dirichlet prior on the mixture weights (``mixture_weights=
  "dirichlet"``, α = 1) vs fixed uniform weights (``"uniform"``, the plain GMVAE), at two
  numbers of components (Kang: K = 8 and 20; MNIST: K = 10 and 20).
- Guided: Leiden on PCA (50 components), resolution scanned for the cluster count closest to
  the number of classes (8 or 10, chosen without labels), scored alone, and c*GMΔVÆ trained
  with :meth:`~scgmdvae.CGMDVAE.train_guided` on that guide (half the epochs guided, then
  free; K = max(classes, guide clusters)), and the same with every epoch guided.
- k-means initialisation: :meth:`~scgmdvae.CGMDVAE.train_from_kmeans` with its default phases
  (K = number of classes, Dirichlet).

Kang: cells with a ``cell_type`` annotation, 2,000 HVGs (:func:`_common.load_kang_hvg`), counts
with the condition registered; the guide's PCA is on log-normalised counts. MNIST: a fixed
random 10,000 images of the ``train`` split (the same for every seed), pixels scaled to [0, 1],
Bernoulli likelihood, no condition; PCA on the pixels. Every method is scored on the cells it
was trained on (the guide is a clustering of those cells): ARI, NMI, Hungarian accuracy (one
cluster per class; cells of unmatched clusters count as errors), ``size_entropy`` (entropy of
the cluster sizes divided by log K, 1 = all K clusters equal), ``n_used`` (clusters with any
cell) and ``n_clusters_1pct`` (clusters holding at least 1 % of cells).

Two entries of :mod:`benchmarks.run`::

    python -m benchmarks.run ablation-kang|ablation-mnist [--seeds 0 1 2] [--epochs N]
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import anndata as ad
import numpy as np
import pandas as pd
import scvi
from benchmarks._common import ELBO_SETTINGS, GUIDE_KEY, Benchmark, add_guide, load_kang_hvg
from benchmarks.mnist import DEFAULT_MNIST
from scipy.stats import entropy

from scgmdvae import CGMDVAE
from scgmdvae.data import load_mnist
from scgmdvae.metrics import clustering_scores

WEIGHTS = ("dirichlet", "uniform")
TRAIN_KWARGS = {"enable_progress_bar": False}


def score(truth: pd.Series, clusters: np.ndarray, n_components: int) -> dict:
    """Agreement with ``truth``, balance of the cluster sizes and the number of clusters used."""
    clusters = np.asarray(clusters).astype(str)
    share = np.unique(clusters, return_counts=True)[1] / clusters.size
    return {
        **clustering_scores(truth, clusters),
        "size_entropy": float(entropy(share) / np.log(n_components)),
        "n_used": int(share.size),
        "n_clusters_1pct": int((share >= 0.01).sum()),
    }


def compare(
    adata: ad.AnnData,
    truth_key: str,
    n_classes: int,
    ks: tuple[int, int],
    seed: int,
    epochs: int,
    setup: dict,
    **model_kwargs,
) -> list[dict]:
    """Dirichlet vs uniform at each K, the guide alone and the guided models: one row each.

    The guided model is trained guided for half of the epochs, then freely; the row "guided
    phase only" trains guided for all epochs, to show what the free phase changes. The row
    "k-means init" uses ``train_from_kmeans`` (its own k-means guide, no Leiden).
    """
    truth = adata.obs[truth_key]
    CGMDVAE.setup_anndata(adata, **setup)
    n_guide = adata.obs[GUIDE_KEY].nunique()
    k_guided = max(n_classes, n_guide)
    trainings = {
        "free": lambda model: model.train(max_epochs=epochs, mixture_init=None, **TRAIN_KWARGS),
        "half guided": lambda model: model.train_guided(
            GUIDE_KEY, max_epochs=epochs, n_epochs_guided=max(1, epochs // 2), **TRAIN_KWARGS
        ),
        "all guided": lambda model: model.train_guided(
            GUIDE_KEY, max_epochs=epochs, n_epochs_guided=epochs, **TRAIN_KWARGS
        ),
        "k-means init": lambda model: model.train_from_kmeans(max_epochs=epochs, **TRAIN_KWARGS),
    }
    runs = [(f"{weights}, K={k}", k, weights, "free") for k in ks for weights in WEIGHTS]
    runs += [
        ("guided (Leiden guide), dirichlet", k_guided, "dirichlet", "half guided"),
        ("guided phase only, dirichlet", k_guided, "dirichlet", "all guided"),
        (f"k-means init, dirichlet, K={n_classes}", n_classes, "dirichlet", "k-means init"),
    ]
    rows = [
        {"method": "guide alone (PCA + Leiden)", **score(truth, adata.obs[GUIDE_KEY], n_guide)}
    ]
    for name, k, weights, training in runs:
        scvi.settings.seed = seed
        start = time.perf_counter()
        settings = {**ELBO_SETTINGS, "mixture_weights": weights, **model_kwargs}
        model = CGMDVAE(adata, n_clusters=k, **settings)
        trainings[training](model)
        row = {"method": name, **score(truth, model.predict_clusters(), k)}
        row["seconds"] = round(time.perf_counter() - start, 1)
        print(row, flush=True)
        rows.append(row)
    return rows


def kang_data() -> tuple[ad.AnnData, dict]:
    """The annotated Kang cells with their counts, and how the comparison treats them."""
    adata = load_kang_hvg()
    adata = adata[adata.obs["cell_type"].notna()].copy()
    adata.obs["cell_type"] = adata.obs["cell_type"].astype(str)
    return adata, {
        "truth_key": "cell_type",
        "n_classes": 8,
        "ks": (8, 20),
        "log_normalise": True,
        "setup": {"layer": "counts", "condition_key": "condition"},
        "model_kwargs": {},
    }


def mnist_data(n_images: int = 10_000) -> tuple[ad.AnnData, dict]:
    """A fixed random subset of the MNIST train split, pixels in [0, 1], and its treatment."""
    adata = load_mnist(DEFAULT_MNIST)
    train = np.flatnonzero(adata.obs["split"] == "train")
    keep = np.random.default_rng(0).choice(train, min(n_images, train.size), replace=False)
    adata = adata[np.sort(keep)].copy()
    adata.X = np.asarray(adata.X, dtype=np.float32) / 255.0
    adata.obs["label"] = adata.obs["label"].astype(str)
    return adata, {
        "truth_key": "label",
        "n_classes": 10,
        "ks": (10, 20),
        "log_normalise": False,
        "setup": {},
        "model_kwargs": {"gene_likelihood": "bernoulli"},
    }


def run_on(load: Callable[[], tuple[ad.AnnData, dict]], seeds: list[int], epochs: int) -> dict:
    """Guide, ablation and guided model for every seed on the data ``load`` returns."""
    adata, spec = load()
    rows = []
    for seed in seeds:
        data = adata.copy()
        resolution = add_guide(data, spec["n_classes"], seed, spec["log_normalise"])
        new = compare(
            data,
            spec["truth_key"],
            spec["n_classes"],
            spec["ks"],
            seed,
            epochs,
            spec["setup"],
            **spec["model_kwargs"],
        )
        new[0]["leiden_resolution"] = resolution
        rows.extend({**row, "seed": seed} for row in new)
    return {"n_cells": adata.n_obs, "n_genes": adata.n_vars, "rows": rows}


FIGURE_METRICS = ("ari", "nmi", "accuracy", "n_clusters_1pct")
KANG = Benchmark("guided_ablation_kang", 30, FIGURE_METRICS, partial(run_on, kang_data))
MNIST = Benchmark("guided_ablation_mnist", 20, FIGURE_METRICS, partial(run_on, mnist_data))
