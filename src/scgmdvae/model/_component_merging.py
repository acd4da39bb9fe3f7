"""Combining mixture components whose cells overlap in the latent space into one cluster.

First each component is split into the pieces of it that the kNN graph of the latent space
connects (:func:`connected_pieces`): a component that holds two groups of cells with no
neighbour in common spans two clusters, however the mixture came to fit it. Then a mixture
fitted to cell types that are not Gaussian spends several components on one type,
so the number of components that the likelihood (or a Dirichlet on the weights) supports
over-estimates the number of clusters; Baudry et al. (2010) combine such components by the
entropy of the cells' assignments. Two pieces of one type share a border that their cells
straddle, so the cells are unsure which of the two they belong to; two types lie apart, so
their cells are sure. The assignments here are those of the Gaussian mixture that the
components' cells span in the latent space (each component's mean, covariance and share of the
cells), not the model's classifier ``q(y|z,c)``, whose confidence depends on how far it has
trained. The components are combined one pair at a time, always the pair whose cells are least
sure between the two (the highest mean entropy of the split between them, per cell of the
pair), for as long as that entropy is at least :data:`MIN_PAIR_ENTROPY`.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from sklearn.neighbors import kneighbors_graph

from ._mixture_init import N_NEIGHBORS
from ._spanned_mixture import entropy

MIN_PAIR_ENTROPY = 0.025
"""Mean entropy (nats per cell) of the split between two components above which they are one
cluster. Two equally large one-dimensional Gaussians of unit variance have this entropy when
their means are about 4.7 apart (0.06 at 4, 0.36 at 2, where their mixture stops being
bimodal)."""


def connected_pieces(
    latent: np.ndarray, components: np.ndarray, n_neighbors: int = N_NEIGHBORS
) -> np.ndarray:
    """Split each component into the groups of its cells that the kNN graph connects.

    The graph links every cell to its ``n_neighbors`` nearest cells in ``latent`` (either
    way); a piece is a connected part of the graph restricted to one component's cells. A
    piece of fewer than ``n_neighbors`` cells, smaller than one cell's neighbourhood, is not
    a group of its own: it joins the piece that most of its cells' neighbours belong to (the
    smallest piece first).

    Parameters
    ----------
    latent
        Cells × latent dimensions.
    components
        Component code of each cell.

    Returns
    -------
    Piece code ``0 … p−1`` of each cell; every piece lies within one component.
    """
    components = np.asarray(components)
    graph = kneighbors_graph(np.asarray(latent), n_neighbors, include_self=False)
    graph = graph.maximum(graph.T).tocsr()
    edges = graph.tocoo()
    within = components[edges.row] == components[edges.col]
    restricted = sparse.coo_matrix(
        (np.ones(within.sum()), (edges.row[within], edges.col[within])), shape=graph.shape
    )
    pieces = connected_components(restricted, directed=False)[1]
    sizes = np.bincount(pieces)
    for piece in np.argsort(sizes, kind="stable"):
        if sizes[piece] >= n_neighbors:
            continue
        cells = np.flatnonzero(pieces == piece)
        neighbours = pieces[graph[cells].indices]
        neighbours = neighbours[neighbours != piece]
        if neighbours.size:
            target = np.bincount(neighbours).argmax()
            pieces[cells] = target
            sizes[target] += sizes[piece]
    return np.unique(pieces, return_inverse=True)[1]


def voted_components(guide: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Send each guide cluster, whole, to the component that most of its cells are in.

    After a guided phase the free phase lets every cell move to the component whose Gaussian
    explains it best. Where a cluster's cells follow it together (two clusters of one cell
    type combine), the vote keeps the move; where a component's Gaussian takes a part of a
    cluster that the kNN graph holds together (a curved manifold such as a digit's), most of
    the cluster stays and the vote brings that part back.

    Parameters
    ----------
    guide
        Guide cluster code ``0 … g−1`` of each cell.
    components
        Component of each cell after the free phase.

    Returns
    -------
    Component of each cell: its guide cluster's majority component.
    """
    guide, components = np.asarray(guide), np.asarray(components)
    counts = np.zeros((guide.max() + 1, components.max() + 1), dtype=np.int64)
    np.add.at(counts, (guide, components), 1)
    return counts.argmax(1)[guide]


