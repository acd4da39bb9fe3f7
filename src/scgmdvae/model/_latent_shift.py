"""Latent shift between conditions: scGen's latent arithmetic, per cluster."""

from __future__ import annotations

import torch

MIN_CELLS_PER_CONDITION = 10


def condition_shifts(
    z: torch.Tensor,
    clusters: torch.Tensor,
    conditions: torch.Tensor,
    target: int,
    n_clusters: int,
    n_conditions: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift of ``z`` from every condition to ``target``, for the cells of each cluster.

    A cluster with at least ``MIN_CELLS_PER_CONDITION`` cells under both a condition ``c`` and
    ``target`` (a shared cluster) has its own shift, the difference of its mean ``z`` under
    ``target`` and under ``c`` (scGen's shift of one cell type). The shift of any other cluster
    with cells under ``c`` is interpolated from the shared clusters' shifts by inverse squared
    distance weighting (Shepard's interpolation) between the clusters' means under ``c``: a
    type not seen under ``target`` takes the response of the types that look most like it
    under ``c``, and a shared cluster, at distance 0 from itself, keeps its own. A cluster
    without cells under ``c`` takes the coordinate-wise median of the shared clusters' shifts.

    Parameters
    ----------
    z
        Latent codes of the reference cells, ``(n_cells, n_latent)``.
    clusters
        Cluster of each reference cell, ``(n_cells,)``.
    conditions
        Condition code of each reference cell, ``(n_cells,)``.
    target
        Condition code to shift to.
    n_clusters, n_conditions
        Numbers of clusters and conditions.

    Returns
    -------
    The shifts, ``(n_conditions, n_clusters, n_latent)``, and whether each condition has them,
    ``(n_conditions,)``: a condition that shares no cluster with ``target`` has none (its rows
    are zero). The target's own shifts are zero.
    """
    cells = conditions.long() * n_clusters + clusters.long()
    counts = torch.bincount(cells, minlength=n_conditions * n_clusters)
    sums = torch.zeros(n_conditions * n_clusters, z.shape[1], dtype=z.dtype, device=z.device)
    sums.index_add_(0, cells, z)
    counts = counts.reshape(n_conditions, n_clusters)
    means = sums.reshape(n_conditions, n_clusters, -1) / counts.clamp(min=1).unsqueeze(-1)
    observed = counts >= MIN_CELLS_PER_CONDITION
    shifts = torch.zeros(n_conditions, n_clusters, z.shape[1], dtype=z.dtype, device=z.device)
    defined = torch.zeros(n_conditions, dtype=torch.bool, device=z.device)
    for source in range(n_conditions):
        shared = observed[source] & observed[target]
        defined[source] = source == target or bool(shared.any())
        if source == target or not shared.any():
            continue
        differences = means[target, shared] - means[source, shared]
        distances = torch.cdist(
            means[source], means[source, shared], compute_mode="donot_use_mm_for_euclid_dist"
        )
        weights = distances.clamp(min=torch.finfo(z.dtype).eps).pow(-2)
        interpolated = weights @ differences / weights.sum(1, keepdim=True)
        interpolated[shared] = differences
        present = (counts[source] > 0).unsqueeze(-1)
        shifts[source] = torch.where(present, interpolated, differences.median(0).values)
    return shifts, defined
