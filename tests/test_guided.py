"""Clustering-guided training (``train_guided``, ``train_from_kmeans``) and uniform weights."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import torch
from scipy import sparse
from scvi import REGISTRY_KEYS, settings

import scgmdvae
from scgmdvae import CGMDVAE
from scgmdvae.metrics import adjusted_rand_index
from scgmdvae.model._mixture_init import (
    condition_centred,
    free_component_guide,
    input_principal_components,
    knn_graph,
    leiden_communities,
    leiden_partition,
    novel_communities,
    unlabelled_communities,
)

N_EPOCHS, N_GUIDED = 40, 20


def _blobs_with_guide(noise: float):
    """Blobs whose ``guide`` column is the true cluster, reassigned at random for ``noise``."""
    adata = scgmdvae.data.synthetic_blobs(n_cells_per_group=100, n_clusters=4, n_conditions=2)
    rng = np.random.default_rng(1)
    guide = adata.obs["cluster"].to_numpy().astype(str)
    noisy = rng.random(adata.n_obs) < noise
    guide[noisy] = rng.choice(adata.obs["cluster"].cat.categories, noisy.sum())
    adata.obs["guide"] = pd.Categorical(guide)
    CGMDVAE.setup_anndata(adata, layer="counts", condition_key="condition")
    return adata


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_guide_clusters_become_components_and_are_refined(noise):
    adata = _blobs_with_guide(noise)
    obs_before, uns_before = adata.obs.copy(), set(adata.uns)
    model = CGMDVAE(adata, n_clusters=4)
    model.train_guided(
        "guide", max_epochs=N_EPOCHS, n_epochs_guided=N_GUIDED, enable_progress_bar=False
    )
    truth = adata.obs["cluster"]
    guide_ari = adjusted_rand_index(truth, adata.obs["guide"])
    assert guide_ari > 0.99 if noise == 0 else guide_ari < 0.7
    clusters = model.predict_clusters()
    assert adjusted_rand_index(truth, clusters) >= 0.9
    # guide cluster j is component j: the components keep the guide's order
    assert (np.asarray(clusters.codes) == truth.cat.codes.to_numpy()).mean() >= 0.9
    history = model.history
    assert len(history["train_classification_loss"]) == N_GUIDED
    assert len(history["elbo_train"]) == N_EPOCHS
    assert history["train_accuracy"].iloc[-1, 0] > 0.95 - noise
    pd.testing.assert_frame_equal(adata.obs, obs_before)
    assert set(adata.uns) == uns_before
    assert model.module.n_labels == 0


@pytest.mark.parametrize(
    ("guide_key", "n_clusters", "error", "match"),
    [
        ("no_such_column", 4, KeyError, "no_such_column"),
        ("guide", 3, ValueError, "4 clusters but the model has n_clusters=3"),
    ],
)
def test_bad_guide_raises_and_leaves_adata_untouched(guide_key, n_clusters, error, match):
    adata = _blobs_with_guide(0.0)
    obs_before, uns_before = adata.obs.copy(), set(adata.uns)
    model = CGMDVAE(adata, n_clusters=n_clusters)
    with pytest.raises(error, match=match):
        model.train_guided(guide_key, max_epochs=2, enable_progress_bar=False)
    assert not model.is_trained
    pd.testing.assert_frame_equal(adata.obs, obs_before)
    assert set(adata.uns) == uns_before


def test_guide_on_labelled_model_raises():
    adata = _blobs_with_guide(0.0)
    CGMDVAE.setup_anndata(adata, layer="counts", labels_key="cluster")
    model = CGMDVAE(adata)
    with pytest.raises(ValueError, match="without registered labels"):
        model.train_guided("guide", max_epochs=2)


def test_uniform_weights_drop_the_dirichlet():
    """``mixture_weights="uniform"``: kl_d = 0, kl_y = KL(q(y|z) ‖ Uniform), no q(d|z) gradient."""
    torch.manual_seed(0)
    n_cells, n_clusters = 6, 5
    module = scgmdvae.CGMDVAEModule(
        n_input=8, n_clusters=n_clusters, n_labels=2, mixture_weights="uniform"
    )
    tensors = {
        REGISTRY_KEYS.X_KEY: torch.poisson(torch.full((n_cells, 8), 3.0)),
        REGISTRY_KEYS.BATCH_KEY: torch.zeros(n_cells, 1, dtype=torch.long),
        REGISTRY_KEYS.LABELS_KEY: torch.tensor([[0], [1], [2], [2], [2], [2]]),
    }
    inference, generative, loss = module(tensors)
    terms = module.elbo_terms(tensors, inference, generative)
    q_y = torch.softmax(inference["qy_logits"], -1)
    expected_kl_y = (q_y * torch.log(q_y * n_clusters)).sum(-1)
    expected_kl_y[:2] = np.log(n_clusters)  # observed labels: one-hot q, KL = log K
    torch.testing.assert_close(terms["kl_y"], expected_kl_y)
    assert torch.equal(terms["kl_d"], torch.zeros(n_cells))
    loss.loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in module.dirichlet_head.parameters())
    assert module.cluster_head.readouts[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("mixture_init", ["kmeans", "leiden"])
def test_mixture_initialisation_recovers_blobs_and_leaves_adata(mixture_init):
    adata = _blobs_with_guide(0.0)
    obs_before, uns_before = adata.obs.copy(), set(adata.uns)
    model = CGMDVAE(adata, n_clusters=4)
    model.train(
        max_epochs=N_EPOCHS,
        mixture_init=mixture_init,
        n_epochs_pretrain=10,
        n_epochs_guided=10,
        enable_progress_bar=False,
    )
    assert adjusted_rand_index(adata.obs["cluster"], model.predict_clusters()) >= 0.9
    history = model.history
    assert len(history["elbo_train"]) == N_EPOCHS
    # metrics first logged in the guided phase are kept, indexed by their epochs: the guided
    # phase, then the settling phase after a free phase of at least two epochs (until the vote
    # settles), which takes the epochs the free phase leaves
    guided_epochs = list(history["train_classification_loss"].index)
    n_free = N_EPOCHS - len(guided_epochs) - 10
    assert 2 <= n_free <= 10
    assert guided_epochs == [*range(10, 20), *range(20 + n_free, N_EPOCHS)]
    # the initial clusters are learnable: q(y|z,c) reproduces them by the end of the guided phase
    assert history["train_accuracy"].iloc[-1, 0] > 0.95
    pd.testing.assert_frame_equal(adata.obs, obs_before)
    assert set(adata.uns) == uns_before
    assert model.module.n_labels == 0


@pytest.mark.parametrize("method", ["train_guided", "train_from_kmeans"])
def test_guided_training_leaves_the_setup_for_new_data(method):
    """The guide is not added to the model's setup: new AnnData without it is accepted."""
    adata = _blobs_with_guide(0.0)
    model = CGMDVAE(adata, n_clusters=4)
    guide_key = ("guide",) if method == "train_guided" else ()
    getattr(model, method)(*guide_key, max_epochs=4, n_epochs_guided=2, enable_progress_bar=False)
    new = ad.AnnData(
        adata.X.copy(),
        obs=adata.obs.drop(columns="guide"),
        var=adata.var.copy(),
        layers={"counts": adata.layers["counts"].copy()},
    )
    np.testing.assert_array_equal(
        model.get_latent_representation(new), model.get_latent_representation()
    )
    np.testing.assert_array_equal(model.predict_clusters(new), model.predict_clusters())


