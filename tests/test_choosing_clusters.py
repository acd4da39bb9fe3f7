"""The defaults for clustering, and the global Dirichlet that lets the model choose K."""

import math

import numpy as np
import pytest
import scanpy as sc
import scvi
import torch

import scgmdvae
from scgmdvae import CGMDVAE
from scgmdvae.metrics import adjusted_rand_index
from scgmdvae.module import CGMDVAEModule
from scgmdvae.module import _elbo_terms as terms


def _module(n_clusters: int = 5, n_cells: int = 1000) -> CGMDVAEModule:
    return CGMDVAEModule(
        n_input=20, n_clusters=n_clusters, mixture_weights="global_dirichlet", n_cells=n_cells
    )


def test_global_weights_follow_the_responsibilities_and_switch_off_empty_components():
    module = _module()
    module.train()
    used = torch.tensor([0.5, 0.3, 0.2, 0.0, 0.0])
    for _ in range(200):
        module.update_weight_proportions(used.expand(64, -1))
    torch.testing.assert_close(module.weight_proportions, used, atol=1e-3, rtol=0)
    log_weights = module.expected_log_weights(torch.ones(1, 5))[0]
    torch.testing.assert_close(log_weights[:3], used[:3].log(), atol=0.02, rtol=0)
    assert (log_weights[3:] < math.log(1 / 5) - 5).all()


def test_global_weights_kl_is_shared_among_the_cells():
    module = _module(n_cells=400)
    module.weight_proportions.copy_(torch.tensor([0.4, 0.3, 0.2, 0.1, 0.0]))
    per_cell = module.weights_kl(torch.ones(7, 5))
    gamma = module.prior_concentration + 400 * module.weight_proportions
    expected = terms.kl_d(gamma, module.prior_concentration) / 400
    assert per_cell.shape == (7,)
    torch.testing.assert_close(per_cell, expected.expand(7))
    torch.testing.assert_close(module.mixture_proportions(), gamma / gamma.sum())


def _minibatch(n_cells: int = 8) -> dict[str, torch.Tensor]:
    return {
        "X": torch.poisson(torch.full((n_cells, 20), 3.0)),
        "batch": torch.zeros(n_cells, 1),
        "labels": torch.zeros(n_cells, 1),
    }


def test_global_weights_move_in_training_steps_only():
    module = _module(n_cells=16)
    before = module.weight_proportions.clone()
    module.eval()
    module(_minibatch())
    with torch.no_grad():
        module.train()
        module(_minibatch())
    torch.testing.assert_close(module.weight_proportions, before)
    module.train()
    module(_minibatch())
    assert not torch.allclose(module.weight_proportions, before)
    torch.testing.assert_close(module.weight_proportions.sum(), torch.tensor(1.0))


def test_switched_off_components_stay_empty_and_follow_the_module_state():
    module = _module(n_clusters=5, n_cells=16)
    module.keep_components([0, 2, 3])
    module.train()
    proportions = module.weight_proportions.clone()
    inference, _, losses = module(_minibatch())
    probs = torch.softmax(inference["qy_logits"], -1)
    assert (probs[:, [1, 4]] == 0).all() and (probs[:, [0, 2, 3]] > 0).all()
    losses.loss.backward()
    assert torch.isfinite(losses.loss)
    assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)
    assert (module.weight_proportions[[1, 4]] < proportions[[1, 4]]).all()

    module.permute_components([4, 3, 2, 1, 0])
    expected = torch.tensor([False, True, True, False, True])
    torch.testing.assert_close(module.component_in_use, expected)
    reloaded = _module(n_clusters=5, n_cells=16)
    reloaded.load_state_dict(module.state_dict())
    torch.testing.assert_close(reloaded.component_in_use, expected)
    saved_before_the_mask = dict(module.state_dict())
    del saved_before_the_mask["component_in_use"]
    from_an_old_save = _module(n_clusters=5, n_cells=16)
    from_an_old_save.load_state_dict(saved_before_the_mask)
    assert from_an_old_save.component_in_use.all()
    extended, _ = _module(n_clusters=7).with_new_components(module.state_dict())
    torch.testing.assert_close(
        extended["component_in_use"], torch.cat([expected, torch.tensor([True, True])])
    )
    with pytest.raises(ValueError, match="at least one component"):
        module.keep_components([])
    with pytest.raises(ValueError, match="between 0 and 4"):
        module.keep_components([5])


