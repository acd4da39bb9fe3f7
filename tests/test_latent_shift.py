"""The latent shift between conditions of ``latent="shift"`` counterfactuals."""

import pytest
import torch

from scgmdvae.model._latent_shift import MIN_CELLS_PER_CONDITION, condition_shifts

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


def test_the_shift_is_the_median_over_shared_clusters_of_their_differences():
    # Shared clusters 0-2 move by +1, +2 and +10 (a contaminated one) in dim 0; the median, +2,
    # is every cell's shift. Cluster 3 is seen under condition 0 only and does not count.
    z, clusters, conditions = _reference(
        (0, 0, [0.0, 0.0]),
        (0, 1, [1.0, 0.0]),
        (1, 0, [5.0, 1.0]),
        (1, 1, [7.0, 1.0]),
        (2, 0, [-4.0, 2.0]),
        (2, 1, [6.0, 2.0]),
        (3, 0, [9.0, 9.0]),
    )
    shifts, defined = condition_shifts(z, clusters, conditions, 1, 4, 2)
    torch.testing.assert_close(shifts, torch.tensor([[2.0, 0.0], [0.0, 0.0]]))
    assert defined.tolist() == [True, True]


def test_clusters_below_the_minimum_count_do_not_count():
    # Cluster 1 has N - 1 cells under condition 1: too few, so only cluster 0's +1 counts.
    z, clusters, conditions = _reference(
        (0, 0, [0.0]), (0, 1, [1.0]), (1, 0, [5.0]), (1, 1, [9.0], N - 1)
    )
    shifts, _ = condition_shifts(z, clusters, conditions, 1, 2, 2)
    torch.testing.assert_close(shifts[0], torch.tensor([1.0]))


def test_a_condition_sharing_no_cluster_with_the_target_has_no_shift():
    z, clusters, conditions = _reference((0, 0, [0.0]), (1, 1, [1.0]))
    shifts, defined = condition_shifts(z, clusters, conditions, 1, 2, 2)
    assert defined.tolist() == [False, True]
    assert (shifts == 0).all()


@pytest.mark.parametrize("target", [0, 1])
def test_the_shift_between_two_conditions_is_antisymmetric(target):
    z, clusters, conditions = _reference((0, 0, [0.0]), (0, 1, [1.0]))
    shifts, _ = condition_shifts(z, clusters, conditions, target, 1, 2)
    assert shifts[target] == 0 and shifts[1 - target] == (1.0 if target == 1 else -1.0)