@pytest.mark.parametrize(
    ("epochs", "match"),
    [
        ({"max_epochs": 10, "n_epochs_pretrain": 6, "n_epochs_guided": 5}, "add up to at most"),
        ({"max_epochs": 10, "n_epochs_pretrain": 0}, "at least 1"),
    ],
)
def test_kmeans_initialisation_refuses_bad_epochs_before_training(epochs, match):
    model = CGMDVAE(_blobs_with_guide(0.0), n_clusters=4)
    with pytest.raises(ValueError, match=match):
        model.train_from_kmeans(**epochs)
    assert not model.is_trained


def test_kmeans_initialisation_on_labelled_model_raises():
    adata = _blobs_with_guide(0.0)
    CGMDVAE.setup_anndata(adata, layer="counts", labels_key="cluster")
    with pytest.raises(ValueError, match="train_from_kmeans is for models without"):
        CGMDVAE(adata).train_from_kmeans(max_epochs=2)


def test_mixture_initialisation_is_refused_where_there_is_no_new_mixture():
    model = CGMDVAE(_blobs_with_guide(0.0), n_clusters=4)
    with pytest.raises(ValueError, match="'leiden', 'kmeans' or None"):
        model.train(max_epochs=3, mixture_init="gmm")
    model.train(max_epochs=1, enable_progress_bar=False)
    with pytest.raises(ValueError, match="already trained"):
        model.train(max_epochs=3, mixture_init="leiden")