def pair_entropies(probs: np.ndarray) -> np.ndarray:
    """Mean entropy of the split between each pair of components, per cell of the pair.

    For components ``k`` and ``l`` with probabilities ``p_k``, ``p_l``: the entropy that
    combining them removes, ``Σ_cells (p_k + p_l) h(p_k / (p_k + p_l))`` with ``h`` the binary
    entropy, divided by the pair's share of cells ``Σ_cells (p_k + p_l)``.

    Parameters
    ----------
    probs
        Cells × components assignment probabilities (rows sum to 1).

    Returns
    -------
    Symmetric components × components matrix, ``-inf`` on the diagonal.
    """
    singles = entropy(probs)
    sizes = probs.sum(0)
    n_components = probs.shape[1]
    entropies = np.full((n_components, n_components), -np.inf)
    for first in range(n_components - 1):
        unions = probs[:, [first]] + probs[:, first + 1 :]
        removed = singles[first] + singles[first + 1 :] - entropy(unions)
        shares = np.clip(sizes[first] + sizes[first + 1 :], np.finfo(np.float64).tiny, None)
        entropies[first, first + 1 :] = entropies[first + 1 :, first] = removed / shares
    return entropies


def combined_components(
    probs: np.ndarray, min_entropy: float = MIN_PAIR_ENTROPY, max_groups: int | None = None
) -> np.ndarray:
    """Group the components whose cells cannot tell them apart.

    Parameters
    ----------
    probs
        Cells × components assignment probabilities (rows sum to 1), for example
        :func:`~scgmdvae.model._spanned_mixture.component_probabilities`.
    min_entropy
        Pairs are combined, the highest first, while the mean entropy of their split
        (:func:`pair_entropies`) is at least this.
    max_groups
        Pairs are combined, whatever their entropy, until there are at most this many groups.

    Returns
    -------
    Group ``0 … g−1`` of each component, in the order of each group's first component.
    """
    probs = np.array(probs, dtype=np.float64)
    group = np.arange(probs.shape[1])
    max_groups = probs.shape[1] if max_groups is None else max_groups
    while probs.shape[1] > 1:
        entropies = pair_entropies(probs)
        first, second = np.unravel_index(entropies.argmax(), entropies.shape)
        if entropies[first, second] < min_entropy and probs.shape[1] <= max_groups:
            break
        first, second = min(first, second), max(first, second)
        probs[:, first] += probs[:, second]
        probs = np.delete(probs, second, axis=1)
        group = np.where(group == second, first, group)
        group = np.where(group > second, group - 1, group)
    return group


def components_of_groups(
    components: np.ndarray, groups: np.ndarray, n_components: int
) -> np.ndarray:
    """Give each group of cells a component of its own: the one most of its cells are in.

    Groups take their component in order of size, the largest first, each the component that
    holds most of its cells among those no larger group took; a group whose components are all
    taken (a component whose cells the groups split) takes the first untaken component that
    holds none of the cells, else the first untaken one.

    Parameters
    ----------
    components
        Component code ``0 … n_components−1`` of each cell.
    groups
        Group code ``0 … g−1`` of each cell, with ``g ≤ n_components``.
    n_components
        Number of components.

    Returns
    -------
    Component of each group.
    """
    n_groups = groups.max() + 1
    counts = np.zeros((n_groups, n_components), dtype=np.int64)
    np.add.at(counts, (groups, components), 1)
    holds_cells = counts.any(0)
    taken = np.zeros(n_components, dtype=bool)
    chosen = np.empty(n_groups, dtype=np.int64)
    for group in np.argsort(-counts.sum(1), kind="stable"):
        available = np.where(taken, -1, counts[group])
        if available.max() > 0:
            chosen[group] = available.argmax()
        else:
            chosen[group] = np.where(taken, 2, holds_cells).argmin()
        taken[chosen[group]] = True
    return chosen
