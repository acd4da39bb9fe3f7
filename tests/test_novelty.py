"""Novel cell types: novelty scores, conformal p-values and the "unknown" prediction."""

import numpy as np
import pandas as pd
import pytest
import scvi
import torch

import scgmdvae
from scgmdvae import CGMDVAE
from scgmdvae._constants import RESULT_KEYS

FIT = {"enable_progress_bar": False, "logger": False, "enable_checkpointing": False}


@pytest.fixture(scope="module")
def reference_and_query():
    """A reference without type_3 (conditions A, B, labelled) and its query (condition C)."""
    scvi.settings.seed = 0
    adata = scgmdvae.data.synthetic_blobs(n_cells_per_group=60, n_clusters=4, n_conditions=3)
    types = adata.obs["cluster"].astype(str)
    in_reference = (adata.obs["condition"] != "C").to_numpy() & (types != "type_3").to_numpy()
    reference = adata[in_reference].copy()
    reference.obs["cell_type"] = reference.obs["cluster"].astype(str)
    CGMDVAE.setup_anndata(
        reference, layer="counts", condition_key="condition", labels_key="cell_type"
    )
    model = CGMDVAE(reference)
    model.train(max_epochs=30, **FIT)
    query = adata[(adata.obs["condition"] == "C").to_numpy()].copy()
    query.obs["cell_type"] = query.obs["cluster"].astype(str)
    obs_before = query.obs.copy()
    query_model = CGMDVAE.load_query_data(query, model)
    query_model.train(max_epochs=30, **FIT)
    return model, query_model, query, obs_before


def test_a_query_only_type_is_called_unknown_and_known_types_are_kept(reference_and_query):
    _, query_model, query, _ = reference_and_query
    truth = query.obs["cell_type"].to_numpy()
    novel = truth == "type_3"
    predicted = np.asarray(query_model.predict(unknown_threshold=0.01))
    assert (predicted[novel] == "unknown").mean() >= 0.7
    assert (predicted[~novel] == truth[~novel]).mean() >= 0.9


@pytest.fixture(scope="module")
def query_with_new_cluster(reference_and_query):
    """The query mapped with one new component, and its obs before mapping."""
    model, _, query, _ = reference_and_query
    query = query.copy()
    obs_before = query.obs.copy()
    scvi.settings.seed = 0
    query_model = CGMDVAE.load_query_data(query, model, n_new_clusters=1)
    # Only the new components' rows of the frozen heads learn, from a random start: they need
    # more optimiser steps than 240 cells give in 30 epochs of 128.
    query_model.train(max_epochs=60, batch_size=32, **FIT)
    return model, query_model, query, obs_before


def test_a_new_component_opens_for_a_query_only_type(query_with_new_cluster):
    model, query_model, query, obs_before = query_with_new_cluster
    pd.testing.assert_frame_equal(query.obs[obs_before.columns], obs_before)
    assert query_model.cluster_names == [*model.cluster_names, "3"]
    truth = query.obs["cell_type"].to_numpy()
    novel = truth == "type_3"
    predicted = np.asarray(query_model.predict())
    assert (predicted[novel] == "3").mean() >= 0.7
    assert (predicted[~novel] == truth[~novel]).mean() >= 0.9
    pvalues = query_model.get_novelty_scores()["novelty_pvalue"].to_numpy()
    assert np.median(pvalues[novel]) < 0.05 < np.median(pvalues[~novel])


def test_a_new_component_leaves_the_reference_components(query_with_new_cluster):
    model, query_model, _, _ = query_with_new_cluster
    reference, query = model.module.state_dict(), query_model.module.state_dict()
    means = "prior_network.readouts.0.weight"
    k, n_latent = model.module.n_clusters, model.module.n_latent
    for block in range(2):
        kept = slice(block * (k + 1) * n_latent, (block * (k + 1) + k) * n_latent)
        torch.testing.assert_close(
            query[means][kept], reference[means][block * k * n_latent : (block + 1) * k * n_latent]
        )
    for head in ("cluster_head.readouts.0.weight", "dirichlet_head.readouts.0.bias"):
        torch.testing.assert_close(query[head][:k], reference[head])


def test_new_components_need_a_labelled_reference(reference_and_query, trained_blobs):
    model, _, query, _ = reference_and_query
    with pytest.raises(ValueError, match="non-negative integer"):
        CGMDVAE.load_query_data(query.copy(), model, n_new_clusters=-1)
    unsupervised, adata = trained_blobs
    query = adata.copy()
    query.obs["condition"] = "new"
    obs_before = query.obs.copy()
    with pytest.raises(ValueError, match="reference trained with labels"):
        CGMDVAE.load_query_data(query, unsupervised, n_new_clusters=1)
    pd.testing.assert_frame_equal(query.obs, obs_before)


def test_p_values_are_conformal_on_held_out_reference_cells(reference_and_query):
    model, _, _, _ = reference_and_query
    calibration = model.novelty_calibration_
    assert calibration.size >= 50 and np.all(np.diff(calibration) >= 0)
    novelty = model.get_novelty_scores()
    assert list(novelty.columns) == ["novelty_score", "novelty_pvalue"]
    pvalues = novelty["novelty_pvalue"].to_numpy()
    assert ((pvalues > 0) & (pvalues <= 1)).all()
    held_out = np.asarray(model.validation_indices)
    assert (pvalues[held_out] < 0.1).mean() <= 0.2


def test_write_results_adds_novelty_and_leaves_the_users_columns(reference_and_query):
    _, query_model, query, obs_before = reference_and_query
    query_model.write_results(query)
    pd.testing.assert_frame_equal(query.obs[obs_before.columns], obs_before)
    novelty = query_model.get_novelty_scores()
    np.testing.assert_allclose(
        query.obs[RESULT_KEYS.NOVELTY_PVALUE], novelty["novelty_pvalue"], rtol=1e-6
    )
    assert RESULT_KEYS.NOVELTY_SCORE in query.obs


def test_calibration_survives_save_and_load(reference_and_query, tmp_path):
    model, _, _, _ = reference_and_query
    model.save(tmp_path / "model")
    loaded = CGMDVAE.load(str(tmp_path / "model"), adata=model.adata)
    np.testing.assert_array_equal(loaded.novelty_calibration_, model.novelty_calibration_)
    pd.testing.assert_frame_equal(loaded.get_novelty_scores(), model.get_novelty_scores())


def test_novelty_needs_labels_and_a_valid_threshold(reference_and_query, trained_blobs):
    model, _, _, _ = reference_and_query
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        model.predict(unknown_threshold=1.5)
    with pytest.raises(ValueError, match="hard predictions"):
        model.predict(soft=True, unknown_threshold=0.01)
    unsupervised, _ = trained_blobs
    with pytest.raises(ValueError, match="no labels"):
        unsupervised.get_novelty_scores()
