import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scvi
import torch
from scipy import sparse

import scgmdvae
from scgmdvae import CGMDVAE


def small_blobs(**kwargs) -> ad.AnnData:
    return scgmdvae.data.synthetic_blobs(
        **{"n_cells_per_group": 15, "n_clusters": 2, "n_genes": 30, **kwargs}
    )


def assert_adata_unchanged(before: ad.AnnData, after: ad.AnnData) -> None:
    """Deep comparison of everything a failed call could have touched."""
    for name in ("X", *before.layers):
        old = before.X if name == "X" else before.layers[name]
        new = after.X if name == "X" else after.layers[name]
        old = old.toarray() if sparse.issparse(old) else np.asarray(old)
        new = new.toarray() if sparse.issparse(new) else np.asarray(new)
        np.testing.assert_array_equal(old, new)
    assert list(after.layers) == list(before.layers)
    pd.testing.assert_frame_equal(after.obs, before.obs)
    pd.testing.assert_frame_equal(after.var, before.var)
    assert list(after.obsm) == list(before.obsm)
    assert list(after.uns) == list(before.uns)


def with_nan_condition(adata):
    adata.obs["condition"] = adata.obs["condition"].astype(object)
    adata.obs.iloc[0, adata.obs.columns.get_loc("condition")] = np.nan


def with_value(value):
    def edit(adata):
        adata.layers["counts"][0, 0] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "setup_kwargs", "error", "message"),
    [
        (None, {"layer": "missing"}, KeyError, "missing"),
        (None, {"layer": "counts", "condition_key": "batch"}, KeyError, "batch"),
        (with_nan_condition, {"condition_key": "condition"}, ValueError, "missing values"),
        (with_value(np.nan), {"layer": "counts"}, ValueError, "NaN"),
        (with_value(np.inf), {"layer": "counts"}, ValueError, "Inf"),
    ],
)
def test_setup_refuses_bad_input_and_leaves_adata(edit, setup_kwargs, error, message):
    adata = small_blobs()
    if edit is not None:
        edit(adata)
    before = adata.copy()
    with pytest.raises(error, match=message):
        CGMDVAE.setup_anndata(adata, **setup_kwargs)
    assert_adata_unchanged(before, adata)


def test_setup_refuses_views_and_object_matrices():
    adata = small_blobs()
    with pytest.raises(ValueError, match="view"):
        CGMDVAE.setup_anndata(adata[:10], layer="counts")
    strings = ad.AnnData(X=np.full((5, 3), "a", dtype=object))
    with pytest.raises(ValueError, match="dtype"):
        CGMDVAE.setup_anndata(strings)


@pytest.mark.parametrize(
    ("value", "likelihood", "message"),
    [
        (-1.0, "nb", "non-negative integers"),
        (0.5, "poisson", "non-negative integers"),
        (2.0, "bernoulli", r"\[0, 1\]"),
    ],
)
def test_constructor_refuses_data_that_do_not_fit_the_likelihood(value, likelihood, message):
    adata = small_blobs()
    adata.layers["counts"] = adata.layers["counts"] / adata.layers["counts"].max()
    adata.layers["counts"][0, 0] = value
    CGMDVAE.setup_anndata(adata, layer="counts")
    with pytest.raises(ValueError, match=message):
        CGMDVAE(adata, gene_likelihood=likelihood)


def test_all_unlabelled_labels_column_is_refused():
    adata = small_blobs()
    adata.obs["cell_type"] = "Unknown"
    CGMDVAE.setup_anndata(adata, layer="counts", labels_key="cell_type")
    with pytest.raises(ValueError, match="unlabelled"):
        CGMDVAE(adata)


def assert_columns_unchanged(before: pd.DataFrame, after: pd.DataFrame) -> None:
    """Every column of ``before`` is in ``after`` with the same values and dtype."""
    pd.testing.assert_frame_equal(after[before.columns], before)