def test_mixture_initialisation_needs_free_components_with_labels():
    adata = _blobs_with_guide(0.0)
    CGMDVAE.setup_anndata(adata, layer="counts", labels_key="cluster")
    model = CGMDVAE(adata)
    with pytest.raises(ValueError, match="n_clusters equals the model's 4 labels"):
        model.train(max_epochs=3, mixture_init="leiden")
    assert not model.is_trained


def test_communities_with_too_few_labels_are_flagged():
    communities = np.repeat(np.arange(4), 100)
    labelled = np.zeros(400, dtype=bool)
    labelled[np.arange(0, 300, 10)] = True  # 10 % of the first three communities
    flagged = unlabelled_communities(communities, labelled)
    np.testing.assert_array_equal(flagged, [False, False, False, True])
    small = np.repeat(np.arange(4), [100, 100, 100, 5])
    assert not unlabelled_communities(small, labelled[:305]).any()


def test_communities_of_novel_cells_are_flagged_by_their_median_pvalue():
    communities = np.repeat(np.arange(3), 10)
    pvalues = np.concatenate(
        [np.full(10, 0.5), np.full(10, 0.01), np.r_[np.full(4, 0.01), [0.5] * 6]]
    )
    np.testing.assert_array_equal(novel_communities(communities, pvalues), [False, True, False])


def test_free_component_guide_sends_flagged_unlabelled_cells_to_free_components():
    rng = np.random.default_rng(0)
    latent = np.concatenate([rng.normal(loc, 0.1, size=(10, 2)) for loc in (0, 5, 10, 20)])
    communities = np.repeat(np.arange(4), 10)
    flagged = np.array([False, True, True, True])
    labelled = np.zeros(40, dtype=bool)
    labelled[0] = labelled[15] = True
    guide = np.where(labelled, 0, 4)
    result = free_component_guide(latent, communities, flagged, guide, labelled, 2, 4, seed=0)
    assert result[0] == 0 and result[15] == 0
    np.testing.assert_array_equal(result[1:10], 4)
    # Three flagged communities, two free components: the two nearest are merged.
    nearer, farthest = set(result[10:15]), set(result[30:40])
    assert len(nearer) == 1 and nearer == set(result[20:30])
    assert nearer | farthest == {2, 3} and nearer != farthest


def test_leiden_partition_finds_the_asked_number_of_well_separated_groups():
    rng = np.random.default_rng(0)
    centres = 10 * rng.normal(size=(5, 4))
    latent = np.concatenate([c + rng.normal(size=(60, 4)) for c in centres])
    truth = np.repeat(np.arange(5), 60)
    codes = leiden_partition(latent, 5, seed=0)
    assert adjusted_rand_index(truth, codes) == 1.0
    assert leiden_partition(latent, 3, seed=0).max() + 1 <= 3