def test_clustering_defaults_without_labels_and_the_elbo_with_labels():
    adata = scgmdvae.data.synthetic_blobs(n_cells_per_group=20, n_clusters=3, n_conditions=2)
    CGMDVAE.setup_anndata(adata, layer="counts", condition_key="condition")
    fixed = CGMDVAE(adata, n_clusters=3).module.settings()
    assert fixed["mixture_weights"] == "global_dirichlet"
    assert fixed["kl_w_weight"] == 20.0 and fixed["mi_y_c_weight"] == 10.0
    assert fixed["condition_in_prior"] is False
    chosen = CGMDVAE(adata)
    assert chosen.chooses_n_clusters and chosen.module.n_clusters == 30
    assert chosen.module.mixture_weights == "global_dirichlet"
    assert chosen.module.condition_in_prior is True
    overridden = CGMDVAE(adata, n_clusters=3, mixture_weights="uniform", kl_w_weight=1.0)
    assert overridden.module.settings()["kl_w_weight"] == 1.0
    assert overridden.module.mixture_weights == "uniform"

    no_condition = adata.copy()
    CGMDVAE.setup_anndata(no_condition, layer="counts")
    without = CGMDVAE(no_condition, n_clusters=3).module.settings()
    assert without["mi_y_c_weight"] == 0.0 and without["condition_in_prior"] is True

    labelled = adata.copy()
    CGMDVAE.setup_anndata(
        labelled, layer="counts", condition_key="condition", labels_key="cluster"
    )
    supervised = CGMDVAE(labelled)
    assert not supervised.chooses_n_clusters
    assert supervised.module.settings() == CGMDVAEModule(n_input=1, n_clusters=3).settings()


@pytest.mark.parametrize("n_clusters", [None, 4])
@pytest.mark.parametrize(
    "seed", [0, *(pytest.param(s, marks=pytest.mark.slow) for s in (1, 2, 3))]
)
def test_defaults_recover_blob_clusters(n_clusters, seed):
    scvi.settings.seed = seed
    adata = scgmdvae.data.synthetic_blobs(n_cells_per_group=100, n_clusters=4, n_conditions=2)
    CGMDVAE.setup_anndata(adata, layer="counts", condition_key="condition")
    model = CGMDVAE(adata, n_clusters=n_clusters)
    model.train(max_epochs=60, enable_progress_bar=False)
    model.write_results(adata)
    clusters = adata.obs["cgmdvae_cluster"]
    assert adjusted_rand_index(adata.obs["cluster"], clusters) >= 0.9
    used = adata.uns["cgmdvae"]["n_clusters_used"]
    assert used == len(clusters.cat.categories) == clusters.nunique()
    assert 4 <= used <= 5
    sizes = adata.uns["cgmdvae"]["cluster_sizes"]
    assert sizes.sum() == adata.n_obs and (sizes > 0).sum() == used
    if n_clusters is None:
        assert (adata.obsm["cgmdvae_cluster_probs"] > 0).any(0).sum() <= 6


def test_write_results_writes_only_clusters_in_use_for_scanpy(trained_blobs):
    model, adata = trained_blobs
    predicted = np.asarray(model.predict_clusters())
    subset = adata[np.isin(predicted, np.unique(predicted)[:2])].copy()
    model.write_results(subset)
    clusters = subset.obs["cgmdvae_cluster"]
    assert len(clusters.cat.categories) == clusters.nunique() == 2
    assert subset.obsm["cgmdvae_cluster_probs"].shape[1] == 4
    assert subset.uns["cgmdvae"]["cluster_names"] == model.cluster_names
    sizes = subset.uns["cgmdvae"]["cluster_sizes"]
    assert sizes.sum() == subset.n_obs and (sizes > 0).sum() == 2
    sc.pp.normalize_total(subset, target_sum=1e4)
    sc.pp.log1p(subset)
    sc.tl.rank_genes_groups(subset, "cgmdvae_cluster")
    assert len(subset.uns["rank_genes_groups"]["names"].dtype.names) == 2


def test_a_model_that_chose_k_reloads_on_few_cells_with_identical_outputs(tmp_path):
    scvi.settings.seed = 0
    adata = scgmdvae.data.synthetic_blobs(n_cells_per_group=20, n_clusters=3, n_conditions=2)
    CGMDVAE.setup_anndata(adata, layer="counts", condition_key="condition")
    model = CGMDVAE(adata)
    model.train(max_epochs=4, enable_progress_bar=False)
    model.save(tmp_path / "model")
    few = adata[:12].copy()
    reloaded = CGMDVAE.load(str(tmp_path / "model"), adata=few)
    assert reloaded.module.n_clusters == 30 and reloaded.chooses_n_clusters
    torch.testing.assert_close(reloaded.module.n_cells, model.module.n_cells)
    torch.testing.assert_close(
        reloaded.module.weight_proportions, model.module.weight_proportions.cpu()
    )
    probs = model.get_cluster_probabilities(few).to_numpy()
    np.testing.assert_allclose(
        reloaded.get_cluster_probabilities(few).to_numpy(), probs, rtol=1e-5
    )
    switched_off = (probs == 0).all(0)
    assert 0 < switched_off.sum() < 30
    labelled = CGMDVAE.from_unsupervised(model, "cluster", adata=adata.copy(), n_clusters=30)
    assert labelled.module.component_in_use.all()


