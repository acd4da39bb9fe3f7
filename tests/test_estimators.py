"""The module's estimators: the z-term, the importance-sampled likelihood, numerics."""

import numpy as np
import pytest
import torch
from scvi import REGISTRY_KEYS
from torch.distributions import Categorical, Normal

import scgmdvae
from scgmdvae import CGMDVAE, CGMDVAEModule

N_SAMPLES = 20_000


def _minibatch(n_cells: int = 3, n_genes: int = 6, n_conditions: int = 2) -> dict:
    generator = torch.Generator().manual_seed(0)
    return {
        REGISTRY_KEYS.X_KEY: torch.poisson(torch.full((n_cells, n_genes), 5.0), generator),
        REGISTRY_KEYS.BATCH_KEY: torch.arange(n_cells).remainder(n_conditions).unsqueeze(-1),
        REGISTRY_KEYS.LABELS_KEY: torch.zeros(n_cells, 1),
    }


def _sharp_module() -> CGMDVAEModule:
    """A module whose cluster posterior changes fast with ``z`` and whose q(z|x) is wide."""
    torch.manual_seed(0)
    module = CGMDVAEModule(n_input=6, n_clusters=3, n_batch=2, n_latent=2, n_hidden=16)
    with torch.no_grad():
        module.cluster_head.readouts[0].weight.mul_(30.0)
        module.encoder.readouts[0].bias[2:].fill_(2.0)  # log-variances of z
    return module.eval()


def test_kl_z_estimator_matches_its_definition_with_y_drawn_at_the_same_z():
    """E[kl_z] = E_{w,z ~ q} E_{y ~ q(y|.) of the same pass}[log q(z|x) − log p(z|w,y)]."""
    module, tensors = _sharp_module(), _minibatch()
    with torch.no_grad():
        inference = module.inference(**module._get_inference_input(tensors), n_samples=N_SAMPLES)
        generative = module.generative(**module._get_generative_input(tensors, inference))
        estimator = module.elbo_terms(tensors, inference, generative)["kl_z"].mean(0)

        z, qz = inference["z"], inference["qz"]
        y = Categorical(logits=inference["qy_logits"].expand(*z.shape[:2], -1)).sample()
        index = y[..., None, None].expand(*y.shape, 1, z.shape[-1])
        mean = generative["pz_mean"].gather(-2, index).squeeze(-2)
        var = generative["pz_var"].gather(-2, index).squeeze(-2)
        log_ratio = qz.log_prob(z).sum(-1) - Normal(mean, var.sqrt()).log_prob(z).sum(-1)
    torch.testing.assert_close(estimator, log_ratio.mean(0), atol=0.1, rtol=0.02)


def test_cluster_posterior_does_not_depend_on_the_sample_of_z():
    module, tensors = _sharp_module(), _minibatch()
    with torch.no_grad():
        first = module.inference(**module._get_inference_input(tensors))
        second = module.inference(**module._get_inference_input(tensors))
    assert not torch.equal(first["z"], second["z"])
    torch.testing.assert_close(first["qy_logits"], second["qy_logits"])
    torch.testing.assert_close(first["qd_concentration"], second["qd_concentration"])


@pytest.mark.parametrize("weights", [(0.0, 0.0), (1.0, 10.0)])
def test_saturated_cluster_logits_give_finite_gradients(weights):
    """A component whose probability underflows to exactly 0 must not make gradients NaN."""
    marginal_kl_y_weight, mi_y_c_weight = weights
    torch.manual_seed(0)
    module = CGMDVAEModule(
        n_input=6,
        n_clusters=3,
        n_batch=2,
        n_labels=0,
        marginal_kl_y_weight=marginal_kl_y_weight,
        mi_y_c_weight=mi_y_c_weight,
    )
    with torch.no_grad():
        module.cluster_head.readouts[0].bias.copy_(torch.tensor([0.0, -1000.0, 1.0]))
    tensors = _minibatch(n_cells=8)
    _, _, output = module(tensors)
    assert (
        torch.softmax(module.inference(**module._get_inference_input(tensors))["qy_logits"], -1)[
            :, 1
        ]
        == 0
    ).all()
    output.loss.backward()
    for name, parameter in module.named_parameters():
        assert parameter.grad is None or torch.isfinite(parameter.grad).all(), name


