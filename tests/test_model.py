"""The CGMDVAE model: training, outputs, write-back, save/load and input checks."""

import warnings

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scvi
import torch
from scipy import sparse

import scgmdvae
from scgmdvae import CGMDVAE
from scgmdvae.metrics import adjusted_rand_index
from scgmdvae.model._training_plans import LIGHTNING_NOISE

TERMS = ("kl_z", "kl_w", "kl_y", "kl_d")


def test_recovers_blob_clusters_with_condition(trained_blobs):
    model, adata = trained_blobs
    clusters = model.predict_clusters()
    assert adjusted_rand_index(adata.obs["cluster"], clusters) >= 0.9
    for name in TERMS:
        assert f"{name}_train" in model.history
        assert np.isfinite(model.history[f"{name}_train"].to_numpy(dtype=float)).all()


def test_write_results_keys_and_scanpy_roundtrip(trained_blobs):
    model, adata = trained_blobs
    model.write_results(adata)
    n_cells = adata.n_obs
    assert adata.obsm["X_cgmdvae"].shape == (n_cells, 10)
    assert adata.obsm["X_cgmdvae_w"].shape == (n_cells, 5)
    probs = adata.obsm["cgmdvae_cluster_probs"]
    assert probs.shape == (n_cells, 4)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert adata.obs["cgmdvae_cluster"].dtype == "category"
    np.testing.assert_allclose(adata.obs["cgmdvae_cluster_confidence"], probs.max(1))
    assert adata.uns["cgmdvae"]["cluster_names"] == ["0", "1", "2", "3"]
    assert adata.uns["cgmdvae"]["settings"]["n_clusters"] == 4
    assert "cgmdvae_prediction" not in adata.obs
    sc.pp.neighbors(adata, use_rep="X_cgmdvae")
    sc.tl.umap(adata)
    assert adata.obsm["X_umap"].shape == (n_cells, 2)


def test_latent_representations_and_probabilities(trained_blobs):
    model, adata = trained_blobs
    z = model.get_latent_representation()
    w = model.get_latent_representation(representation="w")
    assert z.shape == (adata.n_obs, 10) and w.shape == (adata.n_obs, 5)
    assert not np.allclose(z[:, :5], w)
    sampled = model.get_latent_representation(give_mean=False)
    assert sampled.shape == z.shape and not np.allclose(sampled, z)
    probs = model.get_cluster_probabilities(indices=np.arange(10))
    assert list(probs.index) == list(adata.obs_names[:10])
    assert list(probs.columns) == model.cluster_names
    with pytest.raises(ValueError, match="representation"):
        model.get_latent_representation(representation="y")
    assert np.isfinite(model.get_elbo())
    assert np.isfinite(model.get_reconstruction_error()["reconstruction_loss"])


def test_save_load_gives_identical_outputs(trained_blobs, tmp_path):
    model, adata = trained_blobs
    model.save(tmp_path / "model", overwrite=True)
    loaded = CGMDVAE.load(tmp_path / "model", adata=adata)
    np.testing.assert_array_equal(
        model.get_latent_representation(), loaded.get_latent_representation()
    )
    np.testing.assert_array_equal(
        model.get_cluster_probabilities().to_numpy(),
        loaded.get_cluster_probabilities().to_numpy(),
    )


def test_view_anndata_setup_in_a_terminal(trained_blobs, capsys):
    model, _ = trained_blobs
    model.view_anndata_setup()
    assert "condition" in capsys.readouterr().out


def _iid(layout: str) -> ad.AnnData:
    adata = scvi.data.synthetic_iid(batch_size=60, n_genes=40, n_batches=2, n_labels=3)
    if layout != "dense":
        adata.X = getattr(sparse, f"{layout}_matrix")(adata.X)
    return adata


@pytest.mark.parametrize("layout", ["dense", "csr", "csc"])
@pytest.mark.parametrize("likelihood", ["nb", "zinb", "poisson", "normal", "bernoulli"])
def test_trains_on_synthetic_iid(layout, likelihood):
    adata = _iid(layout)
    if likelihood == "normal":
        adata.X = adata.X.log1p() if sparse.issparse(adata.X) else np.log1p(adata.X)
    if likelihood == "bernoulli":
        adata.X = adata.X / adata.X.max()
    CGMDVAE.setup_anndata(adata, condition_key="batch")
    model = CGMDVAE(adata, n_clusters=3, gene_likelihood=likelihood, n_hidden=32)
    model.train(max_epochs=2, enable_progress_bar=False)
    probs = model.get_cluster_probabilities()
    assert probs.shape == (adata.n_obs, 3)
    assert np.isfinite(model.get_latent_representation()).all()
    assert np.isfinite(model.history["elbo_train"].to_numpy(dtype=float)).all()


