import anndata as ad
import numpy as np
import pandas as pd
import scvi
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import sparse

from scgmdvae import CGMDVAE

LAYOUTS = {"dense": np.asarray, "csr": sparse.csr_matrix, "csc": sparse.csc_matrix}


@st.composite
def datasets(draw):
    """Random shapes, sparsity, matrix layouts, covariate layouts and likelihoods."""
    n_obs = draw(st.integers(8, 40))
    n_vars = draw(st.integers(2, 25))
    likelihood = draw(st.sampled_from(["nb", "zinb", "poisson", "normal", "bernoulli"]))
    zero_fraction = draw(st.floats(0.0, 0.99))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    values = rng.poisson(rng.gamma(1.0, 5.0, size=(n_obs, n_vars))).astype(np.float32)
    if likelihood == "normal":
        values = np.log1p(values)
    elif likelihood == "bernoulli":
        values = rng.random((n_obs, n_vars), dtype=np.float32)
    values[rng.random((n_obs, n_vars)) < zero_fraction] = 0
    adata = ad.AnnData(X=LAYOUTS[draw(st.sampled_from(sorted(LAYOUTS)))](values))
    covariates = draw(st.sampled_from(["none", "condition", "all"]))
    setup = {}
    if covariates != "none":
        adata.obs["condition"] = pd.Categorical(rng.choice(["a", "b", "c"], size=n_obs))
        setup["condition_key"] = "condition"
    if covariates == "all":
        adata.obs["donor"] = pd.Categorical(rng.choice(["d1", "d2"], size=n_obs))
        adata.obs["score"] = rng.normal(size=n_obs).astype(np.float32)
        setup["categorical_covariate_keys"] = ["donor"]
        setup["continuous_covariate_keys"] = ["score"]
    n_clusters = draw(st.integers(2, min(6, n_obs)))
    return adata, setup, likelihood, n_clusters


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
@given(datasets())
def test_one_epoch_gives_finite_outputs_of_the_right_shapes(dataset):
    adata, setup, likelihood, n_clusters = dataset
    scvi.settings.seed = 0
    CGMDVAE.setup_anndata(adata, **setup)
    model = CGMDVAE(adata, n_clusters=n_clusters, gene_likelihood=likelihood, n_hidden=16)
    model.train(max_epochs=1, batch_size=16, enable_progress_bar=False)
    model.write_results(adata)
    assert adata.obsm["X_cgmdvae"].shape == (adata.n_obs, 10)
    assert adata.obsm["X_cgmdvae_w"].shape == (adata.n_obs, 5)
    probs = adata.obsm["cgmdvae_cluster_probs"]
    assert probs.shape == (adata.n_obs, n_clusters)
    for key in ("X_cgmdvae", "X_cgmdvae_w", "cgmdvae_cluster_probs"):
        assert np.isfinite(adata.obsm[key]).all(), key
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert np.isfinite(model.get_elbo())
