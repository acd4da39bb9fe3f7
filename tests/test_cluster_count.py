import numpy as np

from scgmdvae.model._cluster_count import (
    MIN_STABLE_JACCARD,
    RESOLUTIONS,
    best_match_jaccard,
    community_stability,
    stable_cluster_count,
)


def clouds(sizes, n_dims=10, spread=8.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, spread, (len(sizes), n_dims))
    latent = np.vstack(
        [rng.normal(c, 1, (n, n_dims)) for c, n in zip(centres, sizes, strict=True)]
    )
    return latent, np.repeat(np.arange(len(sizes)), sizes)


def test_best_match_jaccard_is_each_clusters_best_overlap_over_union():
    reference = np.array([0, 0, 0, 1, 1, 1])
    codes = np.array([0, 0, 1, 1, 1, 1])
    # {0,1,2} best matches {0,1}: 2/3; {3,4,5} best matches {2,3,4,5}: 3/4.
    np.testing.assert_allclose(best_match_jaccard(reference, codes), [2 / 3, 3 / 4])
    np.testing.assert_allclose(best_match_jaccard(codes, codes), [1.0, 1.0])


def test_separate_clouds_are_counted_and_each_is_stable():
    latent, truth = clouds([300, 200, 150, 100, 60])
    assert stable_cluster_count(latent, max_clusters=30, seed=0) == 5
    for communities, stability in community_stability(latent, RESOLUTIONS[:4], seed=0):
        assert communities.max() + 1 == 5 and stability.min() > 0.95
        assert len(np.unique(np.column_stack([communities, truth]), axis=0)) == 5


def test_slices_of_one_cloud_are_not_stable_clusters():
    # Leiden cuts a single cloud into communities at higher resolutions; those cuts move from
    # one subsample to the next, so the count stays at the one cloud.
    latent = np.random.default_rng(1).normal(0, 1, (800, 10))
    scanned = list(community_stability(latent, RESOLUTIONS, seed=0))
    assert any(c.max() + 1 > 1 and s.min() < MIN_STABLE_JACCARD for c, s in scanned)
    assert stable_cluster_count(latent, max_clusters=30, seed=0) == 1


def test_the_count_never_exceeds_the_upper_bound():
    latent, _ = clouds([100] * 5)
    assert stable_cluster_count(latent, max_clusters=3, seed=0) == 3
