"""Every public method of CGMDVAE, inherited ones included, works or refuses with a message."""

import numpy as np
import pytest
import scvi
import torch

import scgmdvae
from scgmdvae import CGMDVAE

FIT = {"enable_progress_bar": False, "logger": False, "enable_checkpointing": False}

TESTED_IN_OTHER_FILES = {
    "cluster_markers",
    "from_unsupervised",
    "get_cluster_probabilities",
    "get_elbo",
    "get_marginal_ll",
    "get_normalized_expression",
    "get_novelty_scores",
    "get_reconstruction_error",
    "load",
    "load_query_data",
    "predict",
    "predict_clusters",
    "predict_condition_response",
    "prepare_query_anndata",
    "sample",
    "save",
    "setup_anndata",
    "train",
    "train_from_kmeans",
    "train_guided",
    "traverse_latent",
    "view_anndata_setup",
    "write_results",
}
TESTED_HERE = {
    "convert_legacy_save",
    "data_registry",
    "deregister_manager",
    "differential_abundance",
    "differential_expression",
    "get_aggregated_posterior",
    "get_anndata_manager",
    "get_feature_correlation_matrix",
    "get_from_registry",
    "get_importance_weights",
    "get_latent_library_size",
    "get_latent_representation",
    "get_likelihood_parameters",
    "get_setup_arg",
    "get_state_registry",
    "get_var_names",
    "load_registry",
    "posterior_predictive_sample",
    "prepare_query_mudata",
    "register_manager",
    "to_device",
    "transfer_fields",
    "update_setup_method_args",
    "view_registry",
    "view_setup_args",
    "view_setup_method_args",
}


@pytest.fixture(scope="module")
def model() -> CGMDVAE:
    scvi.settings.seed = 0
    adata = scgmdvae.data.synthetic_blobs(n_cells_per_group=20, n_clusters=2, n_genes=30)
    CGMDVAE.setup_anndata(adata, layer="counts", condition_key="condition")
    model = CGMDVAE(adata, n_clusters=2)
    model.train(max_epochs=2, **FIT)
    return model


def test_every_public_method_is_tested():
    public = {
        name
        for name in dir(CGMDVAE)
        if not name.startswith("_") and callable(getattr(CGMDVAE, name))
    }
    assert public == TESTED_IN_OTHER_FILES | TESTED_HERE


@pytest.mark.parametrize("n_samples", [1, 3])
def test_posterior_predictive_sample_draws_counts_of_the_data_shape(model, n_samples):
    samples = model.posterior_predictive_sample(n_samples=n_samples).todense()
    expected = (model.adata.n_obs, model.adata.n_vars) + ((n_samples,) if n_samples > 1 else ())
    assert samples.shape == expected
    assert (samples >= 0).all() and np.array_equal(samples, np.round(samples))
    observed = np.asarray(model.adata.layers["counts"]).sum()
    assert 0.5 * observed < samples.sum() / n_samples < 2 * observed


def test_latent_library_size_is_the_observed_total(model):
    library = model.get_latent_library_size()
    totals = np.asarray(model.adata.layers["counts"]).sum(1, keepdims=True)
    np.testing.assert_allclose(library, np.maximum(totals, 1), rtol=1e-5)


def test_latent_library_size_is_refused_without_counts():
    adata = scgmdvae.data.synthetic_blobs(n_cells_per_group=10, n_clusters=2, n_genes=20)
    adata.X = np.log1p(np.asarray(adata.layers["counts"], dtype=np.float32))
    CGMDVAE.setup_anndata(adata)
    normal = CGMDVAE(adata, n_clusters=2, gene_likelihood="normal")
    normal.train(max_epochs=1, **FIT)
    with pytest.raises(ValueError, match="uses no library size"):
        normal.get_latent_library_size()
    with pytest.raises(ValueError, match="differential_expression needs a count likelihood"):
        normal.differential_expression(groupby="cluster")