def test_setup_reads_labels_with_missing_values_without_changing_them():
    adata = small_blobs()
    labels = np.where(adata.obs["cluster"] == "type_0", "b cells", "a cells").astype(object)
    labels[:3] = np.nan
    adata.obs["cell_type"] = labels
    before = adata.obs.copy()
    CGMDVAE.setup_anndata(adata, layer="counts", labels_key="cell_type")
    assert_columns_unchanged(before, adata.obs)
    assert set(adata.obs.columns) - set(before.columns) == {
        "_scvi_batch",
        "_scvi_labels",
        "_scgmdvae_labels",
    }
    model = CGMDVAE(adata)
    assert model.label_names == ["a cells", "b cells"]
    codes = adata.obs["_scvi_labels"].to_numpy()
    assert (codes[:3] == 2).all() and (codes[3:] < 2).all()
    assert (adata.obs["_scgmdvae_labels"].iloc[:3] == "Unknown").all()
    # scvi-tools' semi-supervised data loading reads the registered labels, not the column.
    model.train(max_epochs=2, enable_progress_bar=False)
    assert_columns_unchanged(before, adata.obs)
    assert set(model.predict().categories) == {"a cells", "b cells"}


def test_prepare_query_returns_a_new_anndata_by_default(trained_small):
    model, adata = trained_small
    query = adata[:, ::-1].copy()
    query.obs["extra"] = "x"
    before = query.copy()
    prepared = CGMDVAE.prepare_query_anndata(query, model)
    assert list(prepared.var_names) == list(adata.var_names)
    assert_adata_unchanged(before, query)
    assert list(query.var_names) == list(before.var_names)


@pytest.fixture(scope="module")
def trained_small():
    scvi.settings.seed = 0
    adata = small_blobs()
    CGMDVAE.setup_anndata(adata, layer="counts", condition_key="condition")
    model = CGMDVAE(adata, n_clusters=2)
    model.train(max_epochs=2, enable_progress_bar=False)
    return model, adata


def renamed_genes(adata):
    adata.var_names = [f"other_{i}" for i in range(adata.n_vars)]


def reordered_genes(adata):
    return adata[:, adata.var_names[::-1]].copy()


def unseen_condition(adata):
    adata.obs["condition"] = adata.obs["condition"].cat.rename_categories({"A": "C"})


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (renamed_genes, "genes differ"),
        (reordered_genes, "another order"),
        (unseen_condition, "load_query_data"),
        (with_value(np.nan), "NaN"),
    ],
)
def test_methods_refuse_incompatible_adata_and_leave_it(trained_small, edit, message):
    model, reference = trained_small
    adata = reference.copy()
    adata.obs = adata.obs[["cluster", "condition"]]
    adata.uns = {}
    adata = edit(adata) or adata
    before = adata.copy()
    for method in (model.get_latent_representation, model.write_results):
        with pytest.raises(ValueError, match=message):
            method(adata)
        assert_adata_unchanged(before, adata)


def test_non_finite_loss_stops_training_and_names_the_term():
    adata = small_blobs()
    CGMDVAE.setup_anndata(adata, layer="counts")
    model = CGMDVAE(adata, n_clusters=2)
    with torch.no_grad():
        model.module.px_r.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="reconstruction_loss"):
        model.train(max_epochs=1, enable_progress_bar=False)
    assert "X_cgmdvae" not in adata.obsm


def test_epoch_metrics_are_batch_weighted_means_logged_once_per_epoch(monkeypatch):
    """Loss terms reach Lightning once per epoch, as the mean over the epoch's minibatches."""
    from lightning.pytorch import LightningModule

    from scgmdvae.model._training_plans import EpochMetricsMixin

    adata = small_blobs(n_cells_per_group=60)
    CGMDVAE.setup_anndata(adata, layer="counts", condition_key="condition")
    model = CGMDVAE(adata, n_clusters=2)
    steps, lightning_calls = [], []
    defer, lightning_log = EpochMetricsMixin.log, LightningModule.log

    def record_step(plan, name, value, *args, **kwargs):
        if name == "kl_z_train":
            steps.append((plan.trainer.current_epoch, float(value), kwargs["batch_size"]))
        defer(plan, name, value, *args, **kwargs)

    def record_lightning(plan, name, *args, **kwargs):
        lightning_calls.append(name)
        lightning_log(plan, name, *args, **kwargs)

    monkeypatch.setattr(EpochMetricsMixin, "log", record_step)
    monkeypatch.setattr(LightningModule, "log", record_lightning)
    model.train(
        max_epochs=3,
        mixture_init=None,
        batch_size=32,
        check_val_every_n_epoch=1,
        enable_progress_bar=False,
    )

    steps = np.array(steps)
    assert len(np.unique(steps[:, 2])) > 1, "the last minibatch should be smaller"
    expected = [
        np.average(steps[steps[:, 0] == epoch, 1], weights=steps[steps[:, 0] == epoch, 2])
        for epoch in range(3)
    ]
    logged = model.history["kl_z_train"]["kl_z_train"].to_numpy(dtype=float)
    np.testing.assert_allclose(logged, expected, rtol=1e-5)
    assert lightning_calls.count("kl_z_train") == 3
    assert lightning_calls.count("elbo_train") == 3
    assert {"elbo_validation", "kl_z_validation", "kl_y_train"} <= set(model.history)


