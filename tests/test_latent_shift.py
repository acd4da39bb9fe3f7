"""The latent shifts between conditions of ``latent="shift"`` counterfactuals."""

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


def test_an_unseen_cluster_takes_the_shifts_of_the_clusters_it_is_close_to():
    # Under condition 0, cluster 2 lies 2 from cluster 0 (shift +1), 8 from cluster 1 (+3) and
    # 98 from cluster 5 (+10): inverse squared distance weights. Cluster 3 has no cell under
    # condition 0 and takes the median shift, +3, as does cluster 4, which has no cell at all.
    z, clusters, conditions = _reference(
        (0, 0, [0.0]),
        (0, 1, [1.0]),
        (1, 0, [10.0]),
        (1, 1, [13.0]),
        (2, 0, [2.0], 3),
        (3, 1, [50.0]),
        (5, 0, [100.0]),
        (5, 1, [110.0]),
    )
    shifts, _ = condition_shifts(z, clusters, conditions, 1, 6, 2)
    weights = torch.tensor([2.0, 8.0, 98.0], dtype=torch.float64).pow(-2)
    expected = (weights @ torch.tensor([1.0, 3.0, 10.0], dtype=torch.float64)) / weights.sum()
    torch.testing.assert_close(shifts[0, 2], expected.float().reshape(1))
    torch.testing.assert_close(shifts[0, [3, 4]], torch.tensor([[3.0], [3.0]]))
    torch.testing.assert_close(shifts[0, [0, 1, 5]], torch.tensor([[1.0], [3.0], [10.0]]))


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
