"""How many clusters a model that chooses ``K`` starts from: the finest stable Leiden partition.

Leiden's resolution sets how finely it cuts the cells, and the data decide which cuts are real:
a community that is a group of the cells comes back when Leiden runs on a subsample of them,
one that is an arbitrary slice of a larger group comes back cut elsewhere. Hennig (2007)
measures this per cluster as the Jaccard similarity of the cluster to its best match in the
clustering of each subsample, averaged over the subsamples; below about 0.6 a cluster is not a
stable pattern of the data. As chooseR (Patterson-Cross et al. 2021) picks the highest
resolution whose clusters are still robust, :func:`stable_cluster_count` scans the resolution
upwards and keeps the largest number of communities of a partition whose every community is
stable. A Gaussian mixture's fit or a Dirichlet alone would instead keep adding components
where a cell type is not Gaussian (a digit's writing styles); stability does not reward that.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ._mixture_init import knn_graph, leiden_communities

RESOLUTIONS = np.geomspace(0.02, 3.0, 16)
"""Leiden resolutions scanned, coarsest first, 16 steps from 0.02 to 3 (scanpy's default is 1)."""
N_SUBSAMPLES = 3
SUBSAMPLE_SHARE = 0.8
"""Share of the cells in each subsample, drawn without replacement."""
MIN_STABLE_JACCARD = 0.6
"""Least mean best-match Jaccard similarity of a stable community (Hennig 2007: clusters below
0.5 dissolve, those from 0.6 up show patterns of the data, from 0.75 up are valid)."""


def best_match_jaccard(reference: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Jaccard similarity of each ``reference`` cluster to the ``codes`` cluster most like it.

    Parameters
    ----------
    reference, codes
        Two partitions of the same cells, codes ``0 … n−1``.

    Returns
    -------
    One similarity in ``[0, 1]`` per ``reference`` code.
    """
    table = np.zeros((reference.max() + 1, codes.max() + 1))
    np.add.at(table, (reference, codes), 1)
    union = table.sum(1, keepdims=True) + table.sum(0, keepdims=True) - table
    return (table / np.maximum(union, 1)).max(1)


def community_stability(
    latent: np.ndarray, resolutions: np.ndarray, seed: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Leiden's communities of ``latent`` at each resolution, and each community's stability.

    Stability is :func:`best_match_jaccard` against Leiden, at the same resolution, on the kNN
    graph of each of :data:`N_SUBSAMPLES` subsamples of :data:`SUBSAMPLE_SHARE` of the cells,
    averaged over the subsamples.

    Yields
    ------
    Per resolution, in order, the community of each cell and the stability of each community
    (computed when asked for).
    """
    graph = knn_graph(latent, seed)
    rng = np.random.default_rng(seed)
    n_cells = len(latent)
    subsamples = []
    for index in range(N_SUBSAMPLES):
        cells = np.sort(rng.choice(n_cells, int(SUBSAMPLE_SHARE * n_cells), replace=False))
        subsamples.append((cells, knn_graph(latent[cells], seed + index + 1)))
    for resolution in map(float, resolutions):
        communities = leiden_communities(graph, resolution, seed)
        stability = np.mean(
            [
                best_match_jaccard(communities[cells], leiden_communities(sub, resolution, seed))
                for cells, sub in subsamples
            ],
            axis=0,
        )
        yield communities, stability


def stable_cluster_count(latent: np.ndarray, max_clusters: int, seed: int) -> int:
    """Return the number of communities of the finest stable Leiden partition of ``latent``.

    Scans :data:`RESOLUTIONS` upwards until Leiden finds more than ``max_clusters``
    communities, and returns the largest number of communities of a partition whose least
    stable community (:func:`community_stability`) has a stability of at least
    :data:`MIN_STABLE_JACCARD`. Without such a partition: ``max_clusters`` if Leiden found more
    (the cells fall into more separate groups than that), else 1.

    Parameters
    ----------
    latent
        Cells × dimensions in which the cells are partitioned.
    max_clusters
        Upper bound of the count.
    seed
        Seed of Leiden and of the subsamples.
    """
    count = 0
    for communities, stability in community_stability(latent, RESOLUTIONS, seed):
        n_communities = int(communities.max() + 1)
        if n_communities > max_clusters:
            return count or max_clusters
        if stability.min() >= MIN_STABLE_JACCARD:
            count = max(count, n_communities)
    return count or 1