def test_auto_initialisation_only_for_a_new_unsupervised_model():
    scvi.settings.seed = 0
    adata = scgmdvae.data.synthetic_blobs(n_cells_per_group=20, n_clusters=3, n_conditions=2)
    CGMDVAE.setup_anndata(adata, layer="counts", condition_key="condition")
    model = CGMDVAE(adata, n_clusters=3)
    model.train(max_epochs=2, enable_progress_bar=False)
    assert "train_classification_loss" not in model.history
    model.train(max_epochs=3, enable_progress_bar=False)
    assert "train_classification_loss" not in model.history
    query = scgmdvae.data.synthetic_blobs(
        n_cells_per_group=20, n_clusters=3, n_conditions=3, seed=1
    )
    query = query[query.obs["condition"] == "C"].copy()
    query_model = CGMDVAE.load_query_data(query, model)
    query_model.train(max_epochs=3, enable_progress_bar=False)
    assert "train_classification_loss" not in query_model.history
    with pytest.raises(ValueError, match="already trained"):
        model.train(max_epochs=3, mixture_init="leiden")


def test_combined_guide_sends_each_cell_to_its_groups_largest_component():
    adata = scgmdvae.data.synthetic_blobs(n_cells_per_group=20, n_clusters=3, n_conditions=2)
    CGMDVAE.setup_anndata(adata, layer="counts", condition_key="condition")
    model = CGMDVAE(adata)
    # Components 3 and 7 are two pieces of one cloud (7 the larger); 5 and 12 are clouds of
    # their own, far away; the other components are empty.
    rng = np.random.default_rng(0)
    cloud = rng.normal(0, 1, (90, 10))
    component = np.where(cloud[:, 0] > -0.4, 7, 3)
    latent = np.vstack([cloud, rng.normal(15, 1, (40, 10)), rng.normal(-15, 1, (40, 10))])
    component = np.concatenate([component, [5] * 40, [12] * 40])
    guide, n_observed = model._combined_guide(latent, component)
    np.testing.assert_array_equal(guide.codes, np.where(component == 3, 7, component))
    assert n_observed == model.module.n_clusters == len(guide.categories)


def test_choosing_k_checks_both_rounds_of_epochs_before_training():
    adata = scgmdvae.data.synthetic_blobs(n_cells_per_group=20, n_clusters=3, n_conditions=2)
    CGMDVAE.setup_anndata(adata, layer="counts", condition_key="condition")
    model = CGMDVAE(adata)
    with pytest.raises(ValueError, match="2 time"):
        model.train(max_epochs=10, n_epochs_pretrain=4, n_epochs_guided=4)
    assert not model.is_trained_


@pytest.mark.parametrize(
    ("n_clusters", "labels_key", "max_epochs", "schedule"),
    [
        # K given: guided, free, settling phase, a third of the 20 epochs each (rest free)
        (4, None, 30, (10, [(14, 6)], 6)),
        # K chosen: two rounds, then the settling phase, a fifth each
        (None, None, 30, (10, [(8, 4), (8, 4)], 4)),
        # labels: one round of guided and free phases, no vote
        (6, "cluster", 30, (10, [(20, 10)], 0)),
        # too few epochs for every phase: the settling phase goes first
        (4, None, 3, (1, [(2, 1)], 0)),
        (None, None, 3, (1, [(1, 1), (1, 1)], 0)),
    ],
)
def test_phases_after_pretraining_share_the_epochs(n_clusters, labels_key, max_epochs, schedule):
    adata = scgmdvae.data.synthetic_blobs(n_cells_per_group=20, n_clusters=3, n_conditions=2)
    CGMDVAE.setup_anndata(adata, layer="counts", condition_key="condition", labels_key=labels_key)
    model = CGMDVAE(adata, n_clusters=n_clusters)
    assert model._mixture_init_schedule(max_epochs, None, None, "leiden") == schedule


def test_k_chosen_from_the_inputs_stable_partition_trains_as_with_k_given():
    # Without a condition the partition is of the input's principal components, which training
    # does not change: one round, as with K given, not the over-segmentation's two.
    adata = scgmdvae.data.synthetic_blobs(n_cells_per_group=20, n_clusters=3, n_conditions=1)
    CGMDVAE.setup_anndata(adata, layer="counts")
    model = CGMDVAE(adata)
    assert model._mixture_init_schedule(30, None, None, "leiden") == (10, [(14, 6)], 6)
    assert model._mixture_init_schedule(30, None, None, "kmeans") == (10, [(8, 4), (8, 4)], 4)


@pytest.mark.parametrize("n_clusters", [None, 4])
def test_defaults_recover_blob_clusters_without_a_condition(n_clusters):
    # Nothing registered but the counts: the initial partition is of the input's principal
    # components, a copy, and the user's counts stay as they were.
    adata = scgmdvae.data.synthetic_blobs(n_cells_per_group=100, n_clusters=4, n_conditions=1)
    counts = adata.layers["counts"].copy()
    CGMDVAE.setup_anndata(adata, layer="counts")
    model = CGMDVAE(adata, n_clusters=n_clusters)
    model.train(max_epochs=60, enable_progress_bar=False)
    model.write_results(adata)
    assert adjusted_rand_index(adata.obs["cluster"], adata.obs["cgmdvae_cluster"]) >= 0.9
    assert adata.uns["cgmdvae"]["n_clusters_used"] == 4
    np.testing.assert_array_equal(adata.layers["counts"], counts)
