"""Latent shift between conditions: scGen's latent arithmetic, balanced over the clusters."""

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
    """Shift of ``z`` from every condition to ``target``.

    For each cluster with at least ``MIN_CELLS_PER_CONDITION`` cells under both a condition
    ``c`` and ``target``, the difference of its mean ``z`` under ``target`` and under ``c``; the
    shift from ``c`` is the coordinate-wise median of these differences over the clusters.
    Balancing over clusters is scGen's balancing over cell types; the median keeps a cluster
    whose cells under one condition are mostly another type's (a mixture component that
    caught part of a neighbouring type) from pulling the shift.

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
    The shifts, ``(n_conditions, n_latent)``, and whether each condition has one,
    ``(n_conditions,)``: a condition that shares no cluster with ``target`` has none (its row is
    zero). The target's own shift is zero.
    """
    cells = conditions.long() * n_clusters + clusters.long()
    counts = torch.bincount(cells, minlength=n_conditions * n_clusters)
    sums = torch.zeros(n_conditions * n_clusters, z.shape[1], dtype=z.dtype, device=z.device)
    sums.index_add_(0, cells, z)
    counts = counts.reshape(n_conditions, n_clusters)
    means = sums.reshape(n_conditions, n_clusters, -1) / counts.clamp(min=1).unsqueeze(-1)
    observed = counts >= MIN_CELLS_PER_CONDITION
    shifts = torch.zeros(n_conditions, z.shape[1], dtype=z.dtype, device=z.device)
    defined = torch.zeros(n_conditions, dtype=torch.bool, device=z.device)
    for source in range(n_conditions):
        shared = observed[source] & observed[target]
        defined[source] = source == target or bool(shared.any())
        if source != target and shared.any():
            differences = means[target, shared] - means[source, shared]
            shifts[source] = differences.median(0).values
    return shifts, defined