def adversarial_counts(seed: int) -> ad.AnnData:
    """All-zero genes, a zero-count cell, a cell with 10⁶ counts and one-gene cells."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(3.0, size=(40, 12)).astype(np.float32)
    counts[:, :3] = 0
    counts[0] = 0
    counts[1, 5] = 1e6
    counts[2:6] = 0
    counts[2:6, 7] = rng.integers(1, 50, size=4)
    adata = ad.AnnData(X=sparse.csr_matrix(counts))
    adata.obs["condition"] = pd.Categorical(["a", "b"] * 20)
    return adata


def constant_images(seed: int) -> ad.AnnData:
    """Binary images, half of them all black and half all white."""
    pixels = np.repeat(np.array([[0.0], [1.0]], dtype=np.float32), 20, axis=0) * np.ones(16)
    adata = ad.AnnData(X=pixels[np.random.default_rng(seed).permutation(40)])
    adata.obs["condition"] = pd.Categorical(["a"] * 40)
    return adata


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    ("make_data", "likelihood"),
    [(adversarial_counts, "nb"), (adversarial_counts, "zinb"), (constant_images, "bernoulli")],
)
def test_adversarial_data_train_to_finite_values(make_data, likelihood, seed):
    scvi.settings.seed = seed
    adata = make_data(seed)
    CGMDVAE.setup_anndata(adata, condition_key="condition")
    model = CGMDVAE(adata, n_clusters=3, gene_likelihood=likelihood)
    model.train(max_epochs=5, batch_size=16, enable_progress_bar=False)
    for name, values in model.history.items():
        assert np.isfinite(values.to_numpy(dtype=float)).all(), name
    for name, parameter in model.module.named_parameters():
        assert torch.isfinite(parameter).all(), name
    model.write_results(adata)
    for key in ("X_cgmdvae", "X_cgmdvae_w", "cgmdvae_cluster_probs"):
        assert np.isfinite(adata.obsm[key]).all(), key


def test_same_seed_gives_same_clusters_and_latent():
    outputs = []
    for _ in range(2):
        scvi.settings.seed = 3
        adata = small_blobs()
        CGMDVAE.setup_anndata(adata, layer="counts", condition_key="condition")
        model = CGMDVAE(adata, n_clusters=2)
        model.train(max_epochs=3, enable_progress_bar=False)
        outputs.append((model.get_latent_representation(), model.predict_clusters()))
    np.testing.assert_array_equal(outputs[0][0], outputs[1][0])
    assert list(outputs[0][1]) == list(outputs[1][1])


def rewrite_saved_version(path, version):
    saved = torch.load(path / "model.pt", map_location="cpu", weights_only=False)
    if version is None:
        del saved["attr_dict"]["scgmdvae_version_"]
    else:
        saved["attr_dict"]["scgmdvae_version_"] = version
    saved["model_state_dict"]["px_r"] = torch.zeros(1)
    torch.save(saved, path / "model.pt")


def test_version_is_recorded_and_foreign_saves_are_refused(trained_small, tmp_path):
    model, adata = trained_small
    assert model.scgmdvae_version_ == scgmdvae.__version__
    model.save(tmp_path / "model", overwrite=True)
    assert CGMDVAE.load(tmp_path / "model", adata=adata).scgmdvae_version_ == (
        scgmdvae.__version__
    )
    rewrite_saved_version(tmp_path / "model", "0.0.1")
    with pytest.raises(ValueError, match=r"saved by scgmdvae 0\.0\.1"):
        CGMDVAE.load(tmp_path / "model", adata=adata)
    rewrite_saved_version(tmp_path / "model", None)
    with pytest.raises(ValueError, match="not hold a model saved by scgmdvae"):
        CGMDVAE.load(tmp_path / "model", adata=adata)