def test_observed_labels_replace_cluster_posterior():
    module = scgmdvae.CGMDVAEModule(n_input=5, n_clusters=4, n_labels=3)
    logits = torch.zeros(3, 4)
    labels = torch.tensor([[1], [3], [0]])  # code 3 == n_labels: unlabelled
    q_y, log_q_y = module.responsibilities(logits, labels)
    torch.testing.assert_close((q_y * log_q_y)[[0, 2]], torch.zeros(2, 4))
    torch.testing.assert_close(q_y[0], torch.tensor([0.0, 1.0, 0.0, 0.0]))
    torch.testing.assert_close(q_y[1], torch.full((4,), 0.25))
    torch.testing.assert_close(q_y[2], torch.tensor([1.0, 0.0, 0.0, 0.0]))


def test_missing_keys_raise_and_leave_adata_untouched():
    adata = _iid("dense")
    before = adata.copy()
    with pytest.raises(KeyError, match="Layer 'counts'"):
        CGMDVAE.setup_anndata(adata, layer="counts")
    with pytest.raises(KeyError, match="not_a_column"):
        CGMDVAE.setup_anndata(adata, condition_key="not_a_column")
    assert list(adata.obs.columns) == list(before.obs.columns)
    assert adata.uns.keys() == before.uns.keys()


def test_non_count_data_under_count_likelihood_raises():
    adata = _iid("csr")
    adata.X = adata.X.log1p()
    CGMDVAE.setup_anndata(adata)
    with pytest.raises(ValueError, match="raw counts"):
        CGMDVAE(adata, gene_likelihood="nb")


def test_invalid_number_of_clusters_raises():
    adata = _iid("dense")
    CGMDVAE.setup_anndata(adata)
    with pytest.raises(ValueError, match="n_clusters"):
        CGMDVAE(adata, n_clusters=1)


def test_mi_y_c_weight_adds_the_condition_dependence_of_the_clusters(trained_blobs):
    model, adata = trained_blobs
    assert "mi_y_c_train" in model.history
    tensors = next(iter(model._make_data_loader(adata, batch_size=256)))
    losses = {}
    try:
        for weight in (0.0, 3.0):
            model.module.mi_y_c_weight = weight
            torch.manual_seed(0)
            _, _, losses[weight] = model.module(tensors, loss_kwargs={"kl_weight": 0.5})
    finally:
        model.module.mi_y_c_weight = 0.0
    mi_y_c = losses[0.0].extra_metrics["mi_y_c"]
    assert 0.0 <= mi_y_c <= np.log(2)
    added = losses[3.0].loss - losses[0.0].loss  # a difference of losses of a few hundred
    torch.testing.assert_close(added, 0.5 * 3.0 * mi_y_c, atol=1e-4, rtol=1e-3)


def test_write_results_records_module_keyword_arguments():
    adata = _iid("dense")
    CGMDVAE.setup_anndata(adata, condition_key="batch")
    model = CGMDVAE(adata, n_clusters=3, n_hidden=16, mi_y_c_weight=2.5, kl_w_weight=20.0)
    model.train(max_epochs=1, enable_progress_bar=False)
    model.write_results(adata)
    settings = adata.uns["cgmdvae"]["settings"]
    assert settings["mi_y_c_weight"] == 2.5 and settings["kl_w_weight"] == 20.0
    assert settings["n_clusters"] == 3 and settings["gene_likelihood"] == "nb"
    assert settings["condition_in_prior"] is False  # the default without labels


@pytest.mark.parametrize("condition_in_prior", [False, True])
def test_prior_reads_the_condition_only_with_condition_in_prior(condition_in_prior):
    module = scgmdvae.module.CGMDVAEModule(
        n_input=20, n_clusters=3, n_batch=2, condition_in_prior=condition_in_prior
    ).eval()
    w = torch.randn(6, module.n_latent_w)
    first, second = (module.component_parameters(w, torch.full((6, 1), c)) for c in (0, 1))
    assert torch.equal(first[0], second[0]) is not condition_in_prior
    assert torch.equal(first[1], second[1]) is not condition_in_prior


def test_package_namespace_holds_only_its_public_names_and_submodules():
    foreign = {
        name
        for name in dir(scgmdvae)
        if not name.startswith("_")
        and name not in scgmdvae.__all__
        and not getattr(getattr(scgmdvae, name), "__name__", "").startswith("scgmdvae.")
    }
    assert not foreign


def test_validation_terms_are_logged_on_request_and_lightning_noise_is_hidden():
    adata = scgmdvae.data.synthetic_blobs(n_cells_per_group=20, n_clusters=2, n_genes=30)
    CGMDVAE.setup_anndata(adata, layer="counts")
    model = CGMDVAE(adata, n_clusters=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.train(max_epochs=2, check_val_every_n_epoch=1, enable_progress_bar=False)
    assert {"kl_z_validation", "kl_y_validation", "elbo_validation"} <= set(model.history)
    messages = [str(warning.message) for warning in caught]
    assert not [m for m in messages if any(noise in m for noise in LIGHTNING_NOISE)]
