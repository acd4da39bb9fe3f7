"""Latent shift between conditions: scGen's latent arithmetic, per cluster."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

MIN_CELLS_PER_CONDITION = 10

N_LENGTH_SCALES = 25
"""Length scales of the kriging kernel that :func:`maximum_likelihood_kernel` compares, spaced
geometrically from a quarter of the smallest distance between the points to four times the
largest."""

NUGGETS = (1e-6, 1e-3, 1e-2, 0.1, 0.3, 1.0)
"""Variances of each point's own deviation from the smooth response, relative to the
response's, that :func:`maximum_likelihood_kernel` compares."""


def kernel_correlations(distances: torch.Tensor, length_scale: float) -> torch.Tensor:
    """Squared-exponential correlations ``exp(-distance² / (2 length_scale²))``."""
    return torch.exp(-0.5 * (distances / length_scale).pow(2))


class _KrigingFit(NamedTuple):
    """A Gaussian process with constant mean fitted to ``values`` at fixed kernel settings."""

    factor: torch.Tensor
    """Cholesky factor of the points' correlations ``R`` (nugget included)."""
    mean: torch.Tensor
    """``(1, n_outputs)``: the generalised least-squares mean."""
    weighted_residuals: torch.Tensor
    """``R⁻¹ (values − mean)``, ``(n_points, n_outputs)``."""
    weighted_ones: torch.Tensor
    """``R⁻¹ 1``, ``(n_points, 1)``."""
    variance: float
    """``s²``, the mean squared standardised residual (its maximum-likelihood value)."""


def _kriging_fit(
    distances: torch.Tensor, values: torch.Tensor, length_scale: float, nugget: float
) -> _KrigingFit:
    """Fit the mean and ``s²`` of the process with the given length scale and nugget."""
    correlations = kernel_correlations(distances, length_scale)
    correlations = correlations + nugget * torch.eye(
        len(values), dtype=values.dtype, device=values.device
    )
    factor = torch.linalg.cholesky(correlations)
    ones = torch.ones(len(values), 1, dtype=values.dtype, device=values.device)
    weighted_ones = torch.cholesky_solve(ones, factor)
    mean = weighted_ones.T @ values / weighted_ones.sum()
    residuals = values - mean
    weighted_residuals = torch.cholesky_solve(residuals, factor)
    quadratic = (residuals * weighted_residuals).sum().clamp(min=torch.finfo(values.dtype).tiny)
    return _KrigingFit(
        factor, mean, weighted_residuals, weighted_ones, float(quadratic) / values.numel()
    )


def kriging_log_likelihood(
    distances: torch.Tensor, values: torch.Tensor, length_scale: float, nugget: float
) -> float:
    """Profile log-likelihood of a Gaussian process with constant mean, up to a constant.

    ``values`` is ``(n_points, n_outputs)``, each column an independent draw of a Gaussian
    process with an unknown constant mean, variance ``s²`` and covariance
    ``s² (kernel_correlations(distances, length_scale) + nugget · I)`` between the points;
    the mean and ``s²`` take their maximum-likelihood values (the generalised least-squares
    mean and the mean squared standardised residual).
    """
    fit = _kriging_fit(distances, values, length_scale, nugget)
    log_determinant = 2 * float(fit.factor.diagonal().log().sum())
    return -0.5 * (values.numel() * math.log(fit.variance) + values.shape[1] * log_determinant)


def maximum_likelihood_kernel(points: torch.Tensor, values: torch.Tensor) -> tuple[float, float]:
    """Length scale and nugget that maximise :func:`kriging_log_likelihood` on a grid.

    The length scales are :data:`N_LENGTH_SCALES` values from a quarter of the smallest
    positive distance between ``points`` to four times the largest, the nuggets
    :data:`NUGGETS`; the first maximum is returned (the shortest length scale, then the
    smallest nugget). Points that all coincide have no scale to measure: 1.
    """
    distances = torch.cdist(points, points, compute_mode="donot_use_mm_for_euclid_dist")
    positive = distances[distances > 0]
    if positive.numel() == 0:
        return 1.0, NUGGETS[0]
    scales = torch.logspace(
        math.log10(float(positive.min()) / 4),
        math.log10(float(positive.max()) * 4),
        N_LENGTH_SCALES,
        dtype=torch.float64,
    )
    grid = [(float(scale), nugget) for scale in scales for nugget in NUGGETS]
    likelihoods = [kriging_log_likelihood(distances, values, *kernel) for kernel in grid]
    return grid[likelihoods.index(max(likelihoods))]