def test_leiden_communities_are_reproducible_with_a_seed():
    rng = np.random.default_rng(1)
    latent = np.concatenate([c + rng.normal(size=(80, 3)) for c in 6 * rng.normal(size=(4, 3))])
    graph = knn_graph(latent, seed=0)
    assert graph.vcount() == 320 and not graph.is_directed()
    first, again = (leiden_communities(graph, 0.5, seed=3) for _ in range(2))
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(np.unique(first), np.arange(first.max() + 1))


def test_centring_the_conditions_lets_the_partition_span_them():
    # Three groups under two conditions, the second condition displaced by a large offset:
    # the kNN graph of the raw latent cuts along the conditions, the centred one along groups.
    rng = np.random.default_rng(0)
    centres = 5 * rng.normal(size=(3, 4))
    groups = np.tile(np.repeat(np.arange(3), 60), 2)
    conditions = np.repeat([0, 1], 180)
    latent = centres[groups] + rng.normal(size=(360, 4)) + 40.0 * conditions[:, None]
    raw = leiden_partition(latent, 3, seed=0)
    centred = leiden_partition(condition_centred(latent, conditions), 3, seed=0)
    assert adjusted_rand_index(conditions, raw) > 0.5
    assert adjusted_rand_index(groups, centred) == 1.0


@pytest.mark.parametrize("to_matrix", [np.asarray, sparse.csr_matrix])
def test_input_principal_components_follow_scanpys_recipe_on_a_copy(to_matrix):
    counts = np.random.default_rng(0).poisson(3.0, size=(120, 30)).astype(np.float32)
    matrix = to_matrix(counts)
    components = input_principal_components(matrix, log_normalise=True, seed=0)
    reference = ad.AnnData(to_matrix(counts.copy()))
    sc.pp.normalize_total(reference, target_sum=1e4)
    sc.pp.log1p(reference)
    sc.pp.pca(reference, n_comps=29, random_state=0)
    assert components.shape == (120, 29)
    np.testing.assert_allclose(components, reference.obsm["X_pca"], rtol=1e-4, atol=1e-4)
    unchanged = matrix.toarray() if sparse.issparse(matrix) else matrix
    np.testing.assert_array_equal(unchanged, np.random.default_rng(0).poisson(3.0, size=(120, 30)))
    assert input_principal_components(counts / 20, log_normalise=False, seed=0).shape == (120, 29)


def test_without_a_condition_leiden_partitions_the_input_and_with_one_the_latent_space():
    adata = scgmdvae.data.synthetic_blobs(n_cells_per_group=30, n_clusters=3, n_conditions=2)
    plain = adata.copy()
    CGMDVAE.setup_anndata(plain, layer="counts")
    model = CGMDVAE(plain, n_clusters=3)
    model.train(max_epochs=1, mixture_init=None, enable_progress_bar=False)
    assert model._partitions_input("leiden") and not model._partitions_input("kmeans")
    np.testing.assert_allclose(
        model._input_partition_space(),
        input_principal_components(plain.layers["counts"], log_normalise=True, seed=settings.seed),
    )
    np.testing.assert_allclose(
        model._latent_partition_space(), model._posterior_summaries(plain)["z"]
    )
    CGMDVAE.setup_anndata(adata, layer="counts", condition_key="condition")
    conditioned = CGMDVAE(adata, n_clusters=3)
    conditioned.train(max_epochs=1, mixture_init=None, enable_progress_bar=False)
    codes = np.asarray(
        conditioned.adata_manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)
    ).ravel()
    assert not conditioned._partitions_input("leiden")
    np.testing.assert_allclose(
        conditioned._latent_partition_space(),
        condition_centred(conditioned._posterior_summaries(adata)["z"], codes),
        rtol=1e-5,
        atol=1e-5,
    )
