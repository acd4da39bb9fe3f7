import logging

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import sparse
from scvi import REGISTRY_KEYS

import scgmdvae
from scgmdvae._constants import RESULT_KEYS
from scgmdvae.metrics import adjusted_rand_index
from scgmdvae.model._surgery import injected_linears

FIT = {"enable_progress_bar": False, "logger": False, "enable_checkpointing": False}


def _blobs(n_conditions: int = 3, n_cells_per_group: int = 100) -> ad.AnnData:
    return scgmdvae.data.synthetic_blobs(
        n_cells_per_group=n_cells_per_group, n_clusters=4, n_conditions=n_conditions
    )


def _condition_c() -> ad.AnnData:
    """Cells of a third condition drawn from the same clusters as ``trained_blobs``' A and B."""
    adata = _blobs()
    return adata[adata.obs["condition"] == "C"].copy()


def _dense(matrix) -> np.ndarray:
    return matrix.toarray() if sparse.issparse(matrix) else np.asarray(matrix)


def _mappings(model: scgmdvae.CGMDVAE) -> list[list[str]]:
    """Category names of the condition and of each categorical covariate, in injection order."""
    manager = model.adata_manager
    mappings = [manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping]
    cat_state = manager.get_state_registry(REGISTRY_KEYS.CAT_COVS_KEY)
    mappings += list(cat_state.mappings.values()) if cat_state else []
    return [list(mapping) for mapping in mappings]


def _category_columns(model: scgmdvae.CGMDVAE, n_inputs: int) -> dict[tuple[int, str], int]:
    """Column of each (covariate, category) in an injected weight with ``n_inputs`` inputs."""
    columns, start = {}, n_inputs
    for covariate, names in enumerate(_mappings(model)):
        if len(names) > 1:
            columns.update({(covariate, name): start + j for j, name in enumerate(names)})
            start += len(names)
    return columns


def _injected_weights(model: scgmdvae.CGMDVAE) -> dict[str, torch.Tensor]:
    return {
        key: linear.weight.detach().clone() for key, _, linear, _ in injected_linears(model.module)
    }


@pytest.fixture(scope="module")
def mapped_query(trained_blobs):
    """Reference (conditions A, B) and a query model of condition C, trained 60 epochs."""
    reference, reference_adata = trained_blobs
    reference_state = {k: v.clone() for k, v in reference.module.state_dict().items()}
    query = _condition_c()
    query_model = scgmdvae.CGMDVAE.load_query_data(query, reference)
    before = _injected_weights(query_model)
    query_model.train(max_epochs=60, **FIT)
    return reference, reference_adata, reference_state, query_model, query, before


def test_query_clusters_match_truth(mapped_query):
    _, _, _, query_model, query, _ = mapped_query
    ari = adjusted_rand_index(query.obs["cluster"], query_model.predict_clusters())
    assert ari >= 0.9


def test_reference_weights_unchanged_except_new_condition_columns(mapped_query):
    reference, _, reference_state, query_model, _, before = mapped_query
    query_state = query_model.module.state_dict()
    assert query_state.keys() == reference_state.keys()
    extended = []
    for key, ref_value in reference_state.items():
        if key.endswith("num_batches_tracked"):
            continue
        new_value = query_state[key]
        if new_value.shape == ref_value.shape:
            assert torch.equal(new_value, ref_value), key
            continue
        extended.append(key)
        # Layout [inputs, A, B] -> [inputs, A, B, C]: only the C column is new.
        assert new_value.shape[1] == ref_value.shape[1] + 1
        assert torch.equal(new_value[:, :-1], ref_value), key
        trained = key.startswith(("encoder.", "decoder."))
        assert torch.equal(new_value[:, -1], before[key][:, -1]) != trained, key
    assert sorted(extended) == sorted(before)
    # The reference model itself was not modified by mapping or by query training.
    for key, value in reference.module.state_dict().items():
        assert torch.equal(value, reference_state[key]), key


def test_only_new_columns_and_nothing_else_trainable(mapped_query):
    _, _, _, query_model, _, _ = mapped_query
    trainable = {name for name, p in query_model.module.named_parameters() if p.requires_grad}
    assert trainable == {
        "encoder.trunk.fc_layers.Layer 0.0.weight",
        "decoder.px_decoder.fc_layers.Layer 0.0.weight",
    }


def test_query_results_use_reference_keys(mapped_query):
    reference, reference_adata, _, query_model, query, _ = mapped_query
    written = reference_adata.copy()
    reference.write_results(written)
    query_model.write_results(query)
    for attribute in ("obs", "obsm", "uns"):
        reference_keys = {k for k in getattr(written, attribute) if "cgmdvae" in k}
        query_keys = {k for k in getattr(query, attribute) if "cgmdvae" in k}
        assert reference_keys and query_keys == reference_keys, attribute
    assert query.uns[RESULT_KEYS.UNS]["cluster_names"] == reference.cluster_names
    assert set(query.obs[RESULT_KEYS.CLUSTER].cat.categories) <= set(reference.cluster_names)
    joint = ad.concat({"reference": written, "query": query}, label="dataset", index_unique="-")
    assert joint.obsm[RESULT_KEYS.LATENT_Z].shape == (written.n_obs + query.n_obs, 10)


