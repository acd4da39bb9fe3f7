"""Latent shift between conditions: scGen's latent arithmetic, per cluster."""

from __future__ import annotations

import math

import torch

MIN_CELLS_PER_CONDITION = 10

SHEPARD_POWERS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, math.inf)
"""Powers of the inverse-distance weights that :func:`condition_shifts` chooses from: 0 is the
plain mean of the shared clusters' shifts (scGen's balanced shift), ``inf`` the shift of the
nearest shared cluster."""


def inverse_distance_weights(distances: torch.Tensor, power: float) -> torch.Tensor:
    """Shepard's weights ``distance ** -power``, each row scaled by its nearest distance.

    The scaling leaves the normalised weights as they are and keeps large powers from
    overflowing; ``power=inf`` weights the nearest point(s) only. Infinite distances weigh 0.
    """
    distances = distances.clamp(min=torch.finfo(distances.dtype).eps)
    relative = distances / distances.min(-1, keepdim=True).values
    if math.isinf(power):
        return (relative == 1).to(distances.dtype)
    return torch.where(distances.isinf(), 0.0, relative.pow(-power))


def interpolated_shifts(
    distances: torch.Tensor, differences: torch.Tensor, power: float
) -> torch.Tensor:
    """Inverse-distance weighted means of the rows of ``differences``, one per distances row.

    ``distances`` is ``(n_points, n_shared)``: from each point to the clusters whose shifts are
    the rows of ``differences``, ``(n_shared, n_latent)``.
    """
    weights = inverse_distance_weights(distances, power)
    return weights @ differences / weights.sum(-1, keepdim=True)


def leave_one_out_power(means: torch.Tensor, differences: torch.Tensor) -> float:
    """Return the power of :data:`SHEPARD_POWERS` that best predicts each shift from the others'.

    Each shared cluster's shift is interpolated from the other shared clusters' (from its
    mean ``z`` under the source condition); the power with the least mean squared error over
    the clusters is returned, the smallest on ties (as with two clusters, where every power
    predicts each from the other). With fewer than two clusters the power does not matter: 0.
    """
    if len(means) < 2:
        return SHEPARD_POWERS[0]
    distances = torch.cdist(means, means, compute_mode="donot_use_mm_for_euclid_dist")
    distances.fill_diagonal_(math.inf)
    errors = [
        float(
            (interpolated_shifts(distances, differences, power) - differences).pow(2).sum(1).mean()
        )
        for power in SHEPARD_POWERS
    ]
    return SHEPARD_POWERS[errors.index(min(errors))]


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
    with cells under ``c`` is interpolated from the shared clusters' shifts by inverse distance
    weighting (Shepard's interpolation) between the clusters' means under ``c``: a type not
    seen under ``target`` takes the response of the types that look most like it under ``c``.
    The power of the weights, from the plain mean of the shifts (0) to the nearest cluster's
    (``inf``), is the one that predicts the shared clusters' own shifts best from each other
    (:func:`leave_one_out_power`), so the data say how local the response is. A cluster
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
        power = leave_one_out_power(means[source, shared], differences)
        distances = torch.cdist(
            means[source], means[source, shared], compute_mode="donot_use_mm_for_euclid_dist"
        )
        interpolated = interpolated_shifts(distances, differences, power)
        interpolated[shared] = differences
        present = (counts[source] > 0).unsqueeze(-1)
        shifts[source] = torch.where(present, interpolated, differences.median(0).values)
    return shifts, defined
