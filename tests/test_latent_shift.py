"""The latent shifts between conditions of ``latent="shift"`` counterfactuals."""

import math

import pytest
import torch

from scgmdvae.model._latent_shift import (
    MIN_CELLS_PER_CONDITION,
    condition_shifts,
    kernel_correlations,
    kriged_shifts,
    kriging_log_likelihood,
    maximum_likelihood_kernel,
)

N = MIN_CELLS_PER_CONDITION


def _reference(*groups):
    """Cells ``(cluster, condition, z, n)``: ``n`` (default ``N``) copies of ``z``."""
    z, clusters, conditions = [], [], []
    for cluster, condition, value, *n in groups:
        n = n[0] if n else N
        z.append(torch.tensor([value] * n))
        clusters.append(torch.full((n,), cluster))
        conditions.append(torch.full((n,), condition))
    return torch.cat(z), torch.cat(clusters), torch.cat(conditions)


def test_a_cluster_seen_under_both_conditions_keeps_its_own_shift():
    z, clusters, conditions = _reference(
        (0, 0, [0.0, 0.0]),
        (0, 1, [1.0, 0.0]),
        (1, 0, [5.0, 1.0]),
        (1, 1, [7.0, 3.0]),
    )
    shifts, variances, defined = condition_shifts(z, clusters, conditions, 1, 2, 2)
    torch.testing.assert_close(shifts[0], torch.tensor([[1.0, 0.0], [2.0, 2.0]]))
    assert (variances == 0).all()
    assert (shifts[1] == 0).all()
    assert defined.tolist() == [True, True]


def test_a_local_response_is_kriged_from_the_nearest_clusters_and_the_mean_far_away():
    # Two groups of shared clusters far apart, each with its own response (+1 near 0, +10 near
    # 100): the fitted length scale spans each group, not the gap, so cluster 4, next to the
    # first group, takes +1, and cluster 7, far from both, the mean response +5.5 (not the
    # nearest group's +10), with a larger variance. Cluster 5 has no cell under condition 0,
    # and cluster 6 no cell at all: no position, so the mean response too.
    z, clusters, conditions = _reference(
        (0, 0, [0.0]),
        (0, 1, [1.0]),
        (1, 0, [1.0]),
        (1, 1, [2.0]),
        (2, 0, [100.0]),
        (2, 1, [110.0]),
        (3, 0, [101.0]),
        (3, 1, [111.0]),
        (4, 0, [2.0], 3),
        (5, 1, [50.0]),
        (7, 0, [1000.0]),
    )
    shifts, variances, _ = condition_shifts(z, clusters, conditions, 1, 8, 2)
    assert abs(float(shifts[0, 4]) - 1.0) < 0.05
    torch.testing.assert_close(shifts[0, 5:], torch.full((3, 1), 5.5))
    torch.testing.assert_close(shifts[0, :4], torch.tensor([[1.0], [1.0], [10.0], [10.0]]))
    assert (variances[0, :4] == 0).all() and (variances[1] == 0).all()
    assert 0 < variances[0, 4] < variances[0, 7] / 100
    assert variances[0, 5] == variances[0, 6] == variances[0, 7]


def test_a_response_unrelated_to_position_is_kriged_towards_the_mean_shift():
    # Responses alternate along z (+1, +3, +1, +3): neighbours do not predict each other, so the
    # likelihood prefers a short length scale and a large nugget, and the unseen cluster 4,
    # nearest to cluster 1 (+3), takes a shift nearer the mean +2 than its neighbour's.
    groups = [(k, 0, [float(k)]) for k in range(4)]
    groups += [(k, 1, [float(k) + shift]) for k, shift in enumerate([1.0, 3.0, 1.0, 3.0])]
    z, clusters, conditions = _reference(*groups, (4, 0, [1.2]))
    shifts = condition_shifts(z, clusters, conditions, 1, 5, 2).shifts
    assert 2.0 < float(shifts[0, 4]) < 2.5


@pytest.mark.parametrize("length_scale", [0.5, 1.5, 4.0])
def test_the_maximum_likelihood_kernel_recovers_the_length_scale_of_a_gaussian_process(
    length_scale,
):
    generator = torch.Generator().manual_seed(0)
    points = 10 * torch.rand(30, 1, generator=generator, dtype=torch.float64)
    covariance = kernel_correlations(torch.cdist(points, points), length_scale)
    factor = torch.linalg.cholesky(covariance + 1e-6 * torch.eye(30, dtype=torch.float64))
    values = 3 + 2 * factor @ torch.randn(30, 200, generator=generator, dtype=torch.float64)
    fitted, nugget = maximum_likelihood_kernel(points, values)
    assert length_scale / 1.3 < fitted < length_scale * 1.3
    assert nugget <= 1e-3


