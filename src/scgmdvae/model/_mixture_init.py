"""Data-driven initial partitions of the latent space, for initialising the mixture."""

from __future__ import annotations

import random
from typing import Literal

import igraph
import numpy as np
import scanpy as sc
from anndata import AnnData
from scipy import sparse
from scipy.stats import binom
from sklearn.cluster import KMeans

from ._spanned_mixture import most_distinct_partition

MixtureInit = Literal["leiden", "kmeans"]
N_NEIGHBORS = 15
N_PRINCIPAL_COMPONENTS = 50
"""Principal components of the input for :func:`input_principal_components`, as scanpy's."""
MAX_BISECTIONS = 20
LEIDEN_RESTARTS = 20
"""Leiden runs compared for a partition that becomes the mixture's initial components (the
seconds they take are few next to an epoch of training)."""
FREE_COMMUNITY_SIGNIFICANCE = 0.01
"""Family-wise error rate of the test for communities with too few labelled cells."""
NOVEL_COMMUNITY_PVALUE = 0.05
"""A query community is new when the median novelty p-value of its cells is below this."""


def knn_graph(latent: np.ndarray, seed: int) -> igraph.Graph:
    """Scanpy's kNN graph of ``latent`` (UMAP connectivities), as a weighted igraph graph.

    15 neighbours, searched exactly by scikit-learn; each pair of neighbours is one edge,
    weighted by its connectivity.
    """
    data = AnnData(np.asarray(latent, dtype=np.float32))
    sc.pp.neighbors(
        data, n_neighbors=N_NEIGHBORS, use_rep="X", transformer="sklearn", random_state=seed
    )
    edges = sparse.triu(data.obsp["connectivities"], k=1).tocoo()
    return igraph.Graph(
        n=data.n_obs,
        edges=np.column_stack([edges.row, edges.col]).tolist(),
        edge_attrs={"weight": edges.data},
    )


def leiden_communities(graph: igraph.Graph, resolution: float, seed: int) -> np.ndarray:
    """Community code ``0 … n-1`` of each vertex: igraph's Leiden, modularity at ``resolution``.

    Two iterations, as scanpy's ``sc.tl.leiden(flavor="igraph")``; igraph's random numbers are
    drawn from a generator seeded with ``seed`` and given back to :mod:`random` afterwards.
    """
    igraph.set_random_number_generator(random.Random(seed))
    try:
        clustering = graph.community_leiden(
            objective_function="modularity",
            weights="weight",
            resolution=resolution,
            n_iterations=2,
        )
    finally:
        igraph.set_random_number_generator(random)
    return np.unique(clustering.membership, return_inverse=True)[1]


def leiden_partition(
    latent: np.ndarray, n_clusters: int, seed: int, n_restarts: int = 1
) -> np.ndarray:
    """Leiden communities of the kNN graph of ``latent``, as close to ``n_clusters`` as possible.

    The graph is :func:`knn_graph`, the communities :func:`leiden_communities`; the resolution
    is bisected on a log scale between 0.001 and 10 until Leiden finds ``n_clusters``
    communities, and the partition with the most communities not above ``n_clusters`` is kept.
    If even the lowest resolution gives more (a graph of many disconnected parts), they are
    merged by :func:`merge_communities`.

    Leiden's result depends on its random seed: at the resolution that gives ``n_clusters``
    communities it may cut one large group of cells in two in one run and separate two
    smaller groups in the next. With ``n_restarts > 1``, Leiden runs again at that resolution
    with the seeds after ``seed``, and of the partitions with as many communities the one whose
    communities are most distinct is kept: the lowest mean entropy of the cells' assignments
    in the Gaussian mixture the communities span
    (:func:`~scgmdvae.model._spanned_mixture.most_distinct_partition`), ties to the first run. As
    k-means keeps the restart of least inertia, this keeps the restart whose communities overlap
    least.
    """
    graph = knn_graph(latent, seed)
    low, high = np.log(1e-3), np.log(10.0)
    best_resolution = float(np.exp(low))
    best = leiden_communities(graph, best_resolution, seed)
    for _ in range(MAX_BISECTIONS):
        middle = (low + high) / 2
        codes = leiden_communities(graph, float(np.exp(middle)), seed)
        count = codes.max() + 1
        if best.max() + 1 < count <= n_clusters:
            best, best_resolution = codes, float(np.exp(middle))
        if count == n_clusters:
            break
        low, high = (middle, high) if count < n_clusters else (low, middle)
    if best.max() + 1 > n_clusters:
        return merge_communities(latent, best, n_clusters, seed)
    restarts = (
        leiden_communities(graph, best_resolution, seed + index) for index in range(1, n_restarts)
    )
    return most_distinct_partition(
        latent, [best, *(codes for codes in restarts if codes.max() == best.max())]
    )


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
    method: MixtureInit, latent: np.ndarray, n_clusters: int, seed: int, n_restarts: int = 1
) -> np.ndarray:
    """Cluster codes ``0 … n-1`` of ``latent`` by ``method``, with ``n ≤ n_clusters``.

    ``n_restarts`` are Leiden's (:func:`leiden_partition`); k-means always keeps the best of 10.
    """
    if method == "kmeans":
        return KMeans(n_clusters, n_init=10, random_state=seed).fit_predict(latent)
    return leiden_partition(latent, n_clusters, seed, n_restarts)


