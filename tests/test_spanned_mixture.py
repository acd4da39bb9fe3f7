import numpy as np
from scipy.stats import multivariate_normal

from scgmdvae.metrics import adjusted_rand_index
from scgmdvae.model._mixture_init import leiden_partition
from scgmdvae.model._spanned_mixture import (
    assignment_entropy,
    component_probabilities,
    most_distinct_partition,
)


def _two_clouds(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A large cloud (300 cells) and a small one (60 cells) apart from it, in 3 dimensions."""
    rng = np.random.default_rng(seed)
    latent = np.vstack([rng.normal(0, 1, (300, 3)), rng.normal((8, 0, 0), 1, (60, 3))])
    return latent, np.repeat([0, 1], [300, 60])


def test_component_probabilities_are_the_posterior_of_the_components_gaussians():
    rng = np.random.default_rng(0)
    latent = np.vstack([rng.normal(0, 1, (60, 2)), rng.normal((3, 0), (1, 2), (40, 2))])
    components = np.repeat([0, 1], [60, 40])
    densities = np.column_stack(
        [
            share * multivariate_normal(cells.mean(0), np.cov(cells.T)).pdf(latent)
            for share, cells in ((0.6, latent[:60]), (0.4, latent[60:]))
        ]
    )
    expected = densities / densities.sum(1, keepdims=True)
    np.testing.assert_allclose(component_probabilities(latent, components), expected, rtol=1e-4)


def test_assignment_entropy_is_the_mean_entropy_of_the_cells_assignments():
    latent, truth = _two_clouds()
    probs = component_probabilities(latent, truth)
    expected = -(probs * np.log(np.clip(probs, 1e-300, None))).sum(1).mean()
    assert np.isclose(assignment_entropy(latent, truth), expected)


def test_cutting_a_cloud_is_less_distinct_than_separating_two():
    latent, truth = _two_clouds()
    # Two parts either way: the two clouds, or both clouds cut in halves along the second
    # axis. The cut leaves the cells along it unsure; the clouds' cells are sure.
    cut = (latent[:, 1] > 0).astype(int)
    assert assignment_entropy(latent, truth) < 0.01 < 0.1 < assignment_entropy(latent, cut)
    np.testing.assert_array_equal(most_distinct_partition(latent, [cut, truth]), truth)


def test_equally_distinct_partitions_keep_the_first():
    latent, truth = _two_clouds()
    relabelled = 1 - truth
    assert most_distinct_partition(latent, [relabelled, truth]) is relabelled


def test_leiden_restarts_keep_a_partition_of_the_same_number_of_communities():
    rng = np.random.default_rng(0)
    centres = 10 * rng.normal(size=(5, 4))
    latent = np.concatenate([c + rng.normal(size=(60, 4)) for c in centres])
    truth = np.repeat(np.arange(5), 60)
    codes = leiden_partition(latent, 5, seed=0, n_restarts=5)
    assert adjusted_rand_index(truth, codes) == 1.0
    assert leiden_partition(latent, 3, seed=0, n_restarts=5).max() + 1 <= 3
