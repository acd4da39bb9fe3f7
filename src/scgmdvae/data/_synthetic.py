"""Synthetic conditional-categorical count data ("blobs"), as in the thesis' toy experiments."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse


def synthetic_blobs(
    n_cells_per_group: int = 100,
    n_clusters: int = 4,
    n_conditions: int = 2,
    n_genes: int = 100,
    marker_fold_change: float = 3.0,
    n_markers_per_cluster: int = 10,
    condition_fold_change: float = 2.0,
    n_condition_genes: int = 20,
    mean_library_size: float = 2_000.0,
    dispersion: float = 10.0,
    as_sparse: bool = False,
    seed: int = 0,
) -> ad.AnnData:
    """Draw negative-binomial counts from ``n_clusters`` cell types × ``n_conditions`` conditions.

    Each cluster over-expresses its own marker genes by ``marker_fold_change``; each condition
    other than the first multiplies a random set of ``n_condition_genes`` genes by
    ``condition_fold_change`` (up or down) in every cluster, so that an unconditional model is
    tempted to split clusters by condition.

    Parameters
    ----------
    n_cells_per_group
        Cells drawn for each (cluster, condition) pair.
    n_clusters
        Number of cell types.
    n_conditions
        Number of conditions, named ``"A"``, ``"B"``, …
    n_genes
        Number of genes; must be at least ``n_clusters * n_markers_per_cluster``.
    marker_fold_change
        Fold change of a cluster's marker genes.
    n_markers_per_cluster
        Number of marker genes of each cluster (disjoint sets).
    condition_fold_change
        Fold change of condition-responsive genes relative to the first condition.
    n_condition_genes
        Number of condition-responsive genes of each non-reference condition.
    mean_library_size
        Mean total counts per cell (log-normal, σ = 0.3).
    dispersion
        Inverse dispersion ``theta`` of the negative binomial.
    as_sparse
        Store counts as a CSR matrix.
    seed
        Seed of the random generator.

    Returns
    -------
    AnnData with raw counts in ``X`` and ``layers["counts"]``; ``obs["cluster"]`` and
    ``obs["condition"]`` (categorical); ``uns["synthetic_blobs"]["log_means"]``, the true
    normalised log-expression of shape ``(n_clusters, n_conditions, n_genes)``.
    """
    if n_genes < n_clusters * n_markers_per_cluster:
        raise ValueError(
            f"n_genes={n_genes} is smaller than n_clusters * n_markers_per_cluster = "
            f"{n_clusters * n_markers_per_cluster}."
        )
    rng = np.random.default_rng(seed)
    log_means = np.tile(rng.normal(0.0, 1.0, n_genes), (n_clusters, n_conditions, 1))
    for k in range(n_clusters):
        markers = slice(k * n_markers_per_cluster, (k + 1) * n_markers_per_cluster)
        log_means[k, :, markers] += np.log(marker_fold_change)
    for c in range(1, n_conditions):
        responsive = rng.choice(n_genes, n_condition_genes, replace=False)
        direction = rng.choice([-1.0, 1.0], n_condition_genes)
        log_means[:, c, responsive] += direction * np.log(condition_fold_change)
    proportions = np.exp(log_means)
    proportions /= proportions.sum(-1, keepdims=True)

    clusters = np.repeat(np.arange(n_clusters), n_conditions * n_cells_per_group)
    conditions = np.tile(np.repeat(np.arange(n_conditions), n_cells_per_group), n_clusters)
    library = rng.lognormal(np.log(mean_library_size), 0.3, clusters.size)
    mu = library[:, None] * proportions[clusters, conditions]
    counts = rng.negative_binomial(dispersion, dispersion / (dispersion + mu)).astype(np.float32)

    condition_names = [chr(ord("A") + c) for c in range(n_conditions)]
    obs = pd.DataFrame(
        {
            "cluster": pd.Categorical([f"type_{k}" for k in clusters]),
            "condition": pd.Categorical(np.asarray(condition_names)[conditions]),
        },
        index=[f"cell_{i}" for i in range(clusters.size)],
    )
    matrix = sparse.csr_matrix(counts) if as_sparse else counts
    adata = ad.AnnData(
        X=matrix, obs=obs, var=pd.DataFrame(index=[f"gene_{g}" for g in range(n_genes)])
    )
    adata.layers["counts"] = matrix.copy()
    adata.uns["synthetic_blobs"] = {"log_means": np.log(proportions)}
    return adata