def test_two_covariates_keep_their_categories_columns():
    adata = _blobs(n_conditions=3, n_cells_per_group=20)
    adata.obs["site"] = np.where(np.arange(adata.n_obs) % 2 == 0, "s1", "s2")
    reference_adata = adata[adata.obs["condition"] != "C"].copy()
    query = adata[adata.obs["condition"] != "A"].copy()
    query.obs["site"] = np.where(np.arange(query.n_obs) % 3 == 0, "s3", "s1")
    scgmdvae.CGMDVAE.setup_anndata(
        reference_adata,
        layer="counts",
        condition_key="condition",
        categorical_covariate_keys=["site"],
    )
    reference = scgmdvae.CGMDVAE(reference_adata, n_clusters=4)
    reference_weights = _injected_weights(reference)
    query_model = scgmdvae.CGMDVAE.load_query_data(query, reference)
    assert _mappings(query_model) == [["A", "B", "C"], ["s1", "s2", "s3"]]
    query_model.train(max_epochs=3, **FIT)
    for key, new_weight in _injected_weights(query_model).items():
        ref_weight = reference_weights[key]
        n_inputs = ref_weight.shape[1] - 4
        ref_columns = _category_columns(reference, n_inputs)
        new_columns = _category_columns(query_model, n_inputs)
        assert torch.equal(new_weight[:, :n_inputs], ref_weight[:, :n_inputs])
        for category, ref_column in ref_columns.items():
            # B and s1 occur in the query, yet keep the reference's weights after training.
            assert torch.equal(new_weight[:, new_columns[category]], ref_weight[:, ref_column]), (
                key,
                category,
            )


def test_single_condition_reference_gets_condition_columns():
    adata = _blobs(n_conditions=2, n_cells_per_group=20)
    reference_adata = adata[adata.obs["condition"] == "A"].copy()
    scgmdvae.CGMDVAE.setup_anndata(reference_adata, layer="counts", condition_key="condition")
    reference = scgmdvae.CGMDVAE(reference_adata, n_clusters=4)
    query_model = scgmdvae.CGMDVAE.load_query_data(
        adata[adata.obs["condition"] == "B"].copy(), reference
    )
    for key, weight in _injected_weights(query_model).items():
        ref_weight = reference.module.state_dict()[key]
        assert weight.shape[1] == ref_weight.shape[1] + 2
        assert torch.equal(weight[:, :-2], ref_weight)
        # A had no column in the reference (one category): its column is zero.
        assert not weight[:, -2].any()


@pytest.mark.parametrize("use_query_labels", [False, True])
def test_query_labels_supervise_only_when_asked(use_query_labels):
    adata = _blobs(n_conditions=3, n_cells_per_group=20)
    reference_adata = adata[adata.obs["condition"] != "C"].copy()
    reference_adata.obs["cell_type"] = reference_adata.obs["cluster"].astype(str)
    scgmdvae.CGMDVAE.setup_anndata(
        reference_adata, layer="counts", condition_key="condition", labels_key="cell_type"
    )
    reference = scgmdvae.CGMDVAE(reference_adata, n_clusters=5)
    n_labels = len(reference.label_names)
    query = adata[adata.obs["condition"] == "C"].copy()
    unlabelled_query = query.copy()
    query.obs["cell_type"] = np.where(query.obs["cluster"] == "type_0", "type_0", "new type")
    query.obs.loc[query.obs_names[0], "cell_type"] = None
    for data in (query, unlabelled_query):
        obs_before = data.obs.copy()
        query_model = scgmdvae.CGMDVAE.load_query_data(
            data, reference, use_query_labels=use_query_labels
        )
        assert query_model.label_names == reference.label_names
        codes = np.asarray(query_model.adata_manager.get_from_registry(REGISTRY_KEYS.LABELS_KEY))
        labelled = codes.ravel() < n_labels
        expected = (data.obs["cluster"] == "type_0").to_numpy() & (data is query)
        expected[0] = False
        np.testing.assert_array_equal(labelled, expected & use_query_labels)
        pd.testing.assert_frame_equal(data.obs[obs_before.columns], obs_before)
        assert "cell_type" in data.obs or data is unlabelled_query


def test_prepare_query_pads_and_reorders_genes(trained_blobs):
    reference, reference_adata = trained_blobs
    query = _condition_c()
    dropped = list(query.var_names[:5])
    shuffled = query[:, np.random.default_rng(0).permutation(query.var_names.drop(dropped))].copy()
    prepared = scgmdvae.CGMDVAE.prepare_query_anndata(shuffled, reference, inplace=False)
    assert list(prepared.var_names) == list(reference_adata.var_names)
    assert not _dense(prepared[:, dropped].layers["counts"]).any()
    kept = query.var_names.drop(dropped)
    np.testing.assert_array_equal(
        _dense(prepared[:, kept].layers["counts"]), query[:, kept].layers["counts"]
    )


