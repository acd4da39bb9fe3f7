import numpy as np
import pytest

from scgmdvae.model._component_merging import (
    MIN_PAIR_ENTROPY,
    combined_components,
    components_of_groups,
    connected_pieces,
    pair_entropies,
    voted_components,
)
from scgmdvae.model._mixture_init import N_NEIGHBORS
from scgmdvae.model._spanned_mixture import component_probabilities


def _probs(rows: list[list[float]], repeats: int = 50) -> np.ndarray:
    return np.repeat(np.array(rows, dtype=np.float64), repeats, axis=0)


def test_pair_entropy_is_the_mean_binary_entropy_of_the_split():
    probs = _probs([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    entropies = pair_entropies(probs)
    assert entropies[0, 1] == pytest.approx(np.log(2))
    assert entropies[0, 2] == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_array_equal(entropies, entropies.T)
    assert np.isneginf(np.diag(entropies)).all()


def test_pair_entropy_matches_its_definition_on_random_probabilities():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=200)
    first, second = probs[:, 1], probs[:, 3]
    share = first / (first + second)
    binary = -(share * np.log(share) + (1 - share) * np.log(1 - share))
    expected = ((first + second) * binary).sum() / (first + second).sum()
    assert pair_entropies(probs)[1, 3] == pytest.approx(expected)


def test_components_the_cells_cannot_tell_apart_are_combined():
    # Components 0 and 2 split one type; 1 and 3 are types of their own; 4 touches 3.
    probs = _probs(
        [
            [0.6, 0.0, 0.4, 0.0, 0.0],
            [0.3, 0.0, 0.7, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.999, 0.001],
            [0.0, 0.0, 0.0, 0.001, 0.999],
        ]
    )
    np.testing.assert_array_equal(combined_components(probs), [0, 1, 0, 2, 3])


def test_combining_continues_while_the_pair_entropy_is_high_enough():
    # A type cut in three pieces becomes one cluster through two combinations.
    probs = _probs([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5]])
    np.testing.assert_array_equal(combined_components(probs), [0, 0, 0])
    separated = np.eye(3).repeat(10, axis=0)
    np.testing.assert_array_equal(combined_components(separated), [0, 1, 2])
    assert pair_entropies(_probs([[0.998, 0.002], [0.002, 0.998]])).max() < MIN_PAIR_ENTROPY


def test_pieces_of_one_cloud_are_combined_and_separate_clouds_are_not():
    rng = np.random.default_rng(0)
    one_cloud = rng.normal(0, 1, (300, 5))
    pieces = (one_cloud[:, 0] > 0).astype(int)  # one Gaussian cut in two halves
    apart = [rng.normal(mean, 1, (100, 5)) for mean in (12.0, -12.0)]
    latent = np.vstack([one_cloud, *apart])
    components = np.concatenate([pieces, [2] * 100, [3] * 100])
    groups = combined_components(component_probabilities(latent, components))
    np.testing.assert_array_equal(groups, [0, 0, 1, 2])


def test_small_components_take_the_pooled_shape_and_stay_in_their_cloud():
    # Components of 6 cells in 10 dimensions: too few for a covariance of their own.
    rng = np.random.default_rng(0)
    clouds = np.repeat([0, 1, 2], 60)
    latent = 20.0 * np.eye(10)[clouds] + rng.normal(0, 1, (180, 10))
    components = np.arange(180) // 6
    groups = combined_components(component_probabilities(latent, components))
    cloud_of_component = clouds[::6]
    for group in np.unique(groups):
        assert len(np.unique(cloud_of_component[groups == group])) == 1


def _clouds(n_cells: int, means: tuple[float, ...], n_dims: int = 5) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.vstack([rng.normal(mean, 1, (n_cells, n_dims)) for mean in means])


def test_a_component_spanning_separate_clouds_is_split_into_one_piece_per_cloud():
    latent = _clouds(100, (0.0, 20.0, -20.0))
    components = np.repeat([0, 0, 1], 100)
    pieces = connected_pieces(latent, components)
    np.testing.assert_array_equal(pieces, np.repeat([0, 1, 2], 100))


def test_a_cloud_cut_between_two_components_stays_one_piece_per_component():
    latent = _clouds(300, (0.0,))
    halves = (latent[:, 0] > 0).astype(int)
    pieces = connected_pieces(latent, halves)
    assert pieces.max() == 1
    np.testing.assert_array_equal(pieces, halves if halves[0] == 0 else 1 - halves)


def test_pieces_smaller_than_a_neighbourhood_join_the_piece_around_them():
    # Five cells of the far cloud carry the near cloud's component: a piece of five.
    latent = _clouds(100, (0.0, 20.0))
    clouds = np.repeat([0, 1], 100)
    components = clouds.copy()
    components[[100, 120, 140, 160, 180]] = 0
    assert 5 < N_NEIGHBORS
    np.testing.assert_array_equal(connected_pieces(latent, components), clouds)


def test_separate_clouds_in_one_component_are_not_combined_again():
    latent = _clouds(100, (0.0, 20.0, -20.0))
    pieces = connected_pieces(latent, np.repeat([0, 0, 1], 100))
    groups = combined_components(component_probabilities(latent, pieces))
    np.testing.assert_array_equal(groups, [0, 1, 2])


def test_combining_goes_on_until_there_are_at_most_max_groups():
    separated = np.eye(4).repeat(10, axis=0)
    np.testing.assert_array_equal(combined_components(separated), [0, 1, 2, 3])
    assert combined_components(separated, max_groups=2).max() == 1


def test_each_group_gets_a_component_of_its_own():
    # Component 3 holds two groups (of 60 and 40 cells); group 2 is all of component 1.
    components = np.repeat([3, 3, 1, 3], [60, 40, 30, 5])
    groups = np.repeat([0, 1, 2, 0], [60, 40, 30, 5])
    np.testing.assert_array_equal(components_of_groups(components, groups, 5), [3, 0, 1])
    assert len(set(components_of_groups(components, groups, 5))) == 3


def test_the_vote_moves_whole_guide_clusters_to_their_majority_component():
    # Guide cluster 0: 6 of its 10 cells went to component 4, so all 10 go there (a merge with
    # cluster 1, which stayed in component 4). Cluster 2: 3 of its 10 cells left for component
    # 4, a part cut off by a Gaussian, so the vote brings them back to component 7.
    guide = np.repeat([0, 1, 2], 10)
    components = np.array([4] * 6 + [2] * 4 + [4] * 10 + [4] * 3 + [7] * 7)
    np.testing.assert_array_equal(voted_components(guide, components), np.repeat([4, 4, 7], 10))