def test_elbo_terms_are_float32_under_bfloat16_autocast():
    torch.manual_seed(0)
    module = CGMDVAEModule(n_input=6, n_clusters=3, n_batch=2)
    tensors = _minibatch(n_cells=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inference = module.inference(**module._get_inference_input(tensors))
        generative = module.generative(**module._get_generative_input(tensors, inference))
        assert inference["qy_logits"].dtype == torch.bfloat16
        per_cell = module.elbo_terms(tensors, inference, generative)
    assert {name: value.dtype for name, value in per_cell.items()} == dict.fromkeys(
        per_cell, torch.float32
    )


def test_a_nan_gradient_stops_training_and_names_the_network():
    adata = scgmdvae.data.synthetic_blobs(n_cells_per_group=20, n_clusters=2, n_conditions=1)
    CGMDVAE.setup_anndata(adata, layer="counts")
    model = CGMDVAE(adata, n_clusters=2, n_hidden=16)
    model.module.px_r.register_hook(lambda grad: grad * float("nan"))
    with pytest.raises(FloatingPointError, match="gradient of px_r"):
        model.train(max_epochs=1, enable_progress_bar=False)


@pytest.mark.parametrize("bad_value", [0.0, np.nan, -1.0])
def test_bad_size_factors_are_refused_before_anything_is_written(bad_value):
    adata = scgmdvae.data.synthetic_blobs(n_cells_per_group=10, n_clusters=2, n_conditions=1)
    adata.obs["size_factor"] = 1.0
    adata.obs.iloc[3, adata.obs.columns.get_loc("size_factor")] = bad_value
    before = adata.obs.copy()
    with pytest.raises(ValueError, match="finite, positive size factors; 1 cells"):
        CGMDVAE.setup_anndata(adata, layer="counts", size_factor_key="size_factor")
    assert "_scvi_uuid" not in adata.uns
    assert adata.obs.equals(before)


def test_marginal_ll_is_not_below_the_elbo_on_held_out_cells(trained_blobs):
    """New cells from the training distribution (same seed, so same means; fresh counts)."""
    model, _ = trained_blobs
    held_out = scgmdvae.data.synthetic_blobs(n_cells_per_group=30, n_clusters=4, n_conditions=2)
    elbo = np.mean([model.get_elbo(held_out, return_mean=False).numpy() for _ in range(20)], 0)
    log_lkl = model.get_marginal_ll(held_out, n_mc_samples=200, return_mean=False).numpy()
    assert np.isfinite(log_lkl).all()
    assert log_lkl.mean() > elbo.mean()
    assert (log_lkl >= elbo).mean() > 0.9


def test_permute_components_renumbers_the_same_mixture(trained_blobs):
    model, adata = trained_blobs
    before = model.get_cluster_probabilities(adata).to_numpy()
    state = {name: value.clone() for name, value in model.module.state_dict().items()}
    order = np.array([2, 0, 3, 1])
    model.module.permute_components(order)
    try:
        after = model.get_cluster_probabilities(adata).to_numpy()
        np.testing.assert_allclose(after, before[:, order], atol=1e-6)
        model.module.permute_components(np.argsort(order))
        for name, value in model.module.state_dict().items():
            torch.testing.assert_close(value, state[name])
    finally:
        model.module.load_state_dict(state)
    with pytest.raises(ValueError, match="permutation"):
        model.module.permute_components([0, 0, 1, 2])


def test_negative_loss_weights_are_refused():
    with pytest.raises(ValueError, match=r"must not be negative.*mi_y_c_weight"):
        CGMDVAEModule(n_input=6, n_clusters=3, mi_y_c_weight=-1.0)
