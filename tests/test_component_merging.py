import numpy as np
import pytest

from scgmdvae.model._component_merging import (
    MIN_PAIR_ENTROPY,
    combined_components,
    pair_entropies,
)


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
    # Components 0 and 2 split one type; 1 and 3 are types of their own; 4 overlaps 3 a little.
    probs = _probs(
        [
            [0.6, 0.0, 0.4, 0.0, 0.0],
            [0.3, 0.0, 0.7, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.99, 0.01],
            [0.0, 0.0, 0.0, 0.01, 0.99],
        ]
    )
    np.testing.assert_array_equal(combined_components(probs), [0, 1, 0, 2, 3])


def test_combining_continues_while_the_pair_entropy_is_high_enough():
    # A type cut in three pieces becomes one cluster through two combinations.
    probs = _probs([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5]])
    np.testing.assert_array_equal(combined_components(probs), [0, 0, 0])
    separated = np.eye(3).repeat(10, axis=0)
    np.testing.assert_array_equal(combined_components(separated), [0, 1, 2])
    assert pair_entropies(_probs([[0.98, 0.02], [0.02, 0.98]])).max() < MIN_PAIR_ENTROPY