def test_the_kriging_likelihood_is_the_gaussian_log_density_at_the_fitted_mean_and_variance():
    generator = torch.Generator().manual_seed(1)
    points = torch.randn(6, 2, generator=generator, dtype=torch.float64)
    values = torch.randn(6, 3, generator=generator, dtype=torch.float64)
    distances = torch.cdist(points, points)
    length_scale, nugget = 0.8, 0.1
    correlations = kernel_correlations(distances, length_scale) + nugget * torch.eye(6)
    inverse = torch.linalg.inv(correlations)
    ones = torch.ones(6, dtype=torch.float64)
    mean = ones @ inverse @ values / (ones @ inverse @ ones)
    residuals = values - mean
    variance = float(torch.einsum("ik,ij,jk->", residuals, inverse, residuals)) / values.numel()
    density = torch.distributions.MultivariateNormal(
        mean.unsqueeze(-1).expand(-1, 6), variance * correlations
    )
    log_density = float(density.log_prob(values.T).sum())
    constant = -0.5 * values.numel() * (1 + math.log(2 * math.pi))
    assert kriging_log_likelihood(distances, values, length_scale, nugget) + constant == (
        pytest.approx(log_density)
    )


def test_kriging_variances_are_calibrated_on_a_gaussian_process():
    # 30 points and 20 queries of 200 independent draws of one process: the errors of the
    # kriged queries, divided by their predicted standard deviations, have unit variance.
    generator = torch.Generator().manual_seed(2)
    locations = 10 * torch.rand(50, 1, generator=generator, dtype=torch.float64)
    covariance = kernel_correlations(torch.cdist(locations, locations), 1.5)
    factor = torch.linalg.cholesky(covariance + 1e-2 * torch.eye(50, dtype=torch.float64))
    values = 3 + 2 * factor @ torch.randn(50, 200, generator=generator, dtype=torch.float64)
    points, queries = locations[:30], locations[30:]
    predictions, variances = kriged_shifts(points, values[:30], torch.cdist(queries, points))
    standardised = (predictions - values[30:]) / variances.sqrt().unsqueeze(-1)
    assert 0.8 < float(standardised.pow(2).mean()) < 1.25


def test_kriging_with_one_point_returns_its_value_everywhere_without_a_variance():
    shifts, variances = kriged_shifts(
        torch.zeros(1, 2), torch.tensor([[1.0, -2.0]]), torch.rand(3, 1)
    )
    assert shifts.dtype == variances.dtype == torch.float32
    torch.testing.assert_close(shifts, torch.tensor([[1.0, -2.0]]).expand(3, -1))
    assert (variances == 0).all()


def test_clusters_below_the_minimum_count_are_interpolated():
    # Cluster 1 has N - 1 cells under condition 1: too few for its own shift (+4), so it takes
    # cluster 0's +1, the only shared cluster.
    z, clusters, conditions = _reference(
        (0, 0, [0.0]), (0, 1, [1.0]), (1, 0, [5.0]), (1, 1, [9.0], N - 1)
    )
    shifts = condition_shifts(z, clusters, conditions, 1, 2, 2).shifts
    torch.testing.assert_close(shifts[0], torch.tensor([[1.0], [1.0]]))


def test_a_condition_sharing_no_cluster_with_the_target_has_no_shift():
    z, clusters, conditions = _reference((0, 0, [0.0]), (1, 1, [1.0]))
    shifts, _, defined = condition_shifts(z, clusters, conditions, 1, 2, 2)
    assert defined.tolist() == [False, True]
    assert (shifts == 0).all()


@pytest.mark.parametrize("target", [0, 1])
def test_the_shift_between_two_conditions_is_antisymmetric(target):
    z, clusters, conditions = _reference((0, 0, [0.0]), (0, 1, [1.0]))
    shifts = condition_shifts(z, clusters, conditions, target, 1, 2).shifts
    assert shifts[target, 0] == 0 and shifts[1 - target, 0] == (1.0 if target == 1 else -1.0)