def input_principal_components(
    matrix, log_normalise: bool, seed: int, n_comps: int = N_PRINCIPAL_COMPONENTS
) -> np.ndarray:
    """Return the first ``n_comps`` principal components of the cells' data, as scanpy does.

    Counts (``log_normalise``) are first scaled to 10,000 per cell and ``log1p``-transformed
    (:func:`scanpy.pp.normalize_total`, :func:`scanpy.pp.log1p`); other data are taken as they
    are. ``matrix`` (dense or sparse, cells × features) is copied, never changed. At most
    ``min(cells, features) - 1`` components are returned.
    """
    values = (
        matrix.astype(np.float32, copy=True)
        if sparse.issparse(matrix)
        else np.array(matrix, dtype=np.float32)
    )
    data = AnnData(values)
    if log_normalise:
        sc.pp.normalize_total(data, target_sum=1e4)
        sc.pp.log1p(data)
    n_comps = min(n_comps, min(data.shape) - 1)
    return sc.pp.pca(data.X, n_comps=n_comps, random_state=seed)


def condition_centred(latent: np.ndarray, conditions: np.ndarray) -> np.ndarray:
    """``latent`` with each condition's mean subtracted from its cells.

    With ``condition_in_prior=False`` the prior of ``z`` is the same in every condition, and
    training pulls each type to one place whatever its condition; what still separates the
    conditions after pre-training is an offset that would make a kNN graph of ``z`` cut the
    types along the conditions. A partition that seeds the mixture must group each type across
    the conditions, since one component spans them. (With the thesis' prior the conditions may
    sit apart by design, and centring measured worse there; the benchmarks page.)
    """
    centred = np.array(latent, dtype=np.float64)
    for condition in np.unique(conditions):
        cells = conditions == condition
        centred[cells] -= centred[cells].mean(0)
    return centred


def unlabelled_communities(
    communities: np.ndarray,
    labelled: np.ndarray,
    significance: float = FREE_COMMUNITY_SIGNIFICANCE,
) -> np.ndarray:
    """Communities with fewer labelled cells than chance allows: where unlabelled types lie.

    If labels were missing at random, the labelled cells of a community of ``n`` cells would be
    binomial with ``n`` trials and the overall labelled fraction ``f``. A community is flagged
    when the binomial probability of at most its observed count is below ``significance``
    divided by the number of communities (Bonferroni). ``f`` includes the cells of unlabelled
    types, so it is an underestimate of the known types' fraction and the test is conservative.

    Parameters
    ----------
    communities
        Community code ``0 … n-1`` of each cell.
    labelled
        Whether each cell has a label.
    significance
        Family-wise error rate of the test over all communities.

    Returns
    -------
    Boolean array of length ``n``: whether each community is flagged.
    """
    n_communities = communities.max() + 1
    sizes = np.bincount(communities, minlength=n_communities)
    n_labelled = np.bincount(communities, weights=labelled, minlength=n_communities)
    tail = binom.cdf(n_labelled, sizes, labelled.mean())
    return tail < significance / n_communities


def novel_communities(
    communities: np.ndarray, pvalues: np.ndarray, threshold: float = NOVEL_COMMUNITY_PVALUE
) -> np.ndarray:
    """Communities most of whose cells are unlike every known type.

    A community is flagged when the median novelty p-value of its cells is below
    ``threshold``: more than half of them would be called unknown at that level, where a
    community of a known type has a median near 0.5.

    Returns
    -------
    Boolean array, one entry per community.
    """
    n_communities = communities.max() + 1
    medians = np.array([np.median(pvalues[communities == k]) for k in range(n_communities)])
    return medians < threshold


def free_component_guide(
    latent: np.ndarray,
    communities: np.ndarray,
    flagged: np.ndarray,
    guide: np.ndarray,
    labelled: np.ndarray,
    first_free: int,
    n_clusters: int,
    seed: int,
) -> np.ndarray:
    """Send the unlabelled cells of flagged communities to the free components.

    Those cells are merged into at most ``n_clusters - first_free`` groups
    (:func:`merge_communities`), one per free component.

    Parameters
    ----------
    latent
        Posterior means of ``z``, cells × latent dimensions.
    communities
        Community code of each cell (:func:`initial_partition`).
    flagged
        Whether each community holds a type without labels (:func:`unlabelled_communities`,
        :func:`novel_communities`).
    guide
        Code of each cell before: its label, a component it is already assigned to, or
        ``n_clusters`` (unobserved).
    labelled
        Cells whose code stays whatever their community.
    first_free, n_clusters
        The components from ``first_free`` to ``n_clusters - 1`` are free.
    seed
        Random seed of the merge.

    Returns
    -------
    The guide with the caught cells' codes ``first_free + j``, ``j`` their group.
    """
    guide = guide.copy()
    caught = flagged[communities] & ~labelled
    if caught.any():
        kept = np.unique(communities[caught], return_inverse=True)[1]
        n_free = n_clusters - first_free
        if kept.max() + 1 > n_free:
            kept = merge_communities(latent[caught], kept, n_free, seed)
        guide[caught] = first_free + kept
    return guide
