"""Semi-supervised and supervised CGMDVAE: label prediction and transfer from unsupervised."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scvi
import torch

import scgmdvae
from scgmdvae import CGMDVAE
from scgmdvae.model._label_transfer import component_order

EPOCHS = 40


def _blobs_with_labels(
    fraction: float, hidden_types: tuple[str, ...] = (), seed: int = 0
) -> tuple[ad.AnnData, np.ndarray]:
    """Blobs whose ``obs["label"]`` keeps the true type for a random ``fraction`` of cells.

    Types in ``hidden_types`` are never labelled. Returns the AnnData and the labelled mask.
    """
    adata = scgmdvae.data.synthetic_blobs(n_cells_per_group=100, n_clusters=4, n_conditions=2)
    truth = adata.obs["cluster"].astype(str).to_numpy()
    rng = np.random.default_rng(seed)
    labelled = (rng.random(adata.n_obs) < fraction) & ~np.isin(truth, hidden_types)
    adata.obs["label"] = np.where(labelled, truth, "Unknown")
    return adata, labelled


def _train(adata: ad.AnnData, max_epochs: int = EPOCHS, **model_kwargs) -> CGMDVAE:
    CGMDVAE.setup_anndata(adata, layer="counts", condition_key="condition", labels_key="label")
    model = CGMDVAE(adata, **model_kwargs)
    model.train(max_epochs=max_epochs, enable_progress_bar=False)
    return model


def _accuracy(predicted, truth) -> float:
    return float(np.mean(np.asarray(predicted, dtype=str) == np.asarray(truth, dtype=str)))


@pytest.fixture(scope="module")
def semi_supervised():
    scvi.settings.seed = 0
    adata, labelled = _blobs_with_labels(0.1)
    return _train(adata), adata, labelled


def test_ten_percent_labels_transfer_to_unlabelled_cells(semi_supervised):
    model, adata, labelled = semi_supervised
    assert set(model.label_names) == set(adata.obs["cluster"].astype(str))
    assert model.module.n_clusters == 4
    predicted = model.predict()
    truth = adata.obs["cluster"].to_numpy()
    assert _accuracy(predicted[~labelled], truth[~labelled]) >= 0.95


def test_history_has_classification_metrics(semi_supervised):
    model, _, _ = semi_supervised
    for mode in ("train", "validation"):
        for metric in ("classification_loss", "accuracy"):
            values = model.history[f"{mode}_{metric}"].to_numpy(dtype=float)
            assert len(values) == EPOCHS
            assert np.isfinite(values).all()
    assert model.history["train_accuracy"].iloc[-1, 0] >= 0.95
    losses = model.history["train_classification_loss"].to_numpy(dtype=float).ravel()
    assert losses[-1] < losses[0]


def test_predict_soft_and_hard(semi_supervised):
    model, adata, _ = semi_supervised
    soft = model.predict(soft=True)
    assert isinstance(soft, pd.DataFrame)
    assert list(soft.columns) == model.cluster_names == model.label_names
    assert soft.index.equals(adata.obs_names)
    np.testing.assert_allclose(soft.sum(1), 1.0, rtol=1e-5)
    hard = model.predict()
    assert isinstance(hard, pd.Categorical)
    assert list(hard.categories) == model.cluster_names
    np.testing.assert_array_equal(np.asarray(hard), soft.idxmax(1).to_numpy())
    subset = model.predict(indices=[3, 1, 7], soft=True)
    assert list(subset.index) == list(adata.obs_names[[3, 1, 7]])
    np.testing.assert_allclose(subset.to_numpy(), soft.iloc[[3, 1, 7]].to_numpy(), atol=1e-5)


def test_write_results_adds_predictions(semi_supervised, trained_blobs):
    model, adata, _ = semi_supervised
    model.write_results(adata)
    np.testing.assert_array_equal(
        np.asarray(adata.obs["cgmdvae_prediction"]), np.asarray(model.predict())
    )
    np.testing.assert_allclose(
        adata.obs["cgmdvae_prediction_confidence"], model.predict(soft=True).max(1), rtol=1e-5
    )
    unsupervised, unlabelled_adata = trained_blobs
    unsupervised.write_results(unlabelled_adata)
    assert "cgmdvae_prediction" not in unlabelled_adata.obs


def test_fully_supervised_predicts_held_out_cells():
    adata, labelled = _blobs_with_labels(1.0)
    assert labelled.all()
    model = _train(adata)
    held_out = model.validation_indices
    assert len(held_out) > 0
    truth = adata.obs["cluster"].to_numpy()[held_out]
    assert _accuracy(model.predict(indices=held_out), truth) >= 0.95
    assert np.isfinite(model.history["validation_accuracy"].to_numpy(dtype=float)).all()


def test_extra_free_clusters_keep_their_own_names(semi_supervised):
    _, adata, labelled = semi_supervised
    adata = adata.copy()
    model = _train(adata, n_clusters=6)
    assert model.module.n_labels == 4
    assert model.cluster_names[4:] == ["4", "5"]
    soft = model.predict(soft=True)
    assert list(soft.columns) == model.cluster_names
    hard = model.predict()
    assert list(hard.categories) == model.cluster_names
    truth = adata.obs["cluster"].to_numpy()
    assert _accuracy(hard[~labelled], truth[~labelled]) >= 0.95


def test_free_cluster_takes_an_unlabelled_cell_type():
    adata, labelled = _blobs_with_labels(0.1, hidden_types=("type_3",))
    obs_before = adata.obs.copy()
    model = _train(adata, n_clusters=4)
    pd.testing.assert_frame_equal(adata.obs[obs_before.columns], obs_before)
    assert model.cluster_names[-1] == "3"
    predicted = np.asarray(model.predict())
    truth = adata.obs["cluster"].to_numpy()
    hidden = truth == "type_3"
    assert np.mean(predicted[hidden] == "3") >= 0.9
    known = ~hidden & ~labelled
    assert _accuracy(predicted[known], truth[known]) >= 0.95
    assert "train_classification_loss" in model.history


def test_free_cluster_names_never_reuse_a_label():
    adata = scgmdvae.data.synthetic_blobs(n_cells_per_group=5)
    adata.obs["label"] = np.where(np.arange(adata.n_obs) % 2, "3", "1")
    CGMDVAE.setup_anndata(adata, layer="counts", labels_key="label")
    model = CGMDVAE(adata, n_clusters=4)
    assert sorted(model.cluster_names[:2]) == ["1", "3"]
    assert model.cluster_names[2:] == ["2", "cluster_3"]


def test_component_order_matches_labels_to_old_clusters():
    old_clusters = np.array([2, 2, 0, 0, 3])
    label_codes = np.array([0, 0, 1, 1, 0])
    np.testing.assert_array_equal(component_order(old_clusters, label_codes, 2, 4), [2, 0, 1, 3])
    np.testing.assert_array_equal(
        component_order(old_clusters[:0], label_codes[:0], 2, 3), [0, 1, 2]
    )


def test_from_unsupervised_copies_weights_in_label_order(trained_blobs):
    unsupervised, unlabelled_adata = trained_blobs
    adata = unlabelled_adata.copy()
    truth = adata.obs["cluster"].astype(str).to_numpy()
    labelled = np.random.default_rng(1).random(adata.n_obs) < 0.1
    adata.obs["label"] = np.where(labelled, truth, "Unknown")

    model = CGMDVAE.from_unsupervised(unsupervised, labels_key="label", adata=adata)
    assert model.module.n_clusters == 4 and model.module.n_labels == 4
    assert model.registry["setup_args"]["condition_key"] == "condition"
    old_state, new_state = unsupervised.module.state_dict(), model.module.state_dict()
    for name in ("encoder.readouts.0.weight", "decoder.px_scale_decoder.0.weight", "px_r"):
        torch.testing.assert_close(new_state[name], old_state[name])
    # Before any label-driven update, the copied components already name the right cells.
    model.train(max_epochs=1, lr=1e-8, enable_progress_bar=False)
    assert _accuracy(model.predict(), truth) >= 0.95
    model.train(max_epochs=10, enable_progress_bar=False)
    assert _accuracy(model.predict()[~labelled], truth[~labelled]) >= 0.95

    wider = CGMDVAE.from_unsupervised(unsupervised, "label", adata=adata.copy(), n_clusters=5)
    wider_state = wider.module.state_dict()
    encoder = "encoder.readouts.0.weight"
    torch.testing.assert_close(wider_state[encoder], old_state[encoder])
    assert wider_state["cluster_head.readouts.0.weight"].shape[0] == 5
    assert wider.cluster_names[-1] == "4"


def test_from_unsupervised_requires_a_trained_model():
    adata = scgmdvae.data.synthetic_blobs(n_cells_per_group=5)
    adata.obs["label"] = adata.obs["cluster"]
    CGMDVAE.setup_anndata(adata, layer="counts")
    with pytest.raises(RuntimeError, match="not been trained"):
        CGMDVAE.from_unsupervised(CGMDVAE(adata, n_clusters=4), labels_key="label")
