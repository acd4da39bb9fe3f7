"""The latent shifts between conditions of ``latent="shift"`` counterfactuals."""

import math

import pytest
import torch

from scgmdvae.model._latent_shift import (
    MIN_CELLS_PER_CONDITION,
    SHEPARD_POWERS,
    condition_shifts,
    interpolated_shifts,
    inverse_distance_weights,
    leave_one_out_power,
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
    shifts, defined = condition_shifts(z, clusters, conditions, 1, 2, 2)
    torch.testing.assert_close(shifts[0], torch.tensor([[1.0, 0.0], [2.0, 2.0]]))
    assert (shifts[1] == 0).all()
    assert defined.tolist() == [True, True]


def test_a_local_response_is_interpolated_from_the_nearest_clusters():
    # Two groups of shared clusters far apart, each with its own response (+1 near 0, +10 near
    # 100): leave-one-cluster-out prefers steep weights, so cluster 4, next to the first group,
    # takes +1 (the plain mean of the shifts would be +5.5). Cluster 5 has no cell under
    # condition 0 and takes the median shift (+1, the lower of the two middle ones), as does
    # cluster 6, which has no cell at all.
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
    )
    means, differences = (
        torch.tensor([[0.0], [1.0], [100.0], [101.0]]),
        torch.tensor([[1.0], [1.0], [10.0], [10.0]]),
    )
    power = leave_one_out_power(means, differences)
    assert power >= 4
    shifts, _ = condition_shifts(z, clusters, conditions, 1, 7, 2)
    distances = torch.tensor([[2.0, 1.0, 98.0, 99.0]])
    torch.testing.assert_close(shifts[0, 4], interpolated_shifts(distances, differences, power)[0])
    assert abs(float(shifts[0, 4]) - 1.0) < 1e-3
    torch.testing.assert_close(shifts[0, [5, 6]], torch.tensor([[1.0], [1.0]]))
    torch.testing.assert_close(shifts[0, :4], differences)


def test_a_response_unrelated_to_position_is_interpolated_as_the_mean_shift():
    # Responses alternate along z (+1, +3, +1, +3): a cluster's neighbours predict it worse than
    # the mean of the others, so the plain mean (power 0) is chosen and the unseen cluster 4,
    # between clusters 1 and 2, takes the mean shift +2, not a neighbour's.
    groups = [(k, 0, [float(k)]) for k in range(4)]
    groups += [(k, 1, [float(k) + shift]) for k, shift in enumerate([1.0, 3.0, 1.0, 3.0])]
    z, clusters, conditions = _reference(*groups, (4, 0, [1.5]))
    means, differences = (
        torch.arange(4.0).reshape(4, 1),
        torch.tensor([[1.0], [3.0], [1.0], [3.0]]),
    )
    assert leave_one_out_power(means, differences) == 0
    shifts, _ = condition_shifts(z, clusters, conditions, 1, 5, 2)
    torch.testing.assert_close(shifts[0, 4], torch.tensor([2.0]))


@pytest.mark.parametrize("power", SHEPARD_POWERS)
def test_inverse_distance_weights_are_finite_and_favour_the_nearest_unless_flat(power):
    distances = torch.tensor([[1e-3, 2e-3, 5.0], [3.0, 1.0, math.inf]])
    weights = inverse_distance_weights(distances, power)
    assert torch.isfinite(weights).all() and (weights >= 0).all()
    assert weights[1, 2] == 0
    if power == 0:
        assert weights[0].unique().numel() == 1 and weights[1, :2].unique().numel() == 1
    else:
        assert (weights.argmax(1) == torch.tensor([0, 1])).all()


def test_clusters_below_the_minimum_count_are_interpolated():
    # Cluster 1 has N - 1 cells under condition 1: too few for its own shift (+4), so it takes
    # cluster 0's +1, the only shared cluster.
    z, clusters, conditions = _reference(
        (0, 0, [0.0]), (0, 1, [1.0]), (1, 0, [5.0]), (1, 1, [9.0], N - 1)
    )
    shifts, _ = condition_shifts(z, clusters, conditions, 1, 2, 2)
    torch.testing.assert_close(shifts[0], torch.tensor([[1.0], [1.0]]))


def test_a_condition_sharing_no_cluster_with_the_target_has_no_shift():
    z, clusters, conditions = _reference((0, 0, [0.0]), (1, 1, [1.0]))
    shifts, defined = condition_shifts(z, clusters, conditions, 1, 2, 2)
    assert defined.tolist() == [False, True]
    assert (shifts == 0).all()


@pytest.mark.parametrize("target", [0, 1])
def test_the_shift_between_two_conditions_is_antisymmetric(target):
    z, clusters, conditions = _reference((0, 0, [0.0]), (0, 1, [1.0]))
    shifts, _ = condition_shifts(z, clusters, conditions, target, 1, 2)
    assert shifts[target, 0] == 0 and shifts[1 - target, 0] == (1.0 if target == 1 else -1.0)