def test_latent_distribution_is_returned_as_means_and_variances(model):
    means, variances = model.get_latent_representation(return_dist=True)
    np.testing.assert_allclose(means, model.get_latent_representation(), rtol=1e-5, atol=1e-6)
    assert means.shape == variances.shape == (model.adata.n_obs, model.module.n_latent)
    assert (variances > 0).all()
    dataloader = model._make_data_loader(adata=model.adata, indices=np.arange(5))
    np.testing.assert_allclose(
        model.get_latent_representation(dataloader=dataloader), means[:5], rtol=1e-5
    )


@pytest.mark.parametrize(
    "call",
    [
        lambda model: model.get_latent_representation(indices=[]),
        lambda model: model.predict_condition_response("B", indices=np.array([], dtype=int)),
    ],
)
def test_an_empty_selection_of_cells_is_refused_with_a_message(model, call):
    with pytest.raises(ValueError, match="selects no cell"):
        call(model)


def test_scvi_posterior_summaries_work(model):
    adata = model.adata.copy()
    model.differential_abundance(adata, sample_key="condition")
    assert adata.obsm["da_log_probs"].shape == (adata.n_obs, adata.obs["condition"].nunique())
    posterior = model.get_aggregated_posterior(indices=np.arange(10))
    assert posterior.log_prob(torch.zeros(model.module.n_latent)).isfinite()
    assert model.get_feature_correlation_matrix(n_samples=2).shape == (30, 30)
    parameters = model.get_likelihood_parameters()
    assert parameters["mean"].shape == (model.adata.n_obs, 30)


def test_importance_weights_and_mudata_are_refused_with_the_alternative(model):
    with pytest.raises(NotImplementedError, match="weights='uniform'"):
        model.get_importance_weights()
    with pytest.raises(NotImplementedError, match="weights='uniform'"):
        model.get_normalized_expression(weights="importance")
    with pytest.raises(NotImplementedError, match="prepare_query_anndata"):
        CGMDVAE.prepare_query_mudata(model.adata, model)


def test_differential_expression_names_missing_keys_and_empty_groups(model):
    with pytest.raises(KeyError, match=r"groupby='nope'.*available.*cluster"):
        model.differential_expression(groupby="nope")
    with pytest.raises(ValueError, match=r"No cells in group\(s\) \['B'\].*type_0"):
        model.differential_expression(groupby="cluster", group1="B")
    adata = model.adata.copy()
    adata.obs["groups"] = adata.obs["cluster"].cat.add_categories(["empty"])
    result = model.differential_expression(adata, groupby="groups", silent=True)
    assert set(result["group1"]) == {"type_0", "type_1"}


def test_scvi_registry_utilities_work(model, tmp_path):
    assert model.get_setup_arg("layer") == "counts"
    assert list(model.get_var_names()) == list(model.adata.var_names)
    assert model.get_state_registry("batch").categorical_mapping.tolist() == ["A", "B"]
    assert model.get_from_registry(model.adata, "X").shape == model.adata.shape
    assert model.data_registry("X").shape == model.adata.shape
    model.view_registry()
    model.view_setup_method_args()
    model.to_device("cpu")
    with pytest.raises(NotImplementedError, match="setup_anndata"):
        model.update_setup_method_args({"layer": None})
    path = str(tmp_path / "model")
    model.save(path)
    CGMDVAE.view_setup_args(path)
    assert CGMDVAE.load_registry(path)["setup_args"]["layer"] == "counts"
    with pytest.raises(NotImplementedError, match=r"CGMDVAE\.load"):
        CGMDVAE.convert_legacy_save(path, str(tmp_path / "converted"))
    other = model.adata.copy()
    model.transfer_fields(other)
    manager = model.get_anndata_manager(other)
    assert manager is not None
    CGMDVAE.register_manager(manager)
    model.deregister_manager(other)
    assert model.get_anndata_manager(other) is None