def kriged_shifts(
    points: torch.Tensor, values: torch.Tensor, query_distances: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ordinary kriging of ``values`` at ``points`` to queries, kernel by maximum likelihood.

    The prediction at a query is the estimated mean plus the kernel-weighted residuals of the
    points (the Gaussian process' posterior mean): a query near a point takes that point's
    value, one far from every point (beyond a few length scales, or at infinite distance) the
    mean, so a type unlike every seen one falls back on the average response rather than its
    nearest type's. The variance is that of the query's own value about the prediction
    (nugget included), the same for every output: small next to a point, largest far from
    all. With one point there is nothing to fit: its value, variance 0.

    Parameters
    ----------
    points
        ``(n_points, n_dims)``.
    values
        ``(n_points, n_outputs)``.
    query_distances
        Distances of the queries to the points, ``(n_queries, n_points)``; ``inf`` allowed.

    Returns
    -------
    Predictions ``(n_queries, n_outputs)`` and variances ``(n_queries,)``, computed in double
    precision and returned in ``values``' dtype.
    """
    dtype = values.dtype
    points, values, query_distances = points.double(), values.double(), query_distances.double()
    if len(points) < 2:
        predictions = values.mean(0, keepdim=True).expand(len(query_distances), -1)
        return predictions.to(dtype), values.new_zeros(len(query_distances)).to(dtype)
    length_scale, nugget = maximum_likelihood_kernel(points, values)
    distances = torch.cdist(points, points, compute_mode="donot_use_mm_for_euclid_dist")
    fit = _kriging_fit(distances, values, length_scale, nugget)
    correlations = kernel_correlations(query_distances, length_scale)
    predictions = fit.mean + correlations @ fit.weighted_residuals
    explained = (correlations * torch.cholesky_solve(correlations.T, fit.factor).T).sum(1)
    mean_error = (1 - correlations @ fit.weighted_ones).squeeze(1).pow(2) / fit.weighted_ones.sum()
    variances = fit.variance * (1 + nugget - explained + mean_error)
    return predictions.to(dtype), variances.clamp(min=0).to(dtype)


class ConditionShifts(NamedTuple):
    """:func:`condition_shifts`' result."""

    shifts: torch.Tensor
    """``(n_conditions, n_clusters, n_latent)``: the shift of each cluster from each condition."""
    variances: torch.Tensor
    """``(n_conditions, n_clusters)``: the kriging variance of each latent coordinate of a
    kriged shift; 0 for a cluster's own shift."""
    defined: torch.Tensor
    """``(n_conditions,)``: whether the condition shares a cluster with the target (a
    condition that does not has zero shifts)."""


def condition_shifts(
    z: torch.Tensor,
    clusters: torch.Tensor,
    conditions: torch.Tensor,
    target: int,
    n_clusters: int,
    n_conditions: int,
) -> ConditionShifts:
    """Shift of ``z`` from every condition to ``target``, for the cells of each cluster.

    A cluster with at least ``MIN_CELLS_PER_CONDITION`` cells under both a condition ``c`` and
    ``target`` (a shared cluster) has its own shift, the difference of its mean ``z`` under
    ``target`` and under ``c`` (scGen's shift of one cell type). The shift of any other cluster
    with cells under ``c`` is kriged from the shared clusters' shifts over the clusters' means
    under ``c`` (:func:`kriged_shifts`, kernel by maximum likelihood): a type not seen under
    ``target`` takes the response of the types that look most like it under ``c`` when there
    are such types within the response's length scale, and the average response when it is
    unlike all of them; a cluster without cells under ``c`` has no position there and takes
    the average response. A kriged shift comes with its variance, which grows with the
    cluster's distance from the shared clusters.

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
    The shifts, their variances and which conditions have them (:class:`ConditionShifts`);
    the target's own shifts are zero.
    """
    cells = conditions.long() * n_clusters + clusters.long()
    counts = torch.bincount(cells, minlength=n_conditions * n_clusters)
    sums = torch.zeros(n_conditions * n_clusters, z.shape[1], dtype=z.dtype, device=z.device)
    sums.index_add_(0, cells, z)
    counts = counts.reshape(n_conditions, n_clusters)
    means = sums.reshape(n_conditions, n_clusters, -1) / counts.clamp(min=1).unsqueeze(-1)
    observed = counts >= MIN_CELLS_PER_CONDITION
    shifts = torch.zeros(n_conditions, n_clusters, z.shape[1], dtype=z.dtype, device=z.device)
    variances = torch.zeros(n_conditions, n_clusters, dtype=z.dtype, device=z.device)
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
        distances[counts[source] == 0] = math.inf
        shifts[source], variances[source] = kriged_shifts(
            means[source, shared], differences, distances
        )
        shifts[source, shared] = differences
        variances[source, shared] = 0
    return ConditionShifts(shifts, variances, defined)
