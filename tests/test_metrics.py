import numpy as np
import pandas as pd
import pytest

from scgmdvae.metrics import (
    adjusted_rand_index,
    clustering_scores,
    condition_mixing_entropy,
    expected_calibration_error,
    hungarian_accuracy,
    hungarian_mapping,
    normalized_mutual_info,
    purity,
)

# Contingency table (rows = clusters, columns = labels a, b, c):
#   cluster 0: a=5 b=1 c=0
#   cluster 1: a=4 b=0 c=0
#   cluster 2: a=0 b=3 c=2
#   cluster 3: a=0 b=0 c=1
COUNTS = {0: {"a": 5, "b": 1}, 1: {"a": 4}, 2: {"b": 3, "c": 2}, 3: {"c": 1}}


def _expand(counts: dict[int, dict[str, int]]) -> tuple[list[str], list[int]]:
    true, pred = [], []
    for cluster, row in counts.items():
        for label, n in row.items():
            true += [label] * n
            pred += [cluster] * n
    return true, pred


def test_perfect_clustering_with_renamed_clusters_scores_one():
    rng = np.random.default_rng(0)
    true = rng.choice(["B", "T", "NK", "Mono"], size=200)
    renaming = {"B": 3, "T": 0, "NK": 7, "Mono": 1}
    pred = [renaming[t] for t in true]
    scores = clustering_scores(true, pred)
    assert scores.keys() == {"ari", "nmi", "accuracy", "purity"}
    assert scores == pytest.approx(dict.fromkeys(scores, 1.0))
    assert hungarian_mapping(true, pred) == {v: k for k, v in renaming.items()}


def test_hand_computed_contingency_example():
    true, pred = _expand(COUNTS)
    # Best one-to-one matching: 0->a (5), 2->b (3), 3->c (1): 9 of 16 cells; cluster 1 unmatched.
    assert hungarian_mapping(true, pred) == {0: "a", 2: "b", 3: "c"}
    assert hungarian_accuracy(true, pred) == pytest.approx(9 / 16)
    # Majority per cluster: 5 + 4 + 3 + 1 = 13 of 16.
    assert purity(true, pred) == pytest.approx(13 / 16)


def test_more_labels_than_clusters_count_unmatched_labels_as_errors():
    true = ["a"] * 4 + ["b"] * 3 + ["c"] * 2
    pred = [0] * 7 + [1] * 2
    assert hungarian_mapping(true, pred) == {0: "a", 1: "c"}
    assert hungarian_accuracy(true, pred) == pytest.approx(6 / 9)
    assert purity(true, pred) == pytest.approx(6 / 9)


def test_scores_are_below_one_for_imperfect_clustering():
    true, pred = _expand(COUNTS)
    scores = clustering_scores(true, pred)
    assert all(0 < value < 1 for value in scores.values())
    assert scores["ari"] == pytest.approx(adjusted_rand_index(true, pred))
    assert scores["nmi"] == pytest.approx(normalized_mutual_info(true, pred))


def test_missing_reference_labels_are_dropped():
    true = pd.Categorical(["x", None, "y", np.nan, "x", "y"])
    pred = np.array([1, 1, 2, 1, 1, 2])
    # With the two unlabelled cells dropped the clustering is perfect.
    assert clustering_scores(true, pred) == pytest.approx(
        {"ari": 1.0, "nmi": 1.0, "accuracy": 1.0, "purity": 1.0}
    )
    as_series = pd.Series(["x", None, "y", None, "x", "y"])
    assert hungarian_accuracy(as_series, pred) == 1.0


def test_length_mismatch_raises():
    with pytest.raises(ValueError, match="length"):
        clustering_scores(["a", "b", "c"], [0, 1])


def test_all_labels_missing_raises():
    with pytest.raises(ValueError, match="No cells left"):
        purity([None, np.nan], [0, 1])


def test_missing_predictions_raise():
    with pytest.raises(ValueError, match="Predicted labels"):
        purity(["a", "b"], [0, None])


def test_mixing_entropy_extremes():
    clusters = [0, 0, 0, 0, 1, 1, 1, 1]
    mixed = ["ctrl", "stim"] * 4
    separated = ["ctrl"] * 4 + ["stim"] * 4
    assert condition_mixing_entropy(clusters, mixed) == pytest.approx(1.0)
    assert condition_mixing_entropy(clusters, separated) == pytest.approx(0.0)


def test_mixing_entropy_is_size_weighted_and_normalised():
    # Cluster 0 (6 cells): conditions a, b, c in equal shares -> normalised entropy 1.
    # Cluster 1 (2 cells): only a -> 0. Weighted mean: 6/8.
    clusters = [0] * 6 + [1] * 2
    conditions = ["a", "b", "c"] * 2 + ["a", "a"]
    assert condition_mixing_entropy(clusters, conditions) == pytest.approx(0.75)


def test_mixing_entropy_needs_two_conditions():
    with pytest.raises(ValueError, match="two conditions"):
        condition_mixing_entropy([0, 1], ["ctrl", "ctrl"])


def test_expected_calibration_error_is_zero_when_calibrated_and_large_when_overconfident():
    probabilities = pd.DataFrame({"a": [0.8] * 10 + [1.0] * 5, "b": [0.2] * 10 + [0.0] * 5})
    truth = ["a"] * 8 + ["b"] * 2 + ["a"] * 5
    assert expected_calibration_error(truth, probabilities) == pytest.approx(0.0)
    wrong = ["b"] * 15
    assert expected_calibration_error(wrong, probabilities) == pytest.approx(
        (10 * 0.8 + 5 * 1.0) / 15
    )