def test_too_many_missing_genes_are_reported(trained_blobs):
    reference, _ = trained_blobs
    query = _condition_c()
    partial = query[:, 30:].copy()
    with pytest.raises(ValueError, match=r"lacks 30 of the reference's 100 genes.*gene_0"):
        scgmdvae.CGMDVAE.prepare_query_anndata(partial, reference)
    with pytest.raises(ValueError, match="prepare_query_anndata"):
        scgmdvae.CGMDVAE.load_query_data(query[:, ::-1].copy(), reference)


def test_reference_without_covariates_cannot_be_extended():
    adata = _blobs(n_conditions=2, n_cells_per_group=20)
    scgmdvae.CGMDVAE.setup_anndata(adata, layer="counts")
    reference = scgmdvae.CGMDVAE(adata, n_clusters=4)
    with pytest.raises(ValueError, match="no covariate to extend"):
        scgmdvae.CGMDVAE.load_query_data(_blobs(n_conditions=2, n_cells_per_group=20), reference)


def test_query_with_only_reference_conditions_has_nothing_to_train(trained_blobs):
    reference, _ = trained_blobs
    query = _blobs(n_conditions=2, n_cells_per_group=20)
    with pytest.raises(ValueError, match="no parameter is left to train"):
        scgmdvae.CGMDVAE.load_query_data(query, reference)


DEFAULT_TRAINABLE = {
    "encoder.trunk.fc_layers.Layer 0.0.weight",
    "decoder.px_decoder.fc_layers.Layer 0.0.weight",
}


@pytest.mark.parametrize(
    ("flags", "added"),
    [
        ({}, set()),
        (
            {"freeze_classifier": False},
            {
                "cluster_head.trunk.fc_layers.Layer 0.0.weight",
                "dirichlet_head.trunk.fc_layers.Layer 0.0.weight",
            },
        ),
        (
            # The prior is generative: freeze_batchnorm_decoder=False opens its batch norm too.
            {"freeze_prior": False},
            {
                f"prior_network.trunk.fc_layers.Layer 0.{p}"
                for p in ("0.weight", "1.weight", "1.bias")
            },
        ),
        ({"freeze_expression": False}, {"encoder.trunk.fc_layers.Layer 0.0.bias"}),
        (
            {"freeze_batchnorm_encoder": False},
            {"encoder.trunk.fc_layers.Layer 0.1.weight", "encoder.trunk.fc_layers.Layer 0.1.bias"},
        ),
    ],
)
def test_freeze_flags_choose_trainable_parameters(flags, added):
    adata = _blobs(n_conditions=3, n_cells_per_group=20)
    reference_adata = adata[adata.obs["condition"] != "C"].copy()
    scgmdvae.CGMDVAE.setup_anndata(reference_adata, layer="counts", condition_key="condition")
    # The thesis' prior reads the condition, so that surgery gives it columns to train.
    reference = scgmdvae.CGMDVAE(reference_adata, n_clusters=4, condition_in_prior=True)
    query = adata[adata.obs["condition"] == "C"].copy()
    query_model = scgmdvae.CGMDVAE.load_query_data(query, reference, **flags)
    trainable = {name for name, p in query_model.module.named_parameters() if p.requires_grad}
    assert trainable == DEFAULT_TRAINABLE | added
    unfrozen = scgmdvae.CGMDVAE.load_query_data(query.copy(), reference, unfrozen=True)
    assert all(p.requires_grad for p in unfrozen.module.parameters())
    assert unfrozen._query_plan_kwargs() == {}
    assert query_model._query_plan_kwargs() == {"weight_decay": 0.0}


def test_unknown_query_labels_are_reported_through_scvi_logger(trained_blobs):
    _, reference_adata = trained_blobs
    labelled = reference_adata.copy()
    labelled.obs["cell_type"] = labelled.obs["cluster"].astype(str)
    scgmdvae.CGMDVAE.setup_anndata(
        labelled, layer="counts", condition_key="condition", labels_key="cell_type"
    )
    labelled_reference = scgmdvae.CGMDVAE(labelled, n_clusters=4)
    query = _condition_c()
    query.obs["cell_type"] = "B cell"
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("scvi").addHandler(handler)
    try:
        scgmdvae.CGMDVAE.load_query_data(query, labelled_reference, use_query_labels=True)
    finally:
        logging.getLogger("scvi").removeHandler(handler)
    messages = [record.getMessage() for record in records if record.levelno >= logging.WARNING]
    assert any("does not know" in m and "B cell" in m for m in messages)
    assert (query.obs["cell_type"] == "B cell").all()
