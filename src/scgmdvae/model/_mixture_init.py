"""Data-driven initial partitions of the latent space, for initialising the mixture."""

from __future__ import annotations

from typing import Literal

import numpy as np
import scanpy as sc
from anndata import AnnData
from sklearn.cluster import KMeans

MixtureInit = Literal["leiden", "kmeans"]
N_NEIGHBORS = 15
MAX_BISECTIONS = 20


def leiden_partition(latent: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """Leiden communities of the kNN graph of ``latent``, as close to ``n_clusters`` as possible.

    The graph is scanpy's (15 neighbours, UMAP connectivities); the resolution is bisected on a
    log scale between 0.001 and 10 until Leiden finds ``n_clusters`` communities, and the
    partition with the most communities not above ``n_clusters`` is kept. If even the lowest
    resolution gives more (a graph of many disconnected parts), they are merged by
    :func:`merge_communities`.
    """
    graph = AnnData(np.asarray(latent, dtype=np.float32))
    sc.pp.neighbors(graph, n_neighbors=N_NEIGHBORS, use_rep="X", random_state=seed)

    def communities(resolution: float) -> np.ndarray:
        sc.tl.leiden(
            graph,
            resolution=resolution,
            flavor="igraph",
            n_iterations=2,
            directed=False,
            random_state=seed,
        )
        return graph.obs["leiden"].cat.codes.to_numpy()

    low, high = np.log(1e-3), np.log(10.0)
    best = communities(float(np.exp(low)))
    for _ in range(MAX_BISECTIONS):
        middle = (low + high) / 2
        codes = communities(float(np.exp(middle)))
        count = codes.max() + 1
        if best.max() + 1 < count <= n_clusters:
            best = codes
        if count == n_clusters:
            break
        low, high = (middle, high) if count < n_clusters else (low, middle)
    if best.max() + 1 > n_clusters:
        best = merge_communities(latent, best, n_clusters, seed)
    return best


def merge_communities(
    latent: np.ndarray, codes: np.ndarray, n_clusters: int, seed: int
) -> np.ndarray:
    """Merge communities into ``n_clusters`` groups by k-means on their size-weighted centroids.

    Needed when the kNN graph has more connected components than ``n_clusters``: no resolution
    then gives fewer communities.
    """
    n_communities = codes.max() + 1
    sizes = np.bincount(codes, minlength=n_communities)
    centroids = np.stack([latent[codes == k].mean(0) for k in range(n_communities)])
    groups = KMeans(n_clusters, n_init=10, random_state=seed).fit_predict(
        centroids, sample_weight=sizes
    )
    return groups[codes]


def initial_partition(
    method: MixtureInit, latent: np.ndarray, n_clusters: int, seed: int
) -> np.ndarray:
    """Cluster codes ``0 … n-1`` of ``latent`` by ``method``, with ``n ≤ n_clusters``."""
    if method == "kmeans":
        return KMeans(n_clusters, n_init=10, random_state=seed).fit_predict(latent)
    return leiden_partition(latent, n_clusters, seed)
