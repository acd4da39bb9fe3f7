"""Plotting helpers of ``scgmdvae.pl``: what they draw, how they save, and their key errors."""

import warnings

import anndata as ad
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scvi
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

import scgmdvae
from scgmdvae import CGMDVAE
from scgmdvae._constants import RESULT_KEYS

matplotlib.use("Agg")

N_LABELS = 3
N_CLUSTERS = 4
LOSS_PANELS = ["reconstruction_loss", "kl_z", "kl_w", "kl_y", "kl_d", "classification_loss"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _tiny_model(labelled: bool) -> tuple[CGMDVAE, ad.AnnData]:
    """Model trained for 3 epochs on 120 cells, with results written; one cluster is free."""
    scvi.settings.seed = 0
    adata = scgmdvae.data.synthetic_blobs(
        n_cells_per_group=20, n_clusters=N_LABELS, n_conditions=2, n_genes=64
    )
    labels_key = None
    if labelled:
        labels_key = "label"
        adata.obs["label"] = adata.obs["cluster"].astype(str)
        adata.obs.loc[adata.obs_names[::2], "label"] = "Unknown"
    CGMDVAE.setup_anndata(adata, layer="counts", condition_key="condition", labels_key=labels_key)
    model = CGMDVAE(adata, n_clusters=N_CLUSTERS)
    model.train(max_epochs=3, enable_progress_bar=False)
    model.write_results(adata)
    return model, adata


@pytest.fixture(scope="module")
def semi_supervised():
    """Half the cells labelled: training and validation curves, classification loss."""
    return _tiny_model(labelled=True)


@pytest.fixture(scope="module")
def unsupervised():
    """No labels: training curves only; the classification loss of the guided epoch."""
    return _tiny_model(labelled=False)


def _labels(ticklabels) -> list[str]:
    return [label.get_text() for label in ticklabels]


def test_cluster_probabilities_heatmap_sorts_cells_by_cluster(semi_supervised):
    model, adata = semi_supervised
    ax = scgmdvae.pl.cluster_probabilities(adata, show=False)
    values = np.asarray(ax.images[0].get_array())
    assert values.shape == (adata.n_obs, N_CLUSTERS)
    assert _labels(ax.get_xticklabels()) == model.cluster_names
    assigned = values.argmax(axis=1)
    assert np.all(np.diff(assigned) >= 0)
    order = adata.obs[RESULT_KEYS.CLUSTER].cat.codes.to_numpy()
    present = [model.cluster_names[code] for code in np.unique(order)]
    assert _labels(ax.get_yticklabels()) == present
    np.testing.assert_allclose(
        np.sort(values, axis=0), np.sort(adata.obsm[RESULT_KEYS.CLUSTER_PROBS], axis=0)
    )


def test_cluster_probabilities_groups_missing_values_last(semi_supervised):
    _, adata = semi_supervised
    adata = adata.copy()
    adata.obs["type"] = adata.obs["cluster"].astype(object)
    adata.obs.loc[adata.obs_names[:5], "type"] = np.nan
    ax = scgmdvae.pl.cluster_probabilities(adata, groupby="type", show=False)
    assert _labels(ax.get_yticklabels()) == ["type_0", "type_1", "type_2", "NA"]
    assert len(ax.lines) == N_LABELS


def test_cluster_confidence_one_violin_per_nonempty_group(semi_supervised):
    model, adata = semi_supervised
    ax = scgmdvae.pl.cluster_confidence(adata, show=False)
    clusters = adata.obs[RESULT_KEYS.CLUSTER]
    assert set(clusters.cat.categories) <= set(model.cluster_names)
    counts = clusters.value_counts().reindex(clusters.cat.categories)
    labels = _labels(ax.get_xticklabels())
    assert labels == [f"{name}\n(n={n})" for name, n in counts.items()]
    violins = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(violins) == len(counts) == (counts > 0).sum()


def test_training_curves_one_panel_per_logged_term(semi_supervised):
    model, _ = semi_supervised
    figure = scgmdvae.pl.training_curves(model, show=False)
    assert isinstance(figure, Figure)
    assert [ax.get_title() for ax in figure.axes] == LOSS_PANELS
    for ax in figure.axes:
        assert _labels(ax.get_legend().get_texts()) == ["train", "validation"]
        assert all(len(line.get_xdata()) == 3 for line in ax.lines)
    np.testing.assert_allclose(
        figure.axes[1].lines[0].get_ydata(),
        model.history["kl_z_train"].to_numpy(dtype=float).ravel(),
    )


def test_training_curves_unsupervised_and_chosen_terms(unsupervised):
    model, _ = unsupervised
    figure = scgmdvae.pl.training_curves(model, show=False)
    assert [ax.get_title() for ax in figure.axes] == LOSS_PANELS
    assert len(model.history["train_classification_loss"]) == 1
    assert len(figure.axes[0].lines) == 1
    figure = scgmdvae.pl.training_curves(model, terms=["elbo"], show=False)
    assert [ax.get_title() for ax in figure.axes] == ["elbo"]
    with pytest.raises(KeyError, match="not_a_term"):
        scgmdvae.pl.training_curves(model, terms=["kl_z", "not_a_term"], show=False)


def test_training_curves_needs_a_trained_model(semi_supervised):
    _, adata = semi_supervised
    with pytest.raises(ValueError, match="train it first"):
        scgmdvae.pl.training_curves(CGMDVAE(adata, n_clusters=N_CLUSTERS), show=False)


def _obs_adata(clusters: list[str], labels: list[str]) -> ad.AnnData:
    obs = pd.DataFrame({"cluster": clusters, "label": labels})
    obs.index = obs.index.astype(str)
    return ad.AnnData(obs=obs)


def test_confusion_matrix_puts_matched_pairs_on_the_diagonal():
    # c0 -> z (3 of 4 cells), c1 -> x (all 3), c2 -> y (2 of 2), c3 is left unmatched.
    clusters = ["c0"] * 4 + ["c1"] * 3 + ["c2"] * 2 + ["c3"]
    labels = ["z", "z", "z", "x", "x", "x", "x", "y", "y", "z"]
    adata = _obs_adata(clusters, labels)
    ax = scgmdvae.pl.confusion_matrix(
        adata, "label", cluster_key="cluster", normalize=None, show=False
    )
    assert _labels(ax.get_xticklabels()) == ["x", "y", "z"]
    assert _labels(ax.get_yticklabels()) == ["c1", "c2", "c0", "c3"]
    values = np.asarray(ax.images[0].get_array())
    np.testing.assert_array_equal(values, [[3, 0, 0], [0, 2, 0], [1, 0, 3], [0, 0, 1]])
    assert len(ax.texts) == values.size
    assert ax.get_title() == "Hungarian accuracy 0.800"


@pytest.mark.parametrize(("normalize", "axis"), [("label", 0), ("cluster", 1)])
def test_confusion_matrix_normalizes_and_drops_unlabelled(normalize, axis):
    adata = _obs_adata(["a", "a", "b", "b", "b"], ["p", "q", "q", "q", None])
    ax = scgmdvae.pl.confusion_matrix(
        adata, "label", cluster_key="cluster", normalize=normalize, annotate=False, show=False
    )
    values = np.asarray(ax.images[0].get_array())
    np.testing.assert_allclose(values.sum(axis=axis), 1.0)
    assert not ax.texts
    with pytest.raises(ValueError, match="normalize"):
        scgmdvae.pl.confusion_matrix(adata, "label", cluster_key="cluster", normalize="all")


def test_confusion_matrix_on_model_results(semi_supervised):
    _, adata = semi_supervised
    ax = scgmdvae.pl.confusion_matrix(adata, "cluster", show=False)
    n_clusters_used = adata.obs[RESULT_KEYS.CLUSTER].nunique()
    assert np.asarray(ax.images[0].get_array()).shape == (n_clusters_used, N_LABELS)


def test_image_grid_from_traversal_array(semi_supervised):
    model, _ = semi_supervised
    values = [-1.0, 0.0, 1.0]
    traversal = model.traverse_latent(values=values)
    figure = scgmdvae.pl.image_grid(
        traversal, (8, 8), row_labels=model.cluster_names, col_labels=values, show=False
    )
    axes = np.asarray(figure.axes).reshape(N_CLUSTERS, len(values))
    assert [ax.get_title() for ax in axes[0]] == ["-1.0", "0.0", "1.0"]
    assert [ax.get_ylabel() for ax in axes[:, 0]] == model.cluster_names
    image = axes[2, 1].images[0].get_array()
    np.testing.assert_allclose(image, traversal[2, 1].reshape(8, 8), rtol=1e-6)
    assert figure.axes[0].images[0].get_clim() == (traversal.min(), traversal.max())


def test_image_grid_from_samples_pads_short_rows(semi_supervised):
    model, _ = semi_supervised
    samples = model.sample(n_samples=12, give_mean=True)
    figure = scgmdvae.pl.image_grid(samples, (8, 8), show=False)
    sizes = samples.obs["cluster"].value_counts().reindex(model.cluster_names)
    sizes = sizes[sizes > 0]
    axes = np.asarray(figure.axes).reshape(len(sizes), sizes.max())
    assert [ax.get_ylabel() for ax in axes[:, 0]] == sizes.index.tolist()
    assert [sum(bool(ax.images) for ax in row) for row in axes] == sizes.tolist()
    figure = scgmdvae.pl.image_grid(samples, (8, 8), n_cols=1, show=False)
    assert len(figure.axes) == len(sizes)


def test_image_grid_rejects_bad_shapes(semi_supervised):
    model, _ = semi_supervised
    traversal = model.traverse_latent()
    with pytest.raises(ValueError, match="64"):
        scgmdvae.pl.image_grid(traversal, (7, 7), show=False)
    with pytest.raises(ValueError, match="n_rows, n_cols, n_pixels"):
        scgmdvae.pl.image_grid(traversal[0], (8, 8), show=False)
    with pytest.raises(ValueError, match="col_labels"):
        scgmdvae.pl.image_grid(traversal, (8, 8), col_labels=["a"], show=False)
    with pytest.raises(KeyError, match="'nope'"):
        scgmdvae.pl.image_grid(model.sample(4), (8, 8), groupby="nope", show=False)


def _plot_all(model, adata, **kwargs) -> dict:
    samples = np.zeros((2, 3, 4))
    return {
        "cluster_probabilities": lambda: scgmdvae.pl.cluster_probabilities(adata, **kwargs),
        "cluster_confidence": lambda: scgmdvae.pl.cluster_confidence(adata, **kwargs),
        "training_curves": lambda: scgmdvae.pl.training_curves(model, **kwargs),
        "confusion_matrix": lambda: scgmdvae.pl.confusion_matrix(adata, "cluster", **kwargs),
        "image_grid": lambda: scgmdvae.pl.image_grid(samples, (2, 2), **kwargs),
    }


def test_save_to_a_path_writes_and_closes_the_figure(semi_supervised, tmp_path):
    model, adata = semi_supervised
    for name, plot in _plot_all(model, adata, show=False, save=tmp_path / "out" / "f.png").items():
        plotted = plot()
        path = tmp_path / "out" / "f.png"
        assert path.stat().st_size > 0, name
        assert not plt.fignum_exists(plotted.figure.number), name
        path.unlink()


@pytest.fixture
def scanpy_figdir(tmp_path):
    """scanpy's figure directory set to ``tmp_path`` and its default format to pdf."""
    saved = sc.settings.figdir, sc.settings.file_format_figs
    sc.settings.figdir, sc.settings.file_format_figs = tmp_path, "pdf"
    yield tmp_path
    sc.settings.figdir, sc.settings.file_format_figs = saved


def test_save_like_scanpy_in_figdir(semi_supervised, scanpy_figdir):
    model, adata = semi_supervised
    tmp_path = scanpy_figdir
    for name, plot in _plot_all(model, adata, show=False, save="_suffix.png").items():
        plot()
        assert (tmp_path / f"{name}_suffix.png").stat().st_size > 0
    scgmdvae.pl.cluster_confidence(adata, show=False, save=True)
    assert (tmp_path / "cluster_confidence.pdf").stat().st_size > 0
    scgmdvae.pl.cluster_confidence(adata, show=False, save="_plain")
    assert (tmp_path / "cluster_confidence_plain.pdf").stat().st_size > 0


def test_shown_figures_return_nothing(semi_supervised):
    model, adata = semi_supervised
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Agg cannot show figures and says so
        for name, plot in _plot_all(model, adata, show=True).items():
            assert plot() is None, name


@pytest.mark.parametrize(
    "plot",
    [
        scgmdvae.pl.cluster_probabilities,
        scgmdvae.pl.cluster_confidence,
        scgmdvae.pl.confusion_matrix,
    ],
)
def test_one_panel_plots_document_their_output(plot):
    assert "{axes_output}" not in plot.__doc__
    assert f"starts with ``{plot.__name__}``" in plot.__doc__
    assert "\n    Returns\n    -------\n    The Axes" in plot.__doc__


def test_draws_into_a_given_axes(semi_supervised):
    _, adata = semi_supervised
    _, ax = plt.subplots()
    assert scgmdvae.pl.cluster_confidence(adata, ax=ax, show=False) is ax


def _without_results(adata: ad.AnnData) -> ad.AnnData:
    bare = adata.copy()
    for container in (bare.obs, bare.obsm, bare.uns):
        for key in set(RESULT_KEYS) & set(container.keys()):
            del container[key]
    return bare


@pytest.mark.parametrize(
    ("plot", "key"),
    [
        (lambda a: scgmdvae.pl.cluster_probabilities(a, show=False), RESULT_KEYS.CLUSTER_PROBS),
        (lambda a: scgmdvae.pl.cluster_confidence(a, show=False), RESULT_KEYS.CLUSTER_CONFIDENCE),
        (lambda a: scgmdvae.pl.confusion_matrix(a, "cluster", show=False), RESULT_KEYS.CLUSTER),
    ],
)
def test_missing_results_raise_key_error_saying_what_to_run(semi_supervised, plot, key):
    _, adata = semi_supervised
    with pytest.raises(KeyError, match=f"{key}.*write_results"):
        plot(_without_results(adata))


@pytest.mark.parametrize(
    "plot",
    [
        lambda a: scgmdvae.pl.cluster_probabilities(a, "nope", show=False),
        lambda a: scgmdvae.pl.cluster_confidence(a, "nope", show=False),
        lambda a: scgmdvae.pl.confusion_matrix(a, "nope", show=False),
        lambda a: scgmdvae.pl.confusion_matrix(a, "cluster", "nope", show=False),
    ],
)
def test_missing_obs_column_raises_key_error_listing_columns(semi_supervised, plot):
    _, adata = semi_supervised
    with pytest.raises(KeyError, match=r"'nope'.*'condition'") as error:
        plot(adata)
    assert "write_results" not in str(error.value)


def test_missing_cluster_names_raise_key_error(semi_supervised):
    _, adata = semi_supervised
    bare = adata.copy()
    del bare.uns[RESULT_KEYS.UNS]["cluster_names"]
    with pytest.raises(KeyError, match="cluster_names"):
        scgmdvae.pl.cluster_probabilities(bare, show=False)
